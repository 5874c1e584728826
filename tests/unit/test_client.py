"""kubetune.client and the cluster results source with an injected API (fault injection; the real thing is
tests/integration/test_cluster_cli.py): what is skipped, what is bounded, how failures read."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kubetune import client as kc
from kubetune.cli_cluster import _age
from kubetune.k8s.store import record_key, selector, shard_name
from kubetune.results import CLUSTER_PREFIXES, LocalDirectory, source_for
from kubetune.results.cluster import (
    Cluster,
    ClusterError,
    ClusterExperiment,
    NotFound,
    describe_error,
)
from kubetune.trials import Trial, TrialState
from kubetune.validation import InvalidExperiment, load_experiment
from tests.support.synthetic_results import make_trials, write_results_dir

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "digits-svm.yaml"
UID, OLD_UID = "uid-new", "uid-old"


def manifest(name: str = "exp") -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment",
        "metadata": {"name": name, "namespace": "ns", "uid": UID, "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "x"}]},
        "spec": {"objective": {"metric": "score", "goal": "maximize"},
                 "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1}],
                 "algorithm": {"name": "random"}, "maxTrials": 20, "parallelTrials": 2,
                 "trialTemplate": {"spec": {"template": {"spec": {"containers": [
                     {"name": "t", "image": "i", "command": ["true"]}]}}}}},
        "status": {"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "TrialsRunning"}]},
    }


def meta(name: str, owner: str | None, **kw: Any) -> k8s.V1ObjectMeta:
    owners = [k8s.V1OwnerReference(api_version="kubetune.io/v1alpha1", kind="TuningExperiment", name="exp",
                                   uid=owner)] if owner else None
    return k8s.V1ObjectMeta(name=name, owner_references=owners, **kw)


def record(n: int, x: float, state: str = "Succeeded", **kw: Any) -> str:
    return json.dumps({"number": n, "params": {"x": x}, "state": state, "metrics": {"score": -x}, **kw})


class Fake:
    """core/batch/custom with the few list/get calls the source makes, paged ``page`` objects at a time."""

    def __init__(self, obj: dict[str, Any], configmaps: list[Any], jobs: list[Any], page: int = 1,
                 pods: list[Any] | None = None) -> None:
        self.obj, self.configmaps, self.jobs, self.page, self.pods = obj, configmaps, jobs, page, pods or []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str,
                                     **kw: Any) -> dict[str, Any]:
        if name != self.obj["metadata"]["name"]:
            raise status_error(404, {"message": f'tuningexperiments.kubetune.io "{name}" not found',
                                     "details": {"name": name}})
        return self.obj

    def _paged(self, what: str, items: list[Any], kind: Any, **kw: Any) -> Any:
        self.calls.append((what, kw))
        start = int(kw.get("_continue") or 0)
        page = min(self.page, kw["limit"])
        end = start + page
        return kind(items=items[start:end], metadata=k8s.V1ListMeta(_continue=str(end) if end < len(items) else None))

    def list_namespaced_config_map(self, ns: str, **kw: Any) -> Any:
        assert kw["label_selector"] == selector("exp")
        return self._paged("configmaps", self.configmaps, k8s.V1ConfigMapList, **kw)

    def list_namespaced_job(self, ns: str, **kw: Any) -> Any:
        return self._paged("jobs", self.jobs, k8s.V1JobList, **kw)

    def list_namespaced_pod(self, ns: str, **kw: Any) -> Any:
        assert kw["label_selector"] == "app.kubernetes.io/managed-by=kubetune,kubetune.io/experiment=exp"
        return self._paged("pods", self.pods, k8s.V1PodList, **kw)


class FakeCluster(Cluster):
    def __init__(self, fake: Fake) -> None:
        super().__init__(api=None, namespace="ns")  # type: ignore[arg-type]
        self.fake = fake

    @property
    def server(self) -> str:
        return "https://fake"

    @property
    def custom(self) -> Any:
        return self.fake

    @property
    def core(self) -> Any:
        return self.fake

    @property
    def batch(self) -> Any:
        return self.fake


def job(n: int, params: Any, owner: str | None = UID, started: bool = True) -> Any:
    ann = {"kubetune.io/parameters": params if isinstance(params, str) else json.dumps(params)}
    return k8s.V1Job(
        metadata=meta(f"exp-{n:04d}", owner, labels={"kubetune.io/trial-number": str(n)}, annotations=ann,
                      uid=f"job-{n}"),
        status=k8s.V1JobStatus(start_time=datetime(2026, 1, 1, 0, 0, n, tzinfo=timezone.utc) if started else None))


def test_records_of_other_uids_and_hostile_values_are_skipped_and_running_trials_come_from_jobs() -> None:
    shard0 = k8s.V1ConfigMap(metadata=meta(shard_name("exp", 0), UID), data={
        record_key(0): record(0, 0.1),
        record_key(1): record(1, 0.2, curve=[[0, 1.0], [1, "nan"], [-1, 2.0]]),
        record_key(2): "{not json",
        record_key(3): record(3, 0.3, state="Running"),
        record_key(4): json.dumps({"number": 4, "params": {"x": 0.4, "evil": 1}, "state": "Succeeded"}),
        record_key(5): json.dumps({"number": 5, "params": {"x": "y" * 5000}, "state": "Succeeded"}),
        record_key(6): json.dumps({"number": 6, "params": {"x": 0.6}, "state": "Exploded"}),
        record_key(7): record(7, 0.7, metrics={**{f"m{i}": float(i) for i in range(500)}, "score": -0.7}),
    })
    # an earlier experiment of the same name: its records (better scores) must not show
    old = k8s.V1ConfigMap(metadata=meta(shard_name("exp", 1), OLD_UID),
                          data={record_key(50): record(50, 0.0, metrics={"score": 99.0})})
    fake = Fake(manifest(), [old, shard0], [
        job(0, {"x": 0.1}),  # finished and recorded: the record wins
        job(3, {"x": 0.3}),  # recorded Running: still running
        job(8, {"x": 0.8}),  # created, not recorded yet: shown Running from its Job
        job(9, {"x": 0.9}, owner=OLD_UID),  # another experiment's Job
        job(10, "{broken"),
        job(11, {"x": [1, 2]}),
    ], page=1)
    results = ClusterExperiment("exp", "ns", cluster=FakeCluster(fake)).load()
    by = {r.number: r for r in results.trials}
    assert sorted(by) == [0, 1, 3, 7, 8]
    assert by[0].state is TrialState.SUCCEEDED and by[0].trial.metrics == {"score": -0.1}
    assert by[1].trial.curve == [(0, 1.0)]
    assert by[3].state is TrialState.RUNNING and by[3].trial.start_time == "2026-01-01T00:00:03Z"
    assert by[8].state is TrialState.RUNNING and by[8].params == {"x": 0.8}
    assert len(by[7].trial.metrics) == 64 and "kept 64 of 501 metrics" in by[7].trial.recorded_message()
    assert by[7].trial.metrics["score"] == -0.7  # the objective is kept first
    assert results.best is not None and results.best.number == 0
    assert results.outcome is None and results.source == "ns/exp"
    assert any("earlier experiment of the same name" in n for n in results.notes)
    assert any("4 unreadable" in n for n in results.notes), results.notes
    # every page was read, a page at a time
    assert [c for c, _ in fake.calls].count("configmaps") == 2 and [c for c, _ in fake.calls].count("jobs") == 6


def pod(name: str, job_uid: str, annotation: str | None, second: int) -> Any:
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(
        name=name, annotations={"kubetune.io/metrics": annotation} if annotation is not None else None,
        creation_timestamp=datetime(2026, 1, 1, 0, 0, second, tzinfo=timezone.utc),
        owner_references=[k8s.V1OwnerReference(api_version="batch/v1", kind="Job", name="j", uid=job_uid)]))


def test_running_trials_show_their_latest_report_bounded() -> None:
    sdk = {"seq": 3, "metrics": {"score": 0.25, "loss": 1.0}, "curve": [[0, {"score": 0.5}], [1, {"score": 0.25}]]}
    fake = Fake(manifest(), [], [job(0, {"x": 0.1}), job(1, {"x": 0.2}), job(2, {"x": 0.3})], pods=[
        pod("p0-old", "job-0", json.dumps({"metrics": {"score": 9.0}}), 1),
        pod("p0", "job-0", json.dumps(sdk), 2),  # the newest pod of the Job is read
        pod("p1", "job-1", "[" * 100 + "]" * 100, 3),  # too deep: no metrics, still shown running
        pod("p2", "job-2", json.dumps({"metrics": {f"m{i}": 1.0 for i in range(300)}}), 4),
    ])
    by = {r.number: r.trial for r in ClusterExperiment("exp", "ns", cluster=FakeCluster(fake)).load().trials}
    assert by[0].state is TrialState.RUNNING and by[0].metrics == {"score": 0.25, "loss": 1.0}
    assert by[0].curve == [(0, 0.5), (1, 0.25)]
    assert by[1].state is TrialState.RUNNING and by[1].metrics == {} and by[1].params == {"x": 0.2}
    assert len(by[2].metrics) == 64


def test_outcome_and_missing_experiment() -> None:
    obj = manifest()
    obj["status"]["conditions"] = [{"type": "Succeeded", "status": "False", "reason": "TooManyFailedTrials",
                                    "message": "4 failed"}]
    results = ClusterExperiment("exp", "ns", cluster=FakeCluster(Fake(obj, [], []))).load()
    assert results.outcome == {"succeeded": False, "reason": "TooManyFailedTrials", "message": "4 failed"}
    assert results.trials == [] and results.best is None
    with pytest.raises(NotFound):
        ClusterExperiment("other", "ns", cluster=FakeCluster(Fake(obj, [], []))).load()


def status_error(code: int, body: Any) -> ApiException:
    e = ApiException(status=code, reason="x")
    e.body = body if isinstance(body, str) else json.dumps(body)
    return e


def test_errors_read_as_one_line() -> None:
    missing = status_error(404, {"kind": "Status", "message": 'tuningexperiments.kubetune.io "a" not found',
                                 "details": {"name": "a", "kind": "tuningexperiments"}})
    assert describe_error(missing) == 'tuningexperiments.kubetune.io "a" not found'
    no_crd = status_error(404, "404 page not found\n")
    assert "is the CRD installed?" in describe_error(no_crd)
    assert "is the CRD installed?" in describe_error(status_error(404, {"message": "the server could not find "
                                                                                    "the requested resource"}))
    forbidden = status_error(403, {"message": 'tuningexperiments.kubetune.io is forbidden: User "u" cannot list\n'
                                              "more"})
    assert describe_error(forbidden) == 'tuningexperiments.kubetune.io is forbidden: User "u" cannot list'
    refused = urllib3.exceptions.MaxRetryError(None, "/x", ConnectionRefusedError("[Errno 111] refused"))  # type: ignore[arg-type]
    assert describe_error(refused, "at https://h").startswith("cannot reach the cluster at https://h: ")

    class Boom(Fake):
        def get_namespaced_custom_object(self, *a: Any, **kw: Any) -> dict[str, Any]:
            raise no_crd
    with pytest.raises(ClusterError) as info:
        ClusterExperiment("exp", "ns", cluster=FakeCluster(Boom(manifest(), [], []))).load()
    assert not isinstance(info.value, NotFound) and "\n" not in str(info.value)


def test_manifest_accepts_a_path_text_dict_or_model_with_validates_messages(tmp_path: Path) -> None:
    want = load_experiment(EXAMPLE)
    text = EXAMPLE.read_text()
    for given in (EXAMPLE, str(EXAMPLE), text, yaml.safe_load(text), want):
        assert kc.manifest(given) == want  # type: ignore[arg-type]
    body = kc.body_of(want)
    assert body == yaml.safe_load(text)  # what the file says, no defaults added
    assert kc.manifest(body) == want
    bad = yaml.safe_load(text)
    bad["spec"]["parallelTrials"] = bad["spec"]["maxTrials"] + 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(InvalidExperiment) as from_dict:
        kc.manifest(bad)
    with pytest.raises(InvalidExperiment) as from_file:
        load_experiment(path)
    assert from_dict.value.problems == from_file.value.problems


def test_dataframe_of_a_local_run_matches_its_results_csv(tmp_path: Path) -> None:
    import pandas as pd  # in the test extras
    out = write_results_dir(tmp_path / "run", make_trials(40))
    df = kc.dataframe(kc.load(out))
    csv = pd.read_csv(out / "results.csv")
    assert list(df.columns) == list(csv.columns)
    assert list(df["number"]) == list(csv["number"]) == list(range(40))
    assert list(df["state"]) == list(csv["state"])
    for col in ("param_lr", "param_layers", "accuracy", "loss"):
        assert df[col].astype(float).fillna(-1).tolist() == csv[col].astype(float).fillna(-1).tolist(), col
    assert list(df["param_opt"]) == list(csv["param_opt"])


def test_dataframe_without_pandas_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = kc.load(write_results_dir(tmp_path / "run", make_trials(3), journal=False))
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'kubetune\[pandas\]'"):
        kc.dataframe(results)


def test_source_for_names_cluster_experiments_and_prefers_existing_directories(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(source_for(str(tmp_path)), LocalDirectory)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tex" / "mine").mkdir(parents=True)
    assert isinstance(source_for("tex/mine"), LocalDirectory)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nothing"))
    for prefix in CLUSTER_PREFIXES:
        with pytest.raises(ClusterError, match="no usable cluster configuration"):
            source_for(prefix + "ns/exp")


def test_record_json_round_trips_the_stored_record() -> None:
    t = Trial(4, {"x": 0.5}, TrialState.SUCCEEDED, {"score": 1.5}, [(0, 1.0)], "Completed", "",
              "2026-01-01T00:00:00Z", "2026-01-01T00:00:07Z")
    results = kc.ExperimentResults("exp", kc.manifest(manifest()).spec, [kc.TrialRecord(t, 7.0)])
    doc = kc.record_json(results, results.trials[0])
    assert doc == {"name": "exp-0004", **t.to_record(), "duration_seconds": 7.0}
    assert Trial.from_record(doc).to_record() == t.to_record()


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (119, "119s"), (125, "2m5s"), (600, "10m"),
                                               (3 * 3600 + 60, "3h1m"), (9 * 3600, "9h"), (3 * 86400, "3d"),
                                               (3 * 86400 + 7200, "3d2h"), (30 * 86400, "30d")])
def test_age_reads_like_kubectl(seconds: int, text: str) -> None:
    now = datetime(2026, 2, 1, tzinfo=timezone.utc)
    then = datetime.fromtimestamp(now.timestamp() - seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _age(then, now) == text


class Outage(Fake):
    """The experiment's reads fail with ``errors`` (one per read) before they succeed; the experiment has ended."""

    def __init__(self, obj: dict[str, Any], errors: list[BaseException]) -> None:
        super().__init__(obj, [], [])
        self.errors = errors
        self.reads = 0

    def get_namespaced_custom_object(self, *a: Any, **kw: Any) -> dict[str, Any]:
        self.reads += 1
        if self.errors:
            raise self.errors.pop(0)
        return super().get_namespaced_custom_object(*a, **kw)


def ended() -> dict[str, Any]:
    obj = manifest()
    obj["status"]["conditions"] = [{"type": "Succeeded", "status": "True", "reason": "MaxTrialsReached",
                                    "message": "ran 4"}]
    return obj


def test_wait_retries_an_unreachable_or_failing_api_server_and_raises_other_errors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(kc.time, "sleep", slept.append)
    refused = urllib3.exceptions.MaxRetryError(None, "/x", ConnectionRefusedError("refused"))  # type: ignore[arg-type]
    errors: list[BaseException] = [refused, status_error(503, {"message": "unavailable"}),
                                   status_error(429, {"message": "slow down"}), refused, refused, refused, refused]
    fake = Outage(ended(), list(errors))
    seen: list[str] = []
    obj = kc.Client(cluster=FakeCluster(fake)).wait("exp", poll=1.0, on_error=lambda e: seen.append(str(e)))
    assert obj["status"]["conditions"][0]["reason"] == "MaxTrialsReached"
    assert fake.reads == len(errors) + 1 and len(seen) == len(errors)
    assert seen[0].startswith("cannot reach the cluster") and "unavailable" in seen[1]
    assert slept == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]  # doubling, at most RETRY_MAX
    # not worth retrying: raised at once
    for error in (status_error(403, {"message": "forbidden"}),
                  status_error(404, {"message": "gone", "details": {"name": "exp"}})):
        fake = Outage(ended(), [error])
        with pytest.raises(ClusterError):
            kc.Client(cluster=FakeCluster(fake)).wait("exp", poll=1.0)
        assert fake.reads == 1


def test_wait_gives_up_at_its_timeout_while_the_api_server_is_away(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(kc.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(kc.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    refused = urllib3.exceptions.MaxRetryError(None, "/x", ConnectionRefusedError("refused"))  # type: ignore[arg-type]
    fake = Outage(ended(), [refused] * 1000)
    with pytest.raises(kc.WaitTimeout, match="last read failed: cannot reach"):
        kc.Client(cluster=FakeCluster(fake)).wait("exp", timeout=60.0, poll=1.0)
    assert 60.0 <= now[0] < 61.0 and fake.reads < 15


def test_a_cluster_source_reads_the_kubeconfig_and_context_it_is_given(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "a",
              "clusters": [{"name": c, "cluster": {"server": f"https://{c}.invalid:6443"}} for c in "ab"],
              "users": [{"name": "u", "user": {"token": "t"}}],
              "contexts": [{"name": c, "context": {"cluster": c, "user": "u", "namespace": f"ns-{c}"}} for c in "ab"]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    src = source_for("tex/exp", kubeconfig=str(path), context="b")
    assert src.cluster.server == "https://b.invalid:6443" and src.namespace == "ns-b"  # type: ignore[union-attr]
    src = source_for("tex/other/exp", kubeconfig=str(path))
    assert src.cluster.server == "https://a.invalid:6443" and src.namespace == "other"  # type: ignore[union-attr]
