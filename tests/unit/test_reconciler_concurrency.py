"""What one reconcile does at once: Events handed off without waiting (dropped and counted when too many wait),
Job creates in parallel (one failing keeps the others, and is made later), one ConfigMap write per shard for the
finished, stopped and new trials (each record written once per state), records put back when that write fails,
and watch events that change nothing the reconciler reads wake nobody.

The API server is the in-memory fake of ``tests/support/fake_api.py``; the real control plane runs the same code in
``tests/integration``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import pytest

from kubetune.k8s import events, prometheus
from kubetune.k8s.api import Api, ApiException, RetryPolicy
from kubetune.k8s.observe import JobSummary, PodSummary, observe_trial, summarize_job
from kubetune.k8s.reconciler import ExperimentWorker, Reconciler, gather_calls, parse_spec
from kubetune.k8s.store import SHARD_SIZE, TrialStore
from kubetune.template import trial_name
from kubetune.trials import Trial, TrialState
from tests.support.fake_api import FakeCluster, Faults
from tests.unit.test_reconciler_faults import Clock, Harness, check, experiment

HANG_GUARD = 60.0
"""Seconds; only a guard against hangs."""


# -- Events ---------------------------------------------------------------------------------------------------------


class BlockingCore:
    """A core API whose Event creates wait until released, counting what was really created."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.created: list[str] = []
        self.lock = threading.Lock()

    def create_namespaced_event(self, namespace: str, body: Mapping[str, Any], **_: Any) -> None:
        self.entered.set()
        assert self.release.wait(HANG_GUARD)
        with self.lock:
            self.created.append(body["reason"])


def test_events_beyond_the_limit_are_dropped_and_counted_without_blocking() -> None:
    core = BlockingCore()
    api = Api(core=core, batch=object(), custom=object())
    sink = events.EventSink(threads=2, limit=3)
    body = {"metadata": {"name": "e", "namespace": "ns", "uid": "u"}}
    dropped_before = prometheus.EVENTS_DROPPED._value.get()
    # nothing is posted yet (the server hangs), and emit returns at once all the same
    accepted = [sink.emit(api, body, f"R{i}", "m") for i in range(7)]
    assert accepted == [True, True, True, False, False, False, False]
    assert sink.dropped == 4 and prometheus.EVENTS_DROPPED._value.get() == dropped_before + 4
    assert core.created == []
    core.release.set()
    assert sink.drain(HANG_GUARD)
    assert sorted(core.created) == ["R0", "R1", "R2"]
    # room again once they were posted
    assert sink.emit(api, body, "R7", "m") and sink.drain(HANG_GUARD)
    assert sorted(core.created) == ["R0", "R1", "R2", "R7"]


def test_closing_the_sink_drops_the_events_still_waiting() -> None:
    core = BlockingCore()
    api = Api(core=core, batch=object(), custom=object())
    sink = events.EventSink(threads=1, limit=10)
    body = {"metadata": {"name": "e", "namespace": "ns", "uid": "u"}}
    assert all(sink.emit(api, body, f"R{i}", "m") for i in range(3))
    assert core.entered.wait(HANG_GUARD)
    sink.close()  # the first one is being posted; the two others go
    assert not sink.emit(api, body, "late", "m")
    core.release.set()
    assert sink.drain(HANG_GUARD)
    assert core.created == ["R0"]


def test_a_failing_event_frees_its_place() -> None:
    class Failing:
        calls = 0

        def create_namespaced_event(self, *_: Any, **__: Any) -> None:
            Failing.calls += 1
            raise ApiException(status=500, reason="boom")

    clock = Clock()
    api = Api(core=Failing(), batch=object(), custom=object(),
              event_policy=RetryPolicy(attempts=2, sleep=clock.sleep, clock=clock))
    sink = events.EventSink(threads=1, limit=1)
    body = {"metadata": {"name": "e", "namespace": "ns", "uid": "u"}}
    for _ in range(3):
        assert sink.emit(api, body, "R", "m")
        assert sink.drain(HANG_GUARD)
    assert Failing.calls == 6 and sink.pending == 0 and sink.dropped == 0


# -- concurrent calls -----------------------------------------------------------------------------------------------


def test_gather_calls_runs_calls_at_once_and_returns_each_failure_in_place() -> None:
    barrier = threading.Barrier(3, timeout=HANG_GUARD)  # broken unless three calls run at the same time

    def meet(i: int) -> int:
        barrier.wait()
        if i == 1:
            raise ValueError("one fails")
        return i

    results = asyncio.run(gather_calls([lambda i=i: meet(i) for i in range(3)], limit=3))  # type: ignore[misc]
    assert results[0] == 0 and results[2] == 2 and isinstance(results[1], ValueError)


class FlakyCreates(FakeCluster):
    """Job creates of the names in ``failing`` fail (500, every attempt); the first ``meet`` creates wait for
    each other, so they can only succeed if they run at the same time."""

    def __init__(self, *args: Any, failing: set[str], meet: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.failing = failing
        self.barrier = threading.Barrier(meet, timeout=HANG_GUARD)
        self.met = 0

    def create_namespaced_job(self, namespace: str, body: dict[str, Any], **kw: Any) -> Any:
        with self.lock:
            meet = self.met < self.barrier.parties
            self.met += 1
        if meet:
            self.barrier.wait()
        if body["metadata"]["name"] in self.failing:
            raise ApiException(status=500, reason="Internal Server Error")
        return super().create_namespaced_job(namespace, body, **kw)


def test_concurrent_creates_keep_the_jobs_made_and_make_the_failed_one_later() -> None:
    body = experiment(max_trials=6, parallel=4, algorithm={"name": "random", "seed": 3})
    failing = trial_name("exp", 2)
    fake = FlakyCreates(body, failing={failing}, meet=4, seed=3)
    clock = Clock()
    api = Api(core=fake, batch=fake, custom=fake, policy=RetryPolicy(attempts=2, sleep=clock.sleep, clock=clock))
    rec = Reconciler(lambda: api)
    rec.wake = lambda key: None  # type: ignore[method-assign]  # the test drives the reconciles

    async def go() -> None:
        fake.deliver(rec)
        worker = rec.workers[fake.key] = ExperimentWorker(fake.key, rec.state, rec.api_factory, rec.timing)
        with pytest.raises(ApiException):
            await worker.reconcile()  # four creates at once (the barrier), one of them fails
        assert dict(fake.ledger.creations) == {trial_name("exp", n): 1 for n in (0, 1, 3)}
        states = {n: r["state"] for n, r in fake.records().items()}
        assert states == {0: "Running", 1: "Running", 2: "Pending", 3: "Running"}
        fake.failing.clear()
        fake.deliver(rec)
        await worker.reconcile()  # the failed one is made now, the others are not made again
        assert dict(fake.ledger.creations) == {trial_name("exp", n): 1 for n in range(4)}
        assert {n: r["state"] for n, r in fake.records().items()} == {n: "Running" for n in range(4)}

    asyncio.run(go())


# -- one write per shard ----------------------------------------------------------------------------------------------


def record_writes(fake: FakeCluster) -> list[list[tuple[str, str]]]:
    """Every ConfigMap write the fake server applied: (record key, state) of each record it held."""
    writes: list[list[tuple[str, str]]] = []
    write = fake._write_records

    def logged(cm: dict[str, Any], data: Mapping[str, str]) -> None:
        writes.append([(key, json.loads(value)["state"]) for key, value in data.items()])
        write(cm, data)

    fake._write_records = logged  # type: ignore[method-assign]
    return writes


@pytest.mark.parametrize("scenario", ["random", "median"])
def test_each_record_is_written_once_per_state_and_finished_with_new_ones_in_one_write(scenario: str) -> None:
    extra: dict[str, Any] = {"earlyStopping": {"rule": "median"}} if scenario == "median" else {}
    body = experiment(max_trials=40, parallel=5, algorithm={"name": "random", "seed": 5}, **extra)
    h = Harness(body, seed=5, lag=False)
    writes = record_writes(h.fake)

    asyncio.run(h.settle())
    check(h, body)
    per_key: dict[str, list[str]] = defaultdict(list)
    for write in writes:
        for key, state in write:
            per_key[key].append(state)
    assert len(per_key) == 40
    for key, states in per_key.items():
        assert states[:2] == ["Pending", "Running"] and len(states) == 3, (key, states)
        assert states[2] in ("Succeeded", "Failed", "Pruned", "Canceled"), (key, states)
    # the records of trials that just finished go with the new trials that replace them
    assert any({"Pending"} < {s for _, s in w} and len({s for _, s in w} - {"Pending", "Running"}) > 0
               for w in writes)
    if scenario == "median":
        assert any(s == "Pruned" for states in per_key.values() for s in states)


def test_records_are_put_back_when_they_cannot_be_written() -> None:
    body = experiment(max_trials=12, parallel=3, algorithm={"name": "random", "seed": 9})
    h = Harness(body, seed=9, lag=False)

    async def go() -> None:
        while not any(r["state"] not in ("Pending", "Running") for r in h.fake.records().values()):
            await h.step()
            assert h.steps < 100
        worker = h.worker
        assert worker is not None and worker.records is not None
        # every ConfigMap write fails from now on: the trials that finish cannot be recorded
        h.fake.faults = Faults(1, rate=1.0, burst=0.0, ops={"patch_configmap", "create_configmap"}, kinds=("500",))
        for _ in range(6):
            before = {n: (t.state, t.number) for n, t in worker.records.items()}
            active = set(worker.records.active)
            created = Counter(h.fake.ledger.creations)
            await h.step()
            assert {n: (t.state, t.number) for n, t in worker.records.items()} == before
            assert worker.records.active == active
            assert h.fake.ledger.creations == created  # no Job without its record
        history = worker.records.history
        assert history is None or len(history) == sum(1 for t in worker.records.values() if t.state.finished)
        await h.settle()

    asyncio.run(go())
    check(h, body)
    assert h.failures >= 3  # the reconciles that had trials to record failed


# -- what wakes a worker ----------------------------------------------------------------------------------------------


def test_only_changes_the_reconciler_reads_wake_the_worker() -> None:
    body = experiment(max_trials=4, parallel=2)
    fake = FakeCluster(body, seed=1)
    woken: Counter[tuple[str, str]] = Counter()

    class Counting(Reconciler):
        def wake(self, key: tuple[str, str]) -> None:
            woken[key] += 1

    rec = Counting()
    fake.deliver(rec)
    assert woken[fake.key] == 1
    key = fake.key
    # the same experiment again (e.g. the echo of a status the reconciler wrote and kept): nobody is woken
    rec.experiment_changed(key, json.loads(json.dumps(body)))
    assert woken[key] == 1
    rec.experiment_changed(key, {**body, "status": {"trials": {"created": 1}}})
    assert woken[key] == 2
    job = JobSummary(name="exp-0000", number=0, params={"x": 0.5}, complete=False, failed=False, uid="j1")
    pod = PodSummary(name="exp-0000-a", job="exp-0000", phase="Running", deleting=False, metrics_text=None,
                     job_uid="j1")
    rec.job_changed(key, job.name, job)
    rec.pod_changed(key, pod.name, pod)
    assert woken[key] == 4
    rec.job_changed(key, job.name, JobSummary(**{**job.__dict__}))
    rec.pod_changed(key, pod.name, PodSummary(name="exp-0000-a", job="exp-0000", phase="Running", deleting=False,
                                              metrics_text=None, job_uid="j1"))
    assert woken[key] == 4  # nothing changed
    rec.pod_changed(key, pod.name, PodSummary(name="exp-0000-a", job="exp-0000", phase="Running", deleting=False,
                                              metrics_text='{"accuracy": 0.5}', job_uid="j1"))
    assert woken[key] == 5
    view = rec.state.views[key]
    assert [p.name for p in view.pods_of("exp-0000")] == ["exp-0000-a"]
    rec.job_changed(key, job.name, None)  # a deleted Job's pods go from the view, and from its index
    assert view.pods == {} and view.pods_of("exp-0000") == [] and view.by_job == {}
    assert woken[key] == 6


def test_a_shard_is_written_with_one_request_whether_new_or_not() -> None:
    body = experiment()
    fake = FakeCluster(body)
    api = Api(core=fake, batch=fake, custom=fake, policy=RetryPolicy(attempts=1))

    def writes() -> tuple[int, int]:
        return fake.calls["create_configmap"], fake.calls["patch_configmap"]

    store = TrialStore(api, body)
    assert store.load() == {}
    store.save([Trial(0, {"x": 0.1}, TrialState.PENDING)])
    assert writes() == (1, 0)  # a new shard: created at once
    store.save([Trial(1, {"x": 0.2}, TrialState.PENDING)])
    assert writes() == (1, 1)
    again = TrialStore(api, body)  # after a restart: the shards loaded are known
    assert sorted(again.load()) == [0, 1]
    again.save([Trial(2, {"x": 0.3}, TrialState.PENDING), Trial(SHARD_SIZE, {"x": 0.4}, TrialState.PENDING)])
    assert writes() == (2, 2)
    unknown = TrialStore(api, body)  # not loaded: the shard is there all the same, and is patched after the 409
    unknown.save([Trial(3, {"x": 0.5}, TrialState.PENDING)])
    assert writes() == (3, 3)
    assert sorted(TrialStore(api, body).load()) == [0, 1, 2, 3, SHARD_SIZE]


# -- a Job of one pod is done when its pod succeeded ------------------------------------------------------------------


def test_a_succeeded_pod_ends_its_trial_before_the_job_is_complete_and_its_job_is_kept() -> None:
    body = experiment(max_trials=4, parallel=2, algorithm={"name": "random", "seed": 4})
    h = Harness(body, seed=4, lag=False, run_ticks=(1, 1), fail_rate=0.0, steps=1)
    fake = h.fake

    def deliver_without_jobs_complete() -> None:
        """Deliver every event but the Jobs' updates once they completed (the Job controller is slow)."""
        held = [(n, j) for n, j in fake.streams["jobs"] if j is not None and j.complete]
        fake.streams["jobs"] = type(fake.streams["jobs"])(
            (n, j) for n, j in fake.streams["jobs"] if not (j is not None and j.complete))
        fake.deliver(h.reconciler)
        fake.streams["jobs"].extend(held)

    async def go() -> None:
        fake.deliver(h.reconciler)
        await h.worker.reconcile()  # type: ignore[union-attr]  # the first two Jobs
        for _ in range(6):
            fake.tick()
            deliver_without_jobs_complete()
            await h.worker.reconcile()  # type: ignore[union-attr]
        records = fake.records()
        # the first trials are recorded from their pods alone, and the Jobs that replace them are made
        assert {n: r["state"] for n, r in records.items() if n < 2} == {0: "Succeeded", 1: "Succeeded"}
        assert all(r["metrics"] == fake.ledger.truth[fake.ledger.job_uids[trial_name("exp", n)]].reports[-1]
                   for n, r in records.items() if r["state"] == "Succeeded")
        assert len(records) >= 3
        view = h.reconciler.state.views[fake.key]
        assert not any(view.jobs[trial_name("exp", n)].complete for n in (0, 1))  # as the operator saw them
        assert fake.calls["delete_job"] == 0  # a done Job is no stale one: kept for its logs
        await h.settle()

    asyncio.run(go())
    check(h, body)


@pytest.mark.parametrize(("single", "phases", "final"), [
    (True, ["Succeeded"], True),
    (True, ["Failed", "Succeeded"], True),
    (True, ["Succeeded", "Running"], False),  # another pod still runs
    (True, ["Failed"], False),  # the Job controller decides (it may make another pod)
    (False, ["Succeeded"], False),  # completions or parallelism above 1: the Job says when it is done
])
def test_a_job_of_one_pod_is_judged_by_its_pods_alone(single: bool, phases: list[str], final: bool) -> None:
    spec, _ = parse_spec(experiment())
    assert spec is not None
    job = JobSummary(name="exp-0000", number=0, params={"x": 0.5}, complete=False, failed=False, uid="j",
                     single=single)
    pods = [PodSummary(name=f"p{i}", job="exp-0000", phase=phase, deleting=False, created=f"2026-01-0{i + 1}",
                       metrics_text='{"seq": 1, "metrics": {"accuracy": 0.75}}', job_uid="j",
                       finished_at="2026-01-02T00:00:00Z" if phase != "Running" else None)
            for i, phase in enumerate(phases)]
    observed = observe_trial(spec, job, pods, None)
    assert observed.final is final
    if final:
        assert observed.trial.state is TrialState.SUCCEEDED and observed.trial.metrics == {"accuracy": 0.75}
        assert observed.trial.completion_time == "2026-01-02T00:00:00Z"


@pytest.mark.parametrize(("spec", "single"), [({}, True), ({"completions": 1, "parallelism": 1}, True),
                                               ({"completions": 3}, False), ({"parallelism": 2}, False)])
def test_a_job_is_of_one_pod_when_completions_and_parallelism_are_at_most_1(spec: dict[str, int],
                                                                             single: bool) -> None:
    body = {"metadata": {"name": "exp-0000", "labels": {"kubetune.io/trial-number": "0"},
                         "annotations": {"kubetune.io/parameters": "{}"}}, "spec": spec}
    job = summarize_job(body)
    assert job is not None and job.single is single


def test_after_a_restart_a_stopped_trials_job_not_yet_watched_goes_before_any_new_job() -> None:
    """A stop recorded before a restart whose delete failed: the restarted operator asks the API server for the
    pods of stopped trials (its watch may not show that Job yet) and deletes the Job before making new ones."""
    body = experiment(max_trials=40, parallel=4, algorithm={"name": "random", "seed": 6},
                      earlyStopping={"rule": "median", "minTrials": 2, "startStep": 1})
    h = Harness(body, seed=6, lag=False, steps=6, run_ticks=(4, 8))
    fake = h.fake
    fake.faults = Faults(2, rate=1.0, burst=0.0, ops={"delete_job"}, kinds=("500",))  # no Job can be deleted

    async def go() -> None:
        def stopped_but_running() -> list[str]:
            records = fake.records()
            return [name for name, job in fake.jobs.items() if not fake._job_finished(job)
                    and records.get(int(name.rsplit("-", 1)[1]), {}).get("state") in ("Pruned", "Canceled")]

        while not stopped_but_running():
            await h.step()
            assert h.steps < 300, "no trial was pruned"
        # the operator restarts; its watch has not shown any Job yet
        h.reconciler = type(h.reconciler)(h.reconciler.api_factory)
        fake.relist()
        fake.streams["jobs"].clear()
        fake.streams["pods"].clear()
        fake.faults = None
        created = sum(fake.ledger.creations.values())
        fake.deliver(h.reconciler)
        worker = h.worker
        assert worker is not None
        running_max, fake.running_max = fake.running_max, 0
        await worker.reconcile()
        assert stopped_but_running() == []
        assert fake.running_max <= 4 and sum(fake.ledger.creations.values()) >= created
        fake.running_max = max(fake.running_max, running_max)
        await h.settle()

    asyncio.run(go())
    check(h, body)


# -- Jobs made but not yet watched ------------------------------------------------------------------------------------


class FakeTime:
    """``time`` for the reconciler module: a monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def stepped(body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[FakeCluster, Reconciler, FakeTime]:
    import kubetune.k8s.reconciler as module

    clock = FakeTime()
    monkeypatch.setattr(module, "time", clock)
    fake = FakeCluster(body, seed=4)
    api = Api(core=fake, batch=fake, custom=fake, policy=RetryPolicy(attempts=2, sleep=Clock().sleep, clock=Clock()))
    rec = Reconciler(lambda: api)
    rec.wake = lambda key: None  # type: ignore[method-assign]  # the test drives the reconciles
    fake.deliver(rec)
    rec.workers[fake.key] = ExperimentWorker(fake.key, rec.state, rec.api_factory, rec.timing)
    return fake, rec, clock


def test_jobs_made_are_neither_made_again_nor_asked_about_before_the_watch_shows_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    body = experiment(max_trials=8, parallel=3, algorithm={"name": "random", "seed": 3})
    fake, rec, clock = stepped(body, monkeypatch)
    worker = rec.workers[fake.key]

    async def go() -> None:
        await worker.reconcile()
        assert fake.calls["create_job"] == 3
        fake.streams["jobs"].clear()  # the watch has not delivered the new Jobs (and will not: lost events)
        for _ in range(3):  # reconciles woken by other changes, within the grace period
            clock.now += 5.0
            await worker.reconcile()
        assert fake.calls["create_job"] == 3 and fake.calls["read_job"] == 0
        assert dict(fake.ledger.creations) == {trial_name("exp", n): 1 for n in range(3)}
        assert {n: r["state"] for n, r in fake.records().items()} == {n: "Running" for n in range(3)}
        # past the grace period the API server is asked, once per Job; they exist, so nothing is made again
        clock.now += 30.0
        await worker.reconcile()
        assert fake.calls["read_job"] == 3 and fake.calls["create_job"] == 3
        clock.now += 5.0
        await worker.reconcile()
        assert fake.calls["read_job"] == 3 and fake.calls["create_job"] == 3

    asyncio.run(go())


def test_a_job_deleted_before_the_watch_showed_it_is_a_lost_trial_once_the_grace_period_is_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    body = experiment(max_trials=8, parallel=2, algorithm={"name": "random", "seed": 3})
    fake, rec, clock = stepped(body, monkeypatch)
    worker = rec.workers[fake.key]
    victim = trial_name("exp", 0)

    async def go() -> None:
        await worker.reconcile()
        fake.streams["jobs"].clear()
        fake.delete_namespaced_job(victim, "ns", propagation_policy="Background")
        fake.streams["jobs"].clear()
        fake.streams["pods"].clear()
        clock.now += 5.0
        await worker.reconcile()
        assert fake.records()[0]["state"] == "Running"  # not known to be gone yet, and not made again
        clock.now += 30.0
        await worker.reconcile()
        assert fake.ledger.creations[victim] == 1
        assert fake.records()[0]["state"] not in ("Pending", "Running"), fake.records()[0]
        assert fake.calls["create_job"] == 3  # the lost trial's slot goes to a new trial

    asyncio.run(go())


def test_each_job_is_deleted_once_however_late_the_watch_shows_it() -> None:
    """Finished Jobs beyond those kept for logs, and the Jobs of pruned trials, are deleted once each: a reconcile
    that runs before the watch delivered a deletion does not send it again."""
    body = experiment(max_trials=60, parallel=4, algorithm={"name": "random", "seed": 2},
                      earlyStopping={"rule": "median"})
    h = Harness(body, seed=2, lag=True)
    deletes: Counter[str] = Counter()
    delete = h.fake.delete_namespaced_job

    def counted(name: str, namespace: str, **kw: Any) -> Any:
        deletes[name] += 1
        return delete(name, namespace, **kw)

    h.fake.delete_namespaced_job = counted  # type: ignore[method-assign]

    async def go() -> None:
        await h.run(3000)
        await h.settle()

    asyncio.run(go())
    check(h, body)
    assert len(deletes) >= 60 - 10 - 4, deletes  # all but the newest finished ones went
    assert max(deletes.values()) == 1, {n: c for n, c in deletes.items() if c > 1}


def test_the_spec_is_validated_once_per_generation_and_again_when_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    import kubetune.k8s.reconciler as module

    parsed: list[int] = []

    def counting(body: Mapping[str, Any]) -> Any:
        parsed.append(body["metadata"]["generation"])
        return parse_spec(body)

    monkeypatch.setattr(module, "parse_spec", counting)
    body = experiment(max_trials=6, parallel=2, algorithm={"name": "random", "seed": 3})
    fake, rec, clock = stepped(body, monkeypatch)
    worker = rec.workers[fake.key]

    async def go() -> None:
        for _ in range(4):
            await worker.reconcile()
            clock.now += 1.0
            fake.deliver(rec)
        assert parsed == [1] and fake.calls["create_job"] == 2
        # a new generation is validated again, and what it says takes effect
        fake.update_spec(parallelTrials=4)
        fake.deliver(rec)
        await worker.reconcile()
        assert parsed == [1, 2] and fake.calls["create_job"] == 4
        # an invalid edit (which the API server would refuse) stalls the experiment instead of being skipped
        fake.update_spec(parallelTrials=0)
        fake.deliver(rec)
        await worker.reconcile()
        await worker.reconcile()
        assert parsed == [1, 2, 3]
        assert fake.status()["conditions"][-1]["reason"] == "InvalidSpec"

    asyncio.run(go())
