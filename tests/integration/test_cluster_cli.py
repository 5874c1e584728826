"""The cluster command line (submit, get, trials, best, logs, delete) and the Python client, on the real control
plane with the operator and the node agent: what they print is checked against the records the operator wrote."""

from __future__ import annotations

import csv
import io
import json
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from operator_process import Experiments, OperatorProcess, wait_for

from kubetune.cli import main
from kubetune.client import Client, NotFound, WaitTimeout
from kubetune.results.cluster import Cluster, ClusterError

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVE = Path(__file__).resolve().parent / "trials" / "objective.py"



@pytest.fixture(scope="module")
def ex(kube_api: client.ApiClient, ns: str) -> Experiments:
    return Experiments(kube_api, ns)


@pytest.fixture(scope="module")
def kubelet_logs(node_agent: Any, kube_api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[list[str]]:
    """The kubelet's log endpoint for the test node: ``GET /containerLogs/NS/POD/CONTAINER`` (``tailLines``,
    ``limitBytes``) over HTTPS serves what the node agent's process wrote, so the API server's ``pods/log`` works.

    The Node advertises only its InternalIP (a Hostname address would be tried first and does not resolve) and this
    server's port; both are put back afterwards. The API server has no kubelet CA here, so it does not verify the
    self-signed certificate (as with any kube-apiserver started without ``--kubelet-certificate-authority``).
    Returns the list of requested paths."""
    d = tmp_path_factory.mktemp("kubelet")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=kubetune-test-node", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    requests: list[str] = []

    class Logs(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            path = node_agent.log_path(parts[1], parts[2]) if len(parts) == 4 and parts[0] == "containerLogs" \
                else None
            if path is None:
                self.send_error(404)
                return
            data = path.read_bytes()
            query = urllib.parse.parse_qs(url.query)
            if "tailLines" in query:
                data = b"".join(data.splitlines(keepends=True)[-int(query["tailLines"][0]):])
            if "limitBytes" in query:
                data = data[:int(query["limitBytes"][0])]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Logs)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(d / "cert.pem", d / "key.pem")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    core = client.CoreV1Api(kube_api)
    node = core.read_node(node_agent.node_name)
    before = [{"type": a.type, "address": a.address} for a in node.status.addresses]
    port = server.server_address[1]
    core.patch_node_status(node_agent.node_name, [
        {"op": "replace", "path": "/status/addresses", "value": [a for a in before if a["type"] == "InternalIP"]},
        {"op": "add", "path": "/status/daemonEndpoints", "value": {"kubeletEndpoint": {"Port": port}}}])
    try:
        yield requests
    finally:
        core.patch_node_status(node_agent.node_name, [
            {"op": "replace", "path": "/status/addresses", "value": before},
            {"op": "add", "path": "/status/daemonEndpoints", "value": {"kubeletEndpoint": {"Port": 0}}}])
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _exists(read: Any, *args: Any) -> bool:
    try:
        read(*args)
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


def experiment(name: str, max_trials: int, parallel: int = 2, seconds: float = 0.0) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "score", "goal": "maximize"},
            "additionalMetrics": ["x_seen"],
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0},
                           {"name": "kind", "type": "categorical", "values": ["a", "b"]}],
            "algorithm": {"name": "random", "seed": 3},
            "maxTrials": max_trials, "parallelTrials": parallel,
            "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "serviceAccountName": "kubetune-trial", "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "trial", "image": "kubetune-trial:test",
                                "command": ["python", str(OBJECTIVE), "--x", "${params.x}"],
                                "env": [{"name": "TRIAL_SECONDS", "value": str(seconds)}]}]}}}},
        },
    }


def kubetune(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``kubetune ARGS`` in this process; returns the exit code, stdout and stderr."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def submitted(op: OperatorProcess, ns: str, control_plane: Any, tmp_path_factory: pytest.TempPathFactory
              ) -> subprocess.CompletedProcess[str]:
    """`kubetune submit FILE --wait` as its own process: 5 trials, 2 at a time."""
    path = tmp_path_factory.mktemp("files") / "quad.yaml"
    path.write_text(yaml.safe_dump(experiment("quad", 5)))
    return subprocess.run(
        [sys.executable, "-m", "kubetune", "submit", str(path), "--wait", "--timeout", "150", "-n", ns,
         "--kubeconfig", str(control_plane.kubeconfig)],
        check=False, capture_output=True, text=True, timeout=200)


def test_submit_wait_prints_each_trial_and_exits_0(submitted: subprocess.CompletedProcess[str],
                                                     ex: Experiments) -> None:
    assert submitted.returncode == 0, submitted.stderr
    assert "Traceback" not in submitted.stderr
    out = submitted.stdout.splitlines()
    assert out[0] == "tuningexperiment.kubetune.io/quad created"
    records = ex.records("quad")
    assert sorted(records) == [0, 1, 2, 3, 4]
    lines = [line for line in submitted.stderr.splitlines() if line.startswith("#")]
    assert sorted(int(line[1:].split()[0]) for line in lines) == [0, 1, 2, 3, 4], submitted.stderr
    for line in lines:
        n = int(line[1:].split()[0])
        assert line.split()[1] == "Succeeded"
        assert f"score={records[n]['metrics']['score']:.6g}" in line
        assert f"x={records[n]['params']['x']!r}" in line
    assert "experiment succeeded: MaxTrialsReached" in submitted.stderr
    best = max(records, key=lambda n: records[n]["metrics"]["score"])
    assert out[-1].startswith(f"best: #{best} "), out


def test_get_lists_the_experiment_like_kubectl(submitted: Any, ns: str, control_plane: Any,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    kc = ["--kubeconfig", str(control_plane.kubeconfig)]
    code, out, _ = kubetune(capsys, "get", "-n", ns, *kc)
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "BEST", "SUCCEEDED-TRIALS", "TRIALS", "MAX", "SUCCEEDED", "REASON", "AGE"]
    assert row.split()[0] == "quad" and row.split()[2:7] == ["5", "5", "5", "True", "MaxTrialsReached"]
    # the same numbers as kubectl's printer columns
    kubectl = control_plane.kubectl("get", "tex", "quad", "-n", ns).stdout.splitlines()[1].split()
    assert row.split()[:7] == kubectl[:7]

    code, out, _ = kubetune(capsys, "get", "-A", "-o", "wide", *kc)
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["NAMESPACE", "NAME", "METRIC"]
    assert [ns, "quad", "score"] in [r.split()[:3] for r in rows]

    code, out, _ = kubetune(capsys, "get", "quad", "-n", ns, "-o", "json", *kc)
    obj = json.loads(out)
    assert obj["metadata"]["name"] == "quad" and obj["status"]["trials"]["succeeded"] == 5
    code, out, _ = kubetune(capsys, "get", "quad", "-n", ns, "-o", "yaml", *kc)
    assert yaml.safe_load(out)["metadata"]["uid"] == obj["metadata"]["uid"]


def test_trials_and_best_match_the_operators_records(submitted: Any, ns: str, control_plane: Any, ex: Experiments,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    kc = ["-n", ns, "--kubeconfig", str(control_plane.kubeconfig)]
    records = ex.records("quad")
    code, out, _ = kubetune(capsys, "trials", "quad", "-o", "json", *kc)
    assert code == 0
    trials = json.loads(out)
    assert [t["number"] for t in trials] == sorted(records)
    for t in trials:
        rec = records[t["number"]]
        assert t["name"] == f"quad-{t['number']:04d}"
        assert (t["state"], t["params"], t["metrics"], t["curve"]) == (
            rec["state"], rec["params"], rec["metrics"], rec["curve"])
        assert t["duration_seconds"] >= 0

    code, out, _ = kubetune(capsys, "trials", "quad", "-o", "csv", *kc)
    table = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["number"]) for r in table] == sorted(records)
    for r in table:
        assert float(r["score"]) == records[int(r["number"])]["metrics"]["score"]
        assert r["param_kind"] == records[int(r["number"])]["params"]["kind"]

    code, out, _ = kubetune(capsys, "trials", "quad", "-o", "wide", *kc)
    header, *body = out.splitlines()
    assert header.split()[:5] == ["NAME", "STATE", "REASON", "SCORE", "X_SEEN"]
    assert len(body) == 5

    best = max(records.values(), key=lambda r: r["metrics"]["score"])
    code, out, _ = kubetune(capsys, "best", "quad", *kc)
    assert code == 0
    assert out.splitlines()[0].startswith(f"best trial: quad-{best['number']:04d} (#{best['number']}) score=")
    assert f"  x: {best['params']['x']!r}" in out and f"  kind: {best['params']['kind']}" in out
    code, out, _ = kubetune(capsys, "best", "quad", "-o", "json", *kc)
    doc = json.loads(out)
    assert (doc["number"], doc["params"], doc["metrics"]) == (best["number"], best["params"], best["metrics"])


def test_report_reads_the_cluster_experiment_through_the_results_api(
        submitted: Any, ns: str, control_plane: Any, ex: Experiments, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    out = tmp_path / "quad.html"
    code, _, err = kubetune(capsys, "report", f"tex/{ns}/quad", "-o", str(out))
    assert code == 0, err
    assert "(5 trials," in err
    assert out.stat().st_size > 0 and len(ex.records("quad")) == 5
    code, _, err = kubetune(capsys, "report", f"tex/{ns}/nothere", "-o", str(out))
    assert code == 2 and 'cannot report: tuningexperiments.kubetune.io "nothere" not found' in err


def test_logs_of_a_trial_or_what_its_record_says_once_the_job_is_gone(
        submitted: Any, ns: str, control_plane: Any, ex: Experiments, kube_api: client.ApiClient,
        kubelet_logs: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    kc = ["-n", ns, "--kubeconfig", str(control_plane.kubeconfig)]
    records = ex.records("quad")
    client.BatchV1Api(kube_api).delete_namespaced_job("quad-0000", ns, propagation_policy="Background")
    wait_for("the Job to go", lambda: not _exists(client.BatchV1Api(kube_api).read_namespaced_job, "quad-0000", ns))
    code, _, err = kubetune(capsys, "logs", "quad", "0", *kc)
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "the Job quad-0000 was cleaned up" in err
    assert f"its record: #0    Succeeded score={records[0]['metrics']['score']:.6g}" in err
    # a Job that still exists: its pod's log through the API server (pods/log, proxied to the node's log endpoint)
    code, out, err = kubetune(capsys, "logs", "quad", "quad-0001", *kc)
    pod = [p.metadata.name for p in ex.pods("quad") if p.metadata.labels.get("job-name") == "quad-0001"]
    assert len(pod) == 1
    assert code == 0, err
    assert out.startswith("--- ") and f"--x {records[1]['params']['x']!r}" in out.splitlines()[0], out
    assert kubelet_logs[-1].startswith(f"/containerLogs/{ns}/{pod[0]}/trial?")
    code, out, _ = kubetune(capsys, "logs", "quad", "2", "--tail", "1", *kc)
    assert code == 0 and len(out.splitlines()) == 1 and "tailLines=1" in kubelet_logs[-1]
    code, _, err = kubetune(capsys, "logs", "quad", "77", *kc)
    assert code == 1 and "trial quad-0077 not found" in err


def test_wait_timeout_exits_124_and_running_trials_show_from_their_jobs(
        op: OperatorProcess, ns: str, control_plane: Any, ex: Experiments, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    kc = ["-n", ns, "--kubeconfig", str(control_plane.kubeconfig)]
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(experiment("slow", 4, parallel=2, seconds=30)))
    started = time.monotonic()
    code, out, err = kubetune(capsys, "submit", str(path), "--wait", "--timeout", "4", *kc)
    assert code == 124, err
    assert time.monotonic() - started < 60
    assert "timed out after 4s waiting for" in err
    wait_for("two running trials", lambda: len(ex.pods("slow")) == 2, timeout=60)
    code, out, _ = kubetune(capsys, "trials", "slow", "-o", "json", *kc)
    running = [t for t in json.loads(out) if t["state"] == "Running"]
    jobs = {int(j.metadata.labels["kubetune.io/trial-number"]): json.loads(
        j.metadata.annotations["kubetune.io/parameters"]) for j in ex.jobs("slow")}
    assert len(running) == 2
    assert {t["number"]: t["params"] for t in running} == {n: jobs[n] for n in (t["number"] for t in running)}
    # a running trial's latest report, from its pod's annotation: objective.py reports score * (steps - step) at
    # each step, score = -(x - 0.3)^2, 3 steps over 30 s

    def reported() -> list[dict[str, Any]]:
        out = kubetune(capsys, "trials", "slow", "-o", "json", *kc)[1]
        return [t for t in json.loads(out) if t["state"] == "Running" and t.get("curve")]

    live = wait_for("a running trial's first report", reported, timeout=60, interval=1)[0]
    assert live["curve"][0][0] == 0
    assert live["curve"][0][1] == pytest.approx(-3 * (live["params"]["x"] - 0.3) ** 2)
    code, out, _ = kubetune(capsys, "delete", "slow", *kc)
    assert (code, out) == (0, 'tuningexperiment.kubetune.io "slow" deleted\n')
    wait_for("the experiment's Jobs to go", lambda: not ex.jobs("slow"), timeout=60)


def test_python_client_creates_waits_and_reads(op: OperatorProcess, ns: str, control_plane: Any,
                                               ex: Experiments) -> None:
    kt = Client(kubeconfig=control_plane.kubeconfig, namespace=ns)
    created = kt.create(experiment("nb", 4))
    assert created["metadata"]["namespace"] == ns
    with pytest.raises(WaitTimeout):
        kt.wait("nb", timeout=0)
    done = kt.wait("nb", timeout=150)
    assert next(c for c in done["status"]["conditions"] if c["type"] == "Succeeded")["status"] == "True"
    records = ex.records("nb")
    trials = kt.trials("nb")
    assert [t.number for t in trials] == sorted(records) == [0, 1, 2, 3]
    for t in trials:
        assert t.trial.to_record() == records[t.number]
    df = kt.dataframe("nb")
    assert list(df["number"]) == [0, 1, 2, 3]
    assert list(df["score"]) == [records[n]["metrics"]["score"] for n in range(4)]
    assert list(df["param_x"]) == [records[n]["params"]["x"] for n in range(4)]
    best = kt.best("nb")
    assert best is not None
    assert best.number == max(records, key=lambda n: records[n]["metrics"]["score"])
    assert best.number == done["status"]["bestTrial"]["number"]
    kt.delete("nb")
    wait_for("the experiment to go", lambda: not _exists(ex.get, "nb"), timeout=60)
    with pytest.raises(NotFound):
        kt.get("nb")


def test_errors_are_one_line_and_a_nonzero_exit(ns: str, crd: None, control_plane: Any, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    kc = ["--kubeconfig", str(control_plane.kubeconfig)]
    code, _, err = kubetune(capsys, "get", "nothere", "-n", ns, *kc)
    assert code == 1 and err == 'error: tuningexperiments.kubetune.io "nothere" not found\n'
    for cmd in (["trials", "nothere"], ["best", "nothere"], ["delete", "nothere"], ["logs", "nothere", "1"]):
        code, _, err = kubetune(capsys, *cmd, "-n", ns, *kc)
        assert code == 1 and err == 'error: tuningexperiments.kubetune.io "nothere" not found\n', (cmd, err)

    bad = tmp_path / "bad.yaml"
    doc = experiment("bad", 2)
    doc["spec"]["parameters"][0]["min"] = 2.0  # min > max
    doc["spec"]["parallelTrials"] = 5  # > maxTrials
    bad.write_text(yaml.safe_dump(doc))
    code, out, err = kubetune(capsys, "submit", str(bad), "-n", ns, *kc)
    _, _, validate_err = kubetune(capsys, "validate", str(bad))
    assert code == 2 and out == "" and err == validate_err and "invalid TuningExperiment" in err

    nobody = control_plane.make_kubeconfig("nobody")
    code, _, err = kubetune(capsys, "get", "-n", ns, "--kubeconfig", str(nobody))
    assert code == 1 and len(err.splitlines()) == 1
    assert 'error: tuningexperiments.kubetune.io is forbidden: User "nobody" cannot list' in err

    dead = tmp_path / "dead.kubeconfig"
    cfg = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    cfg["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
    dead.write_text(yaml.safe_dump(cfg))
    code, _, err = kubetune(capsys, "get", "-n", ns, "--kubeconfig", str(dead))
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: cannot reach the cluster"), err

    # a resource the API server does not serve (as TuningExperiments without the CRD): a 404 naming no object
    cluster = Cluster.connect(control_plane.kubeconfig, namespace=ns)
    for call in (lambda: cluster.call(cluster.custom.get_namespaced_custom_object, "absent.kubetune.io", "v1", ns,
                                      "things", "x"),
                 lambda: cluster.call(cluster.custom.list_namespaced_custom_object, "absent.kubetune.io", "v1", ns,
                                      "things")):
        with pytest.raises(ClusterError) as info:
            call()
        assert "is the CRD installed?" in str(info.value) and not isinstance(info.value, NotFound)

    code, _, err = kubetune(capsys, "get", "--kubeconfig", str(tmp_path / "missing"))
    assert code == 1 and err.startswith("error: no usable cluster configuration in "), err


def test_context_picks_the_cluster_and_the_default_namespace(submitted: Any, ns: str, control_plane: Any,
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A kubeconfig whose current context points at nothing, and a context `work` for the cluster with namespace
    `ns`: --context work reaches the cluster and lists that namespace without -n."""
    cfg = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    real = cfg["contexts"][0]["context"]
    cfg["clusters"].append({"name": "dead", "cluster": {"server": "https://127.0.0.1:9"}})
    cfg["contexts"] = [{"name": "dead", "context": {"cluster": "dead", "user": real["user"]}},
                       {"name": "work", "context": {**real, "namespace": ns}}]
    cfg["current-context"] = "dead"
    path = tmp_path / "two.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    code, out, err = kubetune(capsys, "get", "--kubeconfig", str(path), "--context", "work")
    assert code == 0, err
    assert [r.split()[0] for r in out.splitlines()[1:]] == ["quad"]
    assert Client(kubeconfig=path, context="work").namespace == ns
    code, _, err = kubetune(capsys, "get", "--kubeconfig", str(path))
    assert code == 1 and err.startswith("error: cannot reach the cluster")
    code, _, err = kubetune(capsys, "get", "--kubeconfig", str(path), "--context", "nosuch")
    assert code == 1 and err.startswith("error: no usable cluster configuration in ") and len(err.splitlines()) == 1


def test_wait_on_a_stalled_experiment_exits_1_with_the_servers_message(
        op: OperatorProcess, ns: str, control_plane: Any, ex: Experiments, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A trial template the API server rejects (a container name that is no DNS label) passes the offline checks;
    the operator reports Stalled/InvalidTrialTemplate and `submit --wait` ends with it instead of waiting on."""
    doc = experiment("stuck", 2)
    doc["spec"]["trialTemplate"]["spec"]["template"]["spec"]["containers"][0]["name"] = "Bad_Name"
    path = tmp_path / "stuck.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, out, err = kubetune(capsys, "submit", str(path), "--wait", "--timeout", "60",
                              "-n", ns, "--kubeconfig", str(control_plane.kubeconfig))
    assert code == 1, err
    assert out == "tuningexperiment.kubetune.io/stuck created\n"
    last = err.splitlines()[-1]
    assert last.startswith("error: stuck is stalled: InvalidTrialTemplate: ") and "Bad_Name" in last, err
    assert ex.jobs("stuck") == []
    ex.delete("stuck")
