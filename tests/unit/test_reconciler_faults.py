"""Faults at the API seam: the operator's retries, idempotent writes, and whole experiments under injected faults.

The API server here is an in-memory fake (``tests/support/fake_api.py``) under the operator's real ``Api`` class,
so retries, timeouts and the 409/404 rules are the production code. It counts what it really applied: Jobs
created per name (including creates whose response was lost), every record version, events. The real control
plane tests (``tests/integration``) remain the proof that the operator works on Kubernetes.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections import Counter
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from kubetune.k8s import events
from kubetune.k8s.api import Api, ForeignObject, RetryPolicy
from kubetune.k8s.reconciler import ExperimentWorker, Reconciler, Timing, after_creating, parse_spec
from kubetune.plan import make_plan
from kubetune.template import trial_name
from kubetune.trials import Trial, TrialState
from tests.support.fake_api import OPS, FakeCluster, Fault, Faults

API_FAILURES = (ApiException, ForeignObject, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)
"""What a reconcile may raise when the API keeps failing (anything else is a bug)."""

# -- the retry policy -----------------------------------------------------------------------------------------------


class Clock:
    """A fake clock whose sleeps advance it, recording every wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def policy(clock: Clock, **kw: Any) -> RetryPolicy:
    return RetryPolicy(sleep=clock.sleep, clock=clock, **kw)


class Script:
    """A request that fails with the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.timeouts: list[Any] = []

    def __call__(self, *args: Any, _request_timeout: Any = None, **kw: Any) -> str:
        self.calls += 1
        self.timeouts.append(_request_timeout)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def status(code: int, retry_after: str | None = None) -> ApiException:
    return Fault(str(code), retry_after=float(retry_after) if retry_after else None).error("test")


def api_with(clock: Clock, **kw: Any) -> Api:
    return Api(core=object(), batch=object(), custom=object(), policy=policy(clock, **kw))


@pytest.mark.parametrize("error", [
    status(500), status(502), status(503), status(504), status(429),
    Fault("reset").error("x"), Fault("timeout").error("x"), ConnectionRefusedError(111, "refused"),
    urllib3.exceptions.MaxRetryError(None, "/x", urllib3.exceptions.NewConnectionError(None, "refused")),
])
def test_server_errors_throttling_and_transport_failures_are_retried(error: Exception) -> None:
    clock = Clock()
    fn = Script(error, copy.copy(error))
    assert api_with(clock).call("get_job", fn) == "ok"
    assert fn.calls == 3 and len(clock.sleeps) == 2
    assert all(t == (10.0, 60.0) for t in fn.timeouts)  # a timeout on every attempt


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 410, 422])
def test_other_client_errors_are_not_retried(code: int) -> None:
    clock = Clock()
    fn = Script(status(code))
    with pytest.raises(ApiException) as e:
        api_with(clock).call("create_job", fn)
    assert e.value.status == code and fn.calls == 1 and clock.sleeps == []


def test_retry_after_is_honoured_and_capped() -> None:
    clock = Clock()
    fn = Script(status(429, "7"), status(429, "3600"), status(429))
    assert api_with(clock, retry_after_max=30.0, backoff=0.5, attempts=6).call("list_configmaps", fn) == "ok"
    assert clock.sleeps[0] == 7.0  # the server's wait, longer than the backoff
    assert clock.sleeps[1] == 30.0  # capped
    assert 0.5 <= clock.sleeps[2] <= 2.0  # no Retry-After: the backoff (third attempt: 2s, jittered down)


def test_backoff_is_exponential_jittered_and_bounded_by_attempts() -> None:
    clock = Clock()
    fn = Script(*[status(503) for _ in range(10)])
    with pytest.raises(ApiException):
        api_with(clock, attempts=5, backoff=1.0, backoff_max=4.0, jitter=0.5, deadline=1e9).call("x", fn)
    assert fn.calls == 5 and len(clock.sleeps) == 4
    for wait, full in zip(clock.sleeps, [1.0, 2.0, 4.0, 4.0]):
        assert full * 0.5 <= wait <= full


def test_total_time_is_bounded_by_the_deadline() -> None:
    clock = Clock()
    fn = Script(*[status(429, "20") for _ in range(10)])
    with pytest.raises(ApiException):
        api_with(clock, attempts=100, deadline=45.0).call("x", fn)
    assert sum(clock.sleeps) <= 45.0 and fn.calls == 3  # waits 20 + 20; a third wait would end past 45 s


def test_errors_are_counted_by_verb_and_code() -> None:
    from kubetune.k8s import prometheus

    def value(verb: str, code: str) -> float:
        return prometheus.API_ERRORS.labels(verb, code)._value.get()

    before = (value("probe_verb", "503"), value("probe_verb", "0"))
    clock = Clock()
    api_with(clock).call("probe_verb", Script(status(503), Fault("reset").error("x")))
    assert (value("probe_verb", "503"), value("probe_verb", "0")) == (before[0] + 1, before[1] + 1)


def test_a_failed_event_never_fails_the_caller() -> None:
    clock = Clock()
    core = type("Core", (), {"create_namespaced_event": Script(*[Fault("reset").error("x")] * 5)})()
    a = Api(core=core, batch=object(), custom=object(), event_policy=policy(clock, attempts=2))
    body = {"metadata": {"name": "e", "namespace": "ns", "uid": "u"}}
    events.post(a, body, "TrialCreated", "e-0000")  # does not raise
    assert core.create_namespaced_event.calls == 2
    core.create_namespaced_event = Script(ValueError("a bug in the client"))
    events.post(a, body, "TrialCreated", "e-0000")  # not even this


# -- the experiment and the driver ------------------------------------------------------------------------------------

PARAMETERS = [
    {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
    {"name": "k", "type": "categorical", "values": ["a", "b", "c"]},
    {"name": "n", "type": "int", "min": 1, "max": 50},
]


def experiment(name: str = "exp", *, algorithm: dict[str, Any] | None = None, max_trials: int = 30,
               parallel: int = 5, uid: str = "exp-uid-1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment",
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "objective": {"metric": "accuracy", "goal": "maximize"},
            "additionalMetrics": ["loss"],
            "parameters": spec.pop("parameters", PARAMETERS),
            "algorithm": algorithm or {"name": "random", "seed": 1},
            "maxTrials": max_trials, "parallelTrials": parallel, "maxFailedTrials": max_trials,
            "trialTemplate": {"spec": {"template": {"spec": {"containers": [
                {"name": "trial", "image": "trial:1", "command": ["train", "--x", "${params.x}"]}]}}}},
            **spec,
        },
    }


class SteppedReconciler(Reconciler):
    """The reconciler with its workers driven by the test (one reconcile per step) instead of their own tasks, so a
    seeded run is reproducible."""

    def wake(self, key: tuple[str, str]) -> None:
        if key in self.state.experiments and key not in self.workers:
            self.workers[key] = ExperimentWorker(key, self.state, self.api_factory, self.timing)


class Harness:
    def __init__(self, body: dict[str, Any], *, seed: int, faults: Faults | None = None, lag: bool = True,
                 **cluster: Any) -> None:
        self.clock = Clock()
        self.fake = FakeCluster(body, faults=faults, seed=seed, **cluster)
        self.rng = random.Random(seed)
        self.lag = lag
        api = Api(core=self.fake, batch=self.fake, custom=self.fake,
                  policy=RetryPolicy(attempts=3, sleep=self.clock.sleep, clock=self.clock),
                  event_policy=RetryPolicy(attempts=2, sleep=self.clock.sleep, clock=self.clock))
        self.reconciler = SteppedReconciler(lambda: api)
        self.failures = 0
        self.steps = 0

    @property
    def worker(self) -> ExperimentWorker | None:
        return self.reconciler.workers.get(self.fake.key)

    async def step(self) -> None:
        self.steps += 1
        self.fake.tick()
        self.fake.deliver(self.reconciler, self.rng if self.lag else None)
        worker = self.worker
        if worker is None:
            return
        try:
            await worker.reconcile()
        except API_FAILURES:
            self.failures += 1

    def finished(self) -> bool:
        return bool(self.fake.status().get("completionTime")) and self.fake.running() == 0

    async def run(self, max_steps: int) -> None:
        for _ in range(max_steps):
            await self.step()
            if self.finished():
                return

    async def settle(self, max_steps: int = 400) -> None:
        """Faults off, no lag: reconcile until the experiment is finished and nothing is left to do."""
        if self.fake.faults:
            self.fake.faults.enabled = False
        self.lag = False
        await self.run(max_steps)
        assert self.finished(), f"not finished after {self.steps} steps: {self.fake.status()}"
        for _ in range(3):  # the last deletions of finished Jobs beyond those kept for logs
            await self.step()


def check(h: Harness, body: dict[str, Any], *, all_trials: bool = True) -> dict[int, dict[str, Any]]:
    """What must hold at the end, whatever faults happened on the way."""
    fake, spec = h.fake, body["spec"]
    name = body["metadata"]["name"]
    records = fake.records()
    n = len(records)
    if all_trials:
        assert n == spec["maxTrials"]
    assert sorted(records) == list(range(n)), "trial numbers are contiguous from 0"
    # each trial's Job was created exactly once (counting creates whose response was lost), no other Job; but for
    # a trial recorded with a Job still to make (its create failed) when the experiment ended: Canceled, no Job
    unmade = {i for i, r in records.items() if trial_name(name, i) not in fake.ledger.creations}
    for i in unmade:
        assert records[i]["state"] == "Canceled" and records[i]["reason"] == "ExperimentFinished", records[i]
    assert dict(fake.ledger.creations) == {trial_name(name, i): 1 for i in range(n) if i not in unmade}
    # every record is final and tells what its pod did
    for number, rec in records.items():
        if number in unmade:
            continue
        truth = fake.ledger.truth[fake.ledger.job_uids[trial_name(name, number)]]
        reported = [*truth.reports, {}]
        if rec["state"] == "Succeeded":
            assert truth.outcome == "Succeeded" and rec["metrics"] == truth.reports[-1], (rec, truth)
        elif rec["state"] == "Failed":
            assert truth.outcome == "Failed" and rec["reason"] == "Error", (rec, truth)
            assert rec.get("metrics", {}) in reported
        else:
            assert rec["state"] in ("Pruned", "Canceled"), rec
            assert rec.get("metrics", {}) in reported, (rec, truth)
    assert not fake.ledger.regressions, "a finished record was overwritten by an active one"
    # nothing runs any more: no stopped trial still running, every pod ended or gone
    assert fake.running() == 0
    assert all(p["status"]["phase"] in ("Succeeded", "Failed") or p["metadata"].get("deletionTimestamp")
               for p in fake.pods.values())
    assert fake.running_max <= spec["parallelTrials"]
    # the status says what the records say
    st = fake.status()
    counts = Counter(r["state"] for r in records.values())
    assert st["trials"] == {"created": n, "running": 0, "succeeded": counts["Succeeded"],
                            "failed": counts["Failed"], "pruned": counts["Pruned"]}
    succeeded = [r for r in records.values() if r["state"] == "Succeeded"]
    if succeeded:
        best = max(succeeded, key=lambda r: (r["metrics"]["accuracy"], -r["number"]))
        assert st["bestTrial"]["objectiveValue"] == best["metrics"]["accuracy"]
    cond = {c["type"]: c for c in st["conditions"]}
    assert cond["Succeeded"]["status"] in ("True", "False") and cond["Reconciling"]["status"] == "False"
    # at most the newest finished Jobs are kept, and every request had a timeout
    assert len(fake.jobs) <= 10
    assert fake.untimed_calls == []
    return records


def report(h: Harness, label: str) -> None:
    faults = h.fake.faults
    by_op = faults.by_op() if faults else {}
    print(f"\n{label}: {h.steps} steps, {h.failures} failed reconciles, faults {sum(by_op.values())} "
          f"({faults.after_count() if faults else 0} after the server applied the change): "
          + ", ".join(f"{op}={by_op.get(op, 0)}/{h.fake.calls[op]}" for op in OPS)
          + f"; creations per trial {sorted(set(h.fake.ledger.creations.values()))}; "
          f"records {dict(Counter(r['state'] for r in h.fake.records().values()))}; "
          f"max running {h.fake.running_max}")


# -- whole experiments under faults -----------------------------------------------------------------------------------

SCENARIOS: dict[str, dict[str, Any]] = {
    "random": {"algorithm": {"name": "random", "seed": 1}},
    "tpe+median": {"algorithm": {"name": "tpe", "seed": 2}, "earlyStopping": {"rule": "median"}},
    "sobol+asha": {"algorithm": {"name": "sobol", "seed": 3}, "earlyStopping": {"rule": "asha", "maxResource": 4}},
    "hyperband": {
        "algorithm": {"name": "hyperband", "seed": 4, "settings": {"resourceParameter": "epochs"}},
        "parameters": [*PARAMETERS[:2], {"name": "epochs", "type": "int", "min": 1, "max": 9}]},
    "bayesian": {"algorithm": {"name": "bayesian", "seed": 5}},
}


@pytest.mark.parametrize("seed", [11, 12])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_experiment_under_faults_on_every_call_creates_and_records_each_trial_once(scenario: str,
                                                                                    seed: int) -> None:
    body = experiment(**copy.deepcopy(SCENARIOS[scenario]))
    faults = Faults(seed, rate=0.25)
    h = Harness(body, seed=seed, faults=faults)

    async def go() -> None:
        await h.run(250)  # under faults; it may finish or not
        await h.settle()

    asyncio.run(go())
    report(h, f"{scenario} seed {seed}")
    check(h, body)
    by_op = faults.by_op()
    assert all(by_op.get(op, 0) > 0 for op in ("create_job", "patch_status", "patch_configmap", "create_event"))
    assert faults.after_count() > 0


@pytest.mark.parametrize("seed", [41, 42, 43])
def test_operator_restarts_under_faults_lose_and_duplicate_nothing(seed: int) -> None:
    """The operator restarts (a new reconciler: no memory, the watches list everything again, records loaded from
    the ConfigMaps) at random moments of an experiment under faults."""
    body = experiment(algorithm={"name": "tpe", "seed": seed}, earlyStopping={"rule": "median"})
    faults = Faults(seed, rate=0.25)
    h = Harness(body, seed=seed, faults=faults)
    rng = random.Random(seed)
    restarts = 0

    async def go() -> None:
        nonlocal restarts
        for _ in range(12):
            await h.run(rng.randint(1, 12))
            if h.finished():
                break
            h.reconciler = SteppedReconciler(h.reconciler.api_factory)
            h.fake.relist()
            restarts += 1
            faults._bursts["list_configmaps"] = [Fault("503")]  # loading the records fails at least once
        await h.settle()

    asyncio.run(go())
    report(h, f"restarts ({restarts}) seed {seed}")
    check(h, body)
    assert restarts >= 3 and faults.by_op().get("list_configmaps", 0) > 0


def test_target_reached_cancels_running_trials_under_faults() -> None:
    body = experiment(algorithm={"name": "random", "seed": 9}, max_trials=40, parallel=6)
    body["spec"]["objective"]["target"] = 0.93
    faults = Faults(21, rate=0.25)
    h = Harness(body, seed=21, faults=faults, run_ticks=(2, 10))

    async def go() -> None:
        await h.run(250)
        await h.settle()

    asyncio.run(go())
    report(h, "target")
    records = check(h, body, all_trials=False)
    assert h.fake.status()["conditions"][0]["reason"] == "TargetReached"
    assert len(records) < 40


def test_lost_create_response_creates_the_job_once_and_reports_it_created() -> None:
    body = experiment()
    fake = FakeCluster(body)
    fake.faults = type("Once", (), {"draw": lambda self, op: Fault("timeout", after=True)
                                    if op == "create_job" and fake.calls[op] == 1 else None})()
    clock = Clock()
    api = Api(core=fake, batch=fake, custom=fake, policy=policy(clock))
    job = {"metadata": {"name": "exp-0000", "ownerReferences": [{"uid": "exp-uid-1", "controller": True}],
                        "annotations": {"kubetune.io/parameters": "{}"}}, "spec": {}}
    assert api.create_job("ns", job) is True  # the lost response's create was this call's own
    assert fake.ledger.creations["exp-0000"] == 1
    assert api.create_job("ns", job) is False  # already there (e.g. after a restart): adopted, not created
    assert fake.ledger.creations["exp-0000"] == 1


def test_a_job_of_the_same_name_owned_by_another_experiment_is_never_adopted() -> None:
    old = experiment(uid="old-uid")
    new = experiment(uid="new-uid")
    fake = FakeCluster(old)
    api = Api(core=fake, batch=fake, custom=fake, policy=policy(Clock()))
    job = {"metadata": {"name": "exp-0000", "ownerReferences": [{"uid": "old-uid", "controller": True}],
                        "annotations": {"kubetune.io/parameters": "{}"}}, "spec": {}}
    assert api.create_job("ns", job)
    mine = copy.deepcopy(job)
    mine["metadata"]["ownerReferences"][0]["uid"] = "new-uid"
    with pytest.raises(ForeignObject):
        api.create_job("ns", mine)
    cm = {"metadata": {"name": "exp-results-000", "ownerReferences": [{"uid": "old-uid"}]}, "data": {}}
    api.upsert_configmap_data("ns", cm)
    cm["metadata"]["ownerReferences"][0]["uid"] = "new-uid"
    with pytest.raises(ForeignObject):
        api.upsert_configmap_data("ns", cm)
    del new


def test_a_recreated_experiment_ignores_the_old_ones_jobs_until_they_are_gone() -> None:
    """Delete an experiment and create one of the same name while the old Jobs still exist: the new one neither
    observes them as its trials nor adopts them; it creates its own once the garbage collector removed them."""
    old = experiment(uid="old-uid", max_trials=4, parallel=4)
    h = Harness(old, seed=3, lag=False, run_ticks=(50, 50))

    async def go() -> None:
        for _ in range(4):
            await h.step()
        assert h.fake.running() == 4
        # the user deletes and re-creates the experiment; the old Jobs linger (garbage collection is slow)
        new = experiment(uid="new-uid", max_trials=4, parallel=4)
        with h.fake.lock:
            h.fake.experiment = copy.deepcopy(new)
            h.fake.ledger.configmaps.clear()
            h.fake._emit("experiments", "exp", new)
        for _ in range(3):
            await h.step()
        worker = h.worker
        assert worker is not None and worker.uid == "new-uid"
        assert all(t.state.value == "Pending" for t in (worker.records or {}).values())
        assert dict(h.fake.ledger.creations) == {f"exp-{i:04d}": 1 for i in range(4)}  # nothing adopted
        for name in list(h.fake.jobs):  # the garbage collector deletes the old Jobs
            h.fake.delete_namespaced_job(name, "ns", _request_timeout=1)
        h.fake.run_ticks = (1, 2)
        await h.settle()

    asyncio.run(go())
    assert dict(h.fake.ledger.creations) == {f"exp-{i:04d}": 2 for i in range(4)}
    assert {h.fake.ledger.job_uids[f"exp-{i:04d}"] for i in range(4)} <= {
        j["metadata"]["uid"] for j in h.fake.jobs.values()} | set(h.fake.ledger.truth)
    records = h.fake.records()
    assert sorted(records) == [0, 1, 2, 3] and all(r["state"] != "Pending" for r in records.values())


def test_status_patch_on_a_deleted_experiment_is_not_an_error() -> None:
    body = experiment(max_trials=6, parallel=3)
    h = Harness(body, seed=5, lag=False)

    async def go() -> None:
        for _ in range(3):
            await h.step()
        worker = h.worker
        assert worker is not None
        # deleted on the server; the watch has not told the operator yet
        with h.fake.lock:
            h.fake.experiment = None
        for _ in range(12):  # trials finish: the counts in the status change
            h.fake.tick()
        h.fake.deliver(h.reconciler)
        patches = h.fake.calls["patch_status"]
        await worker.reconcile()  # 404 on the status patch: no exception
        assert h.fake.calls["patch_status"] == patches + 1

    asyncio.run(go())


def test_the_worker_loop_recovers_from_faults_with_real_tasks() -> None:
    """The production worker loop (its own task, wakeups, backoff after failures) under faults, with tiny
    timings instead of seconds."""
    body = experiment(max_trials=20, parallel=4, algorithm={"name": "random", "seed": 8})
    faults = Faults(31, rate=0.3)
    fake = FakeCluster(body, faults=faults, seed=31)
    clock = Clock()
    api = Api(core=fake, batch=fake, custom=fake, policy=RetryPolicy(attempts=2, sleep=clock.sleep, clock=clock),
              event_policy=RetryPolicy(attempts=1, sleep=clock.sleep, clock=clock))
    rec = Reconciler(lambda: api, Timing(resync=0.01, debounce=0.0, backoff=0.001, backoff_max=0.01))

    async def go() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120  # a guard against hangs only
        while loop.time() < deadline:
            fake.tick()
            fake.deliver(rec)
            await asyncio.sleep(0.005)
            if fake.status().get("completionTime") and fake.running() == 0:
                faults.enabled = False
                break
        for _ in range(50):
            fake.tick()
            fake.deliver(rec)
            await asyncio.sleep(0.005)
        await rec.stop()

    asyncio.run(go())
    h = Harness.__new__(Harness)
    h.fake, h.steps, h.failures = fake, 0, 0
    report(h, "worker loop")
    check(h, body)
    assert sum(faults.by_op().values()) > 0


@pytest.mark.parametrize("seed", range(8))
def test_the_summary_after_creating_trials_is_what_planning_again_gives(seed: int) -> None:
    """The reconciler skips the second planning pass when it only created trials; the shortcut must agree with it."""
    rng = random.Random(seed)
    spec_body = experiment(max_trials=rng.randint(5, 40), parallel=rng.randint(1, 8))
    spec_body["spec"]["maxFailedTrials"] = rng.randint(0, 6)
    spec, problems = parse_spec(spec_body)
    assert spec is not None, problems
    states = [TrialState.SUCCEEDED, TrialState.FAILED, TrialState.PRUNED, TrialState.RUNNING, TrialState.PENDING]
    trials = []
    for number in range(rng.randint(0, spec.max_trials)):
        state = rng.choice(states)
        metrics = {"accuracy": rng.random()} if state is TrialState.SUCCEEDED else {}
        trials.append(Trial(number, {"x": rng.random(), "k": "a", "n": 3}, state, metrics=metrics))
    plan = make_plan(spec, trials, experiment="exp")
    if not plan.create:
        return
    again = make_plan(spec, trials + [Trial(n.number, n.params) for n in plan.create], experiment="exp",
                      suggest=False)
    short = after_creating(plan, len(plan.create))
    assert (short.counts, short.best, short.outcome, short.finished) == (again.counts, again.best, again.outcome,
                                                                         again.finished)
