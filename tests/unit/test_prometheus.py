"""The operator's Prometheus metrics: names kept, histograms exported, per-worker clocks that never mix."""

from __future__ import annotations

import asyncio
import datetime
import socket
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from kubetune.k8s import prometheus as P
from kubetune.k8s.handlers.state import reconciler
from kubetune.k8s.observe import ClusterView, JobSummary
from kubetune.plan import History
from kubetune.spec import ExperimentSpec
from kubetune.trials import Trial, TrialState


def families() -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(P.render())}


def sample(name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(P.render()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def spec() -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "objective": {"metric": "acc", "goal": "maximize"},
        "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
        "algorithm": {"name": "random", "seed": 3},
        "maxTrials": 10,
        "parallelTrials": 3,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    })


def test_every_documented_metric_is_exposed_with_its_type() -> None:
    fams = families()
    expected = {
        "kubetune_trials_created": "counter",
        "kubetune_trials_finished": "counter",
        "kubetune_experiments": "gauge",
        "kubetune_reconcile_seconds": "histogram",
        "kubetune_trial_turnaround_seconds": "histogram",
        "kubetune_suggestion_seconds": "histogram",
        "kubetune_time_to_first_job_seconds": "histogram",
        "kubetune_api_errors": "counter",
        "kubetune_running_trials": "gauge",
        "kubetune_running_experiments": "gauge",
        "process_resident_memory_bytes": "gauge",
        "process_cpu_seconds": "counter",
    }
    for name, kind in expected.items():
        assert name in fams, sorted(fams)
        assert fams[name].type == kind, (name, fams[name].type)
    text = P.render()
    assert "# TYPE kubetune_trials_finished_total counter" in text
    assert "_created{" not in text and "\nkubetune_trials_created_created" not in text  # no `_created` series


def test_labelled_counters_count_per_label() -> None:
    before_ok, before_failed = sample("kubetune_trials_finished_total", state="Succeeded"), sample(
        "kubetune_trials_finished_total", state="Failed")
    P.TRIALS_FINISHED.inc("Succeeded")
    P.TRIALS_FINISHED.inc("Succeeded")
    P.TRIALS_FINISHED.inc("Failed")
    assert sample("kubetune_trials_finished_total", state="Succeeded") == before_ok + 2
    assert sample("kubetune_trials_finished_total", state="Failed") == before_failed + 1
    before = sample("kubetune_api_errors_total", verb="create", code="409")
    P.count_api_error("create", 409)
    assert sample("kubetune_api_errors_total", verb="create", code="409") == before + 1


def test_turnaround_pairs_finishes_with_the_next_jobs_of_the_same_worker_only() -> None:
    async def worker(finishes: int, creates: int, gap: float, end_reconcile_first: bool = False) -> None:
        for _ in range(finishes):
            P.TRIALS_FINISHED.inc("Succeeded")
        await asyncio.sleep(gap)
        if end_reconcile_first:
            P.RECONCILE_SECONDS.observe(0.01)
        for _ in range(creates):
            P.TRIALS_CREATED.inc()

    async def main() -> None:
        # 2 finishes then 3 Jobs: 2 observations of at least the gap; a worker that only creates adds none;
        # finishes dropped at the end of a reconcile add none.
        await asyncio.gather(worker(2, 3, 0.2), worker(0, 4, 0.0), worker(3, 2, 0.0, end_reconcile_first=True))

    count0, sum0 = sample("kubetune_trial_turnaround_seconds_count"), sample("kubetune_trial_turnaround_seconds_sum")
    asyncio.run(main())
    assert sample("kubetune_trial_turnaround_seconds_count") == count0 + 2
    added = sample("kubetune_trial_turnaround_seconds_sum") - sum0
    assert 0.4 <= added < 10.0, added
    # Outside a task (no worker), nothing is paired.
    P.TRIALS_FINISHED.inc("Succeeded")
    P.TRIALS_CREATED.inc()
    assert sample("kubetune_trial_turnaround_seconds_count") == count0 + 2


def test_timed_plan_times_the_planner_and_arms_time_to_first_job_once() -> None:
    created = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=3)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    body = {"metadata": {"name": "e", "namespace": "n", "creationTimestamp": created}}
    s = spec()

    async def reconcile(trials: list[Trial]) -> int:
        plan = await asyncio.to_thread(P.timed_plan(body), s, trials, experiment="e")
        for _ in plan.create:
            P.TRIALS_CREATED.inc()
        return len(plan.create)

    async def main() -> None:
        assert await reconcile([]) == 3  # the first plan: 3 trials, the first Job is timed
        running = [Trial(n, {"x": 0.5}, TrialState.RUNNING) for n in range(3)]
        assert await reconcile(running) == 0
        # Later: every trial so far finished (kept in the plan's history), none active: new Jobs, not first ones.
        done = [Trial(n, {"x": 0.1 * n}, TrialState.SUCCEEDED, metrics={"acc": 0.5}) for n in range(3)]
        plan = await asyncio.to_thread(P.timed_plan(body), s, [], experiment="e", history=History(s, "e", done))
        assert len(plan.create) == 3
        for _ in plan.create:
            P.TRIALS_CREATED.inc()

    n0, sum0 = sample("kubetune_time_to_first_job_seconds_count"), sample("kubetune_time_to_first_job_seconds_sum")
    s0 = sample("kubetune_suggestion_seconds_count")
    asyncio.run(main())
    assert sample("kubetune_time_to_first_job_seconds_count") == n0 + 1
    assert 2.0 <= sample("kubetune_time_to_first_job_seconds_sum") - sum0 < 60.0
    assert sample("kubetune_suggestion_seconds_count") == s0 + 3


def test_running_gauges_are_read_from_the_reconciler_view() -> None:
    state = reconciler().state
    key = ("ns-gauge", "exp-gauge")
    state.experiments[key] = {"metadata": {"name": key[1], "namespace": key[0]}, "status": {}}
    state.experiments[("ns-gauge", "done")] = {"metadata": {}, "status": {"completionTime": "2026-01-01T00:00:00Z"}}
    view = state.views.setdefault(key, ClusterView())
    for number, (complete, failed, deleting) in enumerate([(False, False, False), (False, False, False),
                                                           (True, False, False), (False, True, False),
                                                           (False, False, True)]):
        view.jobs[f"j{number}"] = JobSummary(f"j{number}", number, {}, complete, failed, deleting=deleting)
    try:
        assert sample("kubetune_running_trials") == 2
        assert sample("kubetune_running_experiments") == 1
    finally:
        state.experiments.pop(key)
        state.experiments.pop(("ns-gauge", "done"))
        state.views.pop(key)


def test_served_on_its_port_in_the_text_format() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> tuple[int, str, str]:
        runner = await P.serve(port)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    return resp.status, resp.headers["Content-Type"], await resp.text()
        finally:
            await runner.cleanup()

    status, content_type, text = asyncio.run(main())
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"kubetune_reconcile_seconds", "kubetune_trials_created", "process_cpu_seconds"} <= names
