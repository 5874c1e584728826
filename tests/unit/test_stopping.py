"""Stopping criteria beside maxTrials and the target: no improvement for N trials, a wall-clock budget, a per-trial
time limit. The plan's decisions on hand-made trial sequences with known stop points, the incremental plan against
the plan over every trial, every algorithm in a simulated run, and ``kubetune run`` with real processes (counted
by the pids they write)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kubetune.engine import SAMPLERS
from kubetune.k8s.jobs import build_job
from kubetune.k8s.reconciler import ClusterState, ExperimentWorker, Timing
from kubetune.k8s.status import elapsed_seconds
from kubetune.local.runner import RunResult
from kubetune.plan import History, Outcome, Outcomes, make_plan, without_improvement
from kubetune.spec import ExperimentSpec, trial_time_limit
from kubetune.trials import Reason, Trial, TrialState

S, F, P, C = TrialState.SUCCEEDED, TrialState.FAILED, TrialState.PRUNED, TrialState.CANCELED


def make_spec(goal: str = "maximize", *, trials: int | None = None, relative: float = 0.0,
              duration: int | None = None, max_trials: int = 100, parallel: int = 1, **extra: Any) -> ExperimentSpec:
    stopping: dict[str, Any] = {}
    if trials is not None:
        stopping["noImprovement"] = {"trials": trials, "minRelativeImprovement": relative}
    if duration is not None:
        stopping["maxDurationSeconds"] = duration
    return ExperimentSpec.model_validate({
        "objective": {"metric": "m", "goal": goal},
        "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1}],
        "maxTrials": max_trials,
        "parallelTrials": parallel,
        "maxFailedTrials": 1000,
        **({"stopping": stopping} if stopping else {}),
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
        **extra,
    })


def trials_of(seq: Sequence[tuple[TrialState, float | None]]) -> list[Trial]:
    """Finished trials numbered 0, 1, ... with the given states and objective values."""
    return [Trial(i, {"x": i / 1000}, state, metrics={} if v is None else {"m": v}) for i, (state, v) in
            enumerate(seq)]


# ------------------------------------------------------------------------------------------------- no improvement

KNOWN: list[tuple[str, str, float, list[tuple[TrialState, float | None]], int]] = [
    # (id, goal, minRelativeImprovement, trials in number order, trials in a row without improvement)
    ("max-best-early", "maximize", 0.0, [(S, 0.1), (S, 0.5), (S, 0.4), (S, 0.3), (S, 0.2)], 3),
    ("max-equal-is-no-improvement", "maximize", 0.0, [(S, 0.5), (S, 0.5), (S, 0.5)], 2),
    ("max-last-improves", "maximize", 0.0, [(S, 0.5), (S, 0.4), (S, 0.6)], 0),
    ("min-best-early", "minimize", 0.0, [(S, 3.0), (S, 1.0), (S, 2.0), (S, 1.5)], 2),
    # margin 10% of |r|: from r = -2.0, minimize needs v < -2.2; -2.1 is not enough, -2.3 is
    ("min-negative-margin", "minimize", 0.1, [(S, -2.0), (S, -2.1), (S, -2.15), (S, -2.3)], 0),
    ("min-negative-margin-missed", "minimize", 0.1, [(S, -2.0), (S, -2.1), (S, -2.19)], 2),
    # maximize from r = -2.0 with 10%: needs v > -1.8
    ("max-negative-margin", "maximize", 0.1, [(S, -2.0), (S, -1.85), (S, -1.79)], 0),
    ("max-negative-margin-missed", "maximize", 0.1, [(S, -2.0), (S, -1.85), (S, -1.81)], 2),
    # the reference is the last trial that improved, not the best so far: a creep of steps below the margin
    # improves once it adds up (1.0012 > 1.0 * 1.001), though 1.0012 < 1.0006 * 1.001
    ("creep-adds-up", "maximize", 0.001, [(S, 1.0), (S, 1.0006), (S, 1.0012)], 0),
    ("creep-below-margin", "maximize", 0.001, [(S, 1.0), (S, 1.0006), (S, 1.0009)], 2),
    # near 0 the margin is relative to |r|: from r = 0 any strictly better value improves
    ("zero-reference", "minimize", 0.5, [(S, 0.0), (S, -1e-12)], 0),
    ("zero-reference-equal", "minimize", 0.5, [(S, 0.0), (S, 0.0), (S, 1e-12)], 2),
    ("tiny-reference", "minimize", 0.5, [(S, 1e-9), (S, 0.6e-9), (S, 0.4e-9)], 0),  # 0.4e-9 < 0.5e-9
    ("tiny-reference-missed", "minimize", 0.5, [(S, 1e-9), (S, 0.6e-9), (S, 0.55e-9)], 2),
    # Canceled trials are not counted; Failed and Pruned are
    ("canceled-not-counted", "maximize", 0.0, [(S, 0.9), (C, None), (S, 0.1), (C, None), (S, 0.2)], 2),
    ("failed-and-pruned-counted", "maximize", 0.0, [(S, 0.9), (F, None), (P, None), (S, 0.1)], 3),
    # before any success every counted trial is without improvement; the first success improves
    ("no-success-yet", "maximize", 0.5, [(F, None), (P, None), (C, None), (F, None)], 3),
    ("first-success-improves", "maximize", 0.5, [(F, None), (P, None), (S, -5.0)], 0),
    ("succeeded-without-value", "maximize", 0.0, [(S, 1.0), (S, None)], 1),
]


@pytest.mark.parametrize("goal, relative, seq, expected", [k[1:] for k in KNOWN], ids=[k[0] for k in KNOWN])
def test_trials_without_improvement_known_answers(goal: str, relative: float,
                                                  seq: list[tuple[TrialState, float | None]], expected: int) -> None:
    spec = make_spec(goal, trials=1000, relative=relative)
    trials = trials_of(seq)
    assert without_improvement(spec, trials) == expected
    assert History(spec, "e", reversed(trials)).without_improvement == expected  # finished in any order


def test_counted_in_number_order_not_finishing_order() -> None:
    """A lower-numbered trial that finishes last and improves moves the count to the trials numbered after it."""
    spec = make_spec(trials=1000)
    trials = trials_of([(S, 0.5), (S, 0.9), (S, 0.1), (S, 0.2), (S, 0.3)])
    history = History(spec, "e", [trials[0], *trials[2:]])
    assert history.without_improvement == 3  # 2, 3, 4 after trial 0
    history.add(trials[1])  # finishes last, numbered second, improves
    assert history.without_improvement == 3  # still 2, 3, 4, now after trial 1
    history.add(Trial(1, trials[1].params, S, metrics={"m": 0.1}))  # the record replaced: no improvement
    assert history.without_improvement == 4


def _brute(goal: str, relative: float, seq: Sequence[tuple[TrialState, float | None]]) -> int:
    """The count by a second formulation: the chain of improving trials, then what follows its last member."""
    counted = [(i, s, v) for i, (s, v) in enumerate(seq) if s is not C]
    chain: list[tuple[int, float]] = []
    for i, s, v in counted:
        if s is not S or v is None:
            continue
        if not chain:
            chain.append((i, v))
            continue
        r = chain[-1][1]
        # the documented inequality, as floats compare it (v > r + f|r| or v < r - f|r|; r - v > f|r| would round
        # differently: 1 - (-6e-246) is 1.0)
        if (v > r + relative * abs(r)) if goal == "maximize" else (v < r - relative * abs(r)):
            chain.append((i, v))
    last = chain[-1][0] if chain else -1
    return sum(1 for i, _s, _v in counted if i > last)


_states = st.sampled_from([S, S, S, F, P, C])
_values = st.one_of(st.floats(-3, 3, allow_nan=False), st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-300]))


@settings(max_examples=200, deadline=None)
@given(goal=st.sampled_from(["maximize", "minimize"]), relative=st.sampled_from([0.0, 0.001, 0.1, 1.0]),
       seq=st.lists(st.tuples(_states, _values), max_size=30), order=st.randoms(use_true_random=False))
@example(goal="minimize", relative=1.0, seq=[(S, 1.0), (S, -5.97467520383339e-246)], order=random.Random(0))
def test_incremental_count_equals_count_over_every_trial(goal: str, relative: float,
                                                         seq: list[tuple[TrialState, float]], order: Any) -> None:
    spec = make_spec(goal, trials=1000, relative=relative)
    trials = trials_of(seq)
    expected = _brute(goal, relative, seq)
    assert without_improvement(spec, trials) == expected
    shuffled = list(trials)
    order.shuffle(shuffled)
    history = History(spec, "e")
    for t in shuffled:
        history.add(t)
    assert history.without_improvement == expected


def test_stall_holds_new_trials_until_the_running_ones_finish() -> None:
    spec = make_spec(trials=3, parallel=3)
    done = trials_of([(S, 0.9), (S, 0.1), (S, 0.2), (S, 0.3)])
    running = Trial(4, {"x": 0.4}, TrialState.RUNNING)
    for plan in (make_plan(spec, [*done, running], experiment="e"),
                 make_plan(spec, [running], experiment="e", history=History(spec, "e", done))):
        assert plan.outcome is None and plan.create == [] and plan.stop == []  # no new trial, no stop
    # the running trial finishes without improving: the experiment ends
    ended = make_plan(spec, [*done, Trial(4, {"x": 0.4}, S, metrics={"m": 0.5})], experiment="e")
    assert ended.finished and ended.outcome is not None
    assert (ended.outcome.succeeded, ended.outcome.reason) == (True, Outcomes.NO_IMPROVEMENT)
    assert ended.outcome.message.startswith("4 trials in a row did not improve m (stopping.noImprovement.trials=3)")
    assert ended.outcome.message.endswith("best m=0.9 (trial 0)")
    # it improves instead: the experiment goes on with new trials
    goes_on = make_plan(spec, [*done, Trial(4, {"x": 0.4}, S, metrics={"m": 0.95})], experiment="e")
    assert goes_on.outcome is None and [n.number for n in goes_on.create] == [5, 6, 7]


def test_no_improvement_outcome_without_success_fails() -> None:
    spec = make_spec(trials=2)
    plan = make_plan(spec, trials_of([(P, None), (P, None)]), experiment="e")
    assert plan.finished and plan.outcome == Outcome(False, Outcomes.NO_SUCCESSFUL_TRIALS,
                                                     "none of 2 trials succeeded")


def test_max_trials_wins_when_both_hold() -> None:
    spec = make_spec(trials=2, max_trials=3)
    plan = make_plan(spec, trials_of([(S, 0.9), (S, 0.1), (S, 0.2)]), experiment="e")
    assert plan.outcome is not None and plan.outcome.reason == Outcomes.MAX_TRIALS_REACHED


def test_without_stopping_nothing_changes() -> None:
    spec = make_spec()
    seq = trials_of([(S, 0.9)] + [(S, 0.1)] * 20)
    plan = make_plan(spec, seq, experiment="e", elapsed=10**9)
    assert plan.outcome is None and len(plan.create) == 1 and plan.time_left is None
    assert without_improvement(spec, seq) == 0 and History(spec, "e", seq).without_improvement == 0


def _algorithm_spec(name: str, trials: int) -> ExperimentSpec:
    settings_: dict[str, Any] = {"resourceParameter": "epochs"} if name == "hyperband" else {}
    return ExperimentSpec.model_validate({
        "objective": {"metric": "m", "goal": "minimize"},
        "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1, "step": 0.001},
                       {"name": "epochs", "type": "int", "min": 1, "max": 9}],
        "algorithm": {"name": name, "seed": 3, **({"settings": settings_} if settings_ else {})},
        "maxTrials": 400,
        "stopping": {"noImprovement": {"trials": trials, "minRelativeImprovement": 0.05}},
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    })


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_algorithm_stops_where_the_count_first_reaches_n(name: str) -> None:
    """A simulated run, one trial at a time: it ends with NoImprovement exactly at the first trial after which N
    trials in a row did not improve (the count over every prefix computed the second way), on both plan paths."""
    n = 6
    spec = _algorithm_spec(name, n)
    trials: list[Trial] = []
    history = History(spec, "sim")
    while True:
        plan = make_plan(spec, [], experiment="sim", history=history)
        full = make_plan(spec, trials, experiment="sim")
        assert plan.outcome == full.outcome and plan.create == full.create
        if plan.outcome is not None:
            break
        assert len(plan.create) == 1
        new = plan.create[0]
        value = (float(new.params["x"]) - 0.37) ** 2 + 1.0 / int(new.params["epochs"])
        t = Trial(new.number, new.params, S, metrics={"m": value})
        trials.append(t)
        history.add(t)
    assert plan.outcome.reason == Outcomes.NO_IMPROVEMENT, plan.outcome
    seq: list[tuple[TrialState, float | None]] = [(t.state, t.metrics["m"]) for t in trials]
    counts = [_brute("minimize", 0.05, seq[:k]) for k in range(1, len(seq) + 1)]
    assert counts[-1] == n and all(c < n for c in counts[:-1])


# ------------------------------------------------------------------------------------------------- time limit

def test_time_limit_known_answers() -> None:
    spec = make_spec(duration=60, parallel=2)
    done = trials_of([(S, 0.3)])
    running = Trial(1, {"x": 0.2}, TrialState.RUNNING)
    unstarted = make_plan(spec, [], experiment="e", elapsed=None)
    assert unstarted.outcome is None and len(unstarted.create) == 2 and unstarted.time_left is None
    going = make_plan(spec, [*done, running], experiment="e", elapsed=59.5)
    assert going.outcome is None and going.time_left == pytest.approx(0.5) and len(going.create) == 1
    for plan in (make_plan(spec, [*done, running], experiment="e", elapsed=60.0),
                 make_plan(spec, [running], experiment="e", elapsed=61.0, history=History(spec, "e", done))):
        assert plan.outcome is not None and plan.outcome.reason == Outcomes.TIME_LIMIT_REACHED
        assert plan.outcome.succeeded and plan.create == [] and plan.time_left is None
        # running trials are stopped as Canceled, as when the target is reached
        assert [(s.number, s.state, s.reason) for s in plan.stop] == [(1, C, Reason.EXPERIMENT_FINISHED)]
        assert plan.stop[0].message == "stopped because the experiment finished: TimeLimitReached"
        assert not plan.finished
    canceled = Trial(1, {"x": 0.2}, C, reason=Reason.EXPERIMENT_FINISHED)
    ended = make_plan(spec, [*done, canceled], experiment="e", elapsed=62.0)
    assert ended.finished and ended.outcome is not None
    assert ended.outcome.message == ("the time limit ran out (maxDurationSeconds=60) with 2 trials created; "
                                     "best m=0.3 (trial 0)")
    assert make_plan(spec, [*done, canceled], experiment="e", elapsed=1e6).outcome == ended.outcome  # stays put


def test_time_limit_without_success_fails() -> None:
    spec = make_spec(duration=10)
    plan = make_plan(spec, [Trial(0, {"x": 0.1}, TrialState.RUNNING)], experiment="e", elapsed=10)
    assert plan.outcome == Outcome(False, Outcomes.NO_SUCCESSFUL_TRIALS,
                                   "the time limit ran out (maxDurationSeconds=10) with 1 trials created; "
                                   "none succeeded")
    assert [s.state for s in plan.stop] == [C]


def test_target_and_failures_come_before_the_time_limit() -> None:
    spec = make_spec(duration=10, objective={"metric": "m", "goal": "maximize", "target": 0.5})
    plan = make_plan(spec, trials_of([(S, 0.7)]), experiment="e", elapsed=100)
    assert plan.outcome is not None and plan.outcome.reason == Outcomes.TARGET_REACHED
    spec = make_spec(duration=10, maxFailedTrials=0)
    plan = make_plan(spec, trials_of([(F, None)]), experiment="e", elapsed=100)
    assert plan.outcome is not None and plan.outcome.reason == Outcomes.TOO_MANY_FAILED_TRIALS


def test_new_outcomes_exit_zero_like_max_trials() -> None:
    for reason in (Outcomes.NO_IMPROVEMENT, Outcomes.TIME_LIMIT_REACHED, Outcomes.MAX_TRIALS_REACHED):
        assert RunResult(Outcome(True, reason, ""), [], None, Path(".")).exit_code == 0
    assert RunResult(Outcome(False, Outcomes.NO_SUCCESSFUL_TRIALS, ""), [], None, Path(".")).exit_code == 1


def test_elapsed_from_the_resource() -> None:
    at = datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
    body = {"metadata": {"creationTimestamp": "2026-01-01T11:59:00Z"}, "status": {"startTime": "2026-01-01T12:00:00Z"}}
    assert elapsed_seconds(body, True, at) == 30.0
    no_start = {"metadata": {"creationTimestamp": "2026-01-01T11:59:00Z"}}
    assert elapsed_seconds(no_start, False, at) is None  # no trial yet: the clock has not started
    assert elapsed_seconds(no_start, True, at) == 90.0  # trials, start time not written: the creation time
    assert elapsed_seconds({"metadata": {}, "status": {"startTime": "garbage"}}, True, at) is None
    assert elapsed_seconds(body, True, at - timedelta(hours=1)) == 0.0


def test_worker_wakes_when_the_time_limit_runs_out() -> None:
    """With nothing else happening and a resync far away, the worker reconciles again when the budget ends."""

    class Probe(ExperimentWorker):
        calls: list[float] = []

        async def reconcile(self) -> None:
            self.calls.append(time.monotonic())
            self.time_limit_at = time.monotonic() + 0.2 if len(self.calls) == 1 else None

    async def main() -> list[float]:
        worker = Probe(("ns", "e"), ClusterState(), timing=Timing(resync=3600))
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 30
        while len(worker.calls) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return worker.calls

    calls = asyncio.run(main())
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.2


def test_operator_restart_keeps_the_time_budget_with_an_in_memory_api() -> None:
    """The reconciler over the in-memory API (tests/support/fake_api.py; the real control plane is
    tests/integration/test_stopping_cluster.py): the budget counts from status.startTime, so a restarted operator
    whose experiment started long ago ends it at once: running trials Canceled, no new Job."""
    from tests.unit.test_reconciler_faults import Harness, SteppedReconciler, experiment

    body = experiment(max_trials=40, parallel=3, stopping={"maxDurationSeconds": 3600}, trialTimeoutSeconds=900)
    h = Harness(body, seed=5, lag=False, run_ticks=(50, 60))  # trials that run long

    async def go() -> None:
        for _ in range(6):
            await h.step()
        status = h.fake.status()
        assert status["startTime"] and "completionTime" not in status and h.fake.running() == 3
        assert all(job["spec"]["activeDeadlineSeconds"] == 900 for job in h.fake.jobs.values())
        with h.fake.lock:  # as if the experiment had started two hours before this operator's start
            assert h.fake.experiment is not None
            h.fake.experiment["status"]["startTime"] = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
        h.reconciler = SteppedReconciler(h.reconciler.api_factory)
        h.fake.relist()
        await h.run(20)

    asyncio.run(go())
    assert h.finished()
    conditions = {c["type"]: c for c in h.fake.status()["conditions"]}
    assert (conditions["Succeeded"]["status"], conditions["Succeeded"]["reason"]) == ("False", "NoSuccessfulTrials")
    assert conditions["Succeeded"]["message"].startswith("the time limit ran out (maxDurationSeconds=3600)")
    records = h.fake.records()
    assert sorted(records) == [0, 1, 2]
    assert {(r["state"], r["reason"]) for r in records.values()} == {("Canceled", "ExperimentFinished")}
    assert sum(h.fake.ledger.creations.values()) == 3  # no Job after the restart


# ------------------------------------------------------------------------------------------------- trial time limit

def _with_template(job: dict[str, Any], **extra: Any) -> ExperimentSpec:
    spec = make_spec(**extra)
    return spec.model_copy(update={"trial_template": spec.trial_template.model_copy(
        update={"spec": {**spec.trial_template.spec, **job}})})


@pytest.mark.parametrize("timeout, template, expected", [
    (30, None, (30, "trialTimeoutSeconds")),
    (30, 60, (30, "trialTimeoutSeconds")),
    (30, 30, (30, "trialTimeoutSeconds")),
    (30, 10, (10, "activeDeadlineSeconds")),
    (None, 10, (10, "activeDeadlineSeconds")),
    (None, None, None),
])
def test_trial_time_limit_is_the_smaller_one(timeout: int | None, template: int | None,
                                            expected: tuple[int, str] | None) -> None:
    spec = _with_template({"activeDeadlineSeconds": template} if template else {},
                          **({"trialTimeoutSeconds": timeout} if timeout else {}))
    assert trial_time_limit(spec) == expected
    job = build_job({"metadata": {"name": "e", "namespace": "ns", "uid": "u"}}, spec, 3, {"x": 0.5})
    assert job["spec"].get("activeDeadlineSeconds") == (expected[0] if expected else None)


# ------------------------------------------------------------------------------------------------- kubetune run

TRIAL = """
    import os, signal, subprocess, sys, time
    import kubetune_trial as kt
    n = int(sys.argv[1])
    with open(os.environ["LAUNCHES"], "a") as f:
        f.write(f"{n} {os.getpid()}\\n")
    values, sleeps = VALUES, SLEEPS
    if IGNORE_TERM:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sleeps.get(n):
        child = subprocess.Popen(["sleep", "300"])
        with open(os.environ["LAUNCHES"] + ".children", "a") as f:
            f.write(f"{child.pid}\\n")
        kt.report(step=0, m=values[n])
        time.sleep(sleeps[n])
    kt.report(m=values[n])
"""


def write_run(tmp_path: Path, values: list[float], *, sleeps: dict[int, float] | None = None,
              ignore_term: bool = False, job: dict[str, Any] | None = None, **spec: Any) -> Path:
    script = textwrap.dedent(TRIAL).replace("VALUES", repr(dict(enumerate(values))))
    script = script.replace("SLEEPS", repr(sleeps or {})).replace("IGNORE_TERM", repr(ignore_term))
    (tmp_path / "trial.py").write_text(script)
    doc = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningExperiment",
        "metadata": {"name": "stop"},
        "spec": {
            "objective": {"metric": "m", "goal": "maximize"},
            # the grid takes n = 0, 1, 2, ... in order: trial k runs with n = k
            "parameters": [{"name": "n", "type": "int", "min": 0, "max": len(values) - 1}],
            "algorithm": {"name": "grid"},
            "maxTrials": len(values),
            "parallelTrials": 1,
            "trialTemplate": {"spec": {**(job or {}), "template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "trial", "image": "unused:1",
                                "command": ["python", str(tmp_path / "trial.py"), "${params.n}"]}],
            }}}},
            **spec,
        },
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAUNCHES": str(tmp_path / "launches")}
    return subprocess.run([sys.executable, "-m", "kubetune", "run", str(tmp_path / "exp.yaml"), "--quiet",
                           "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def launches(tmp_path: Path, suffix: str = "") -> list[list[int]]:
    path = tmp_path / f"launches{suffix}"
    return [[int(x) for x in line.split()] for line in path.read_text().splitlines()] if path.exists() else []


def rows(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "out" / "trials.jsonl").read_text().splitlines()]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_run_stops_when_n_trials_do_not_improve(tmp_path: Path) -> None:
    # reference 0.5, then 0.9 (improves by more than 2%), then 0.91, 0.905, 0.8 do not: the third ends the run
    write_run(tmp_path, [0.5, 0.9, 0.91, 0.905, 0.8, 0.99, 0.99, 0.99],
              stopping={"noImprovement": {"trials": 3, "minRelativeImprovement": 0.02}})
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    assert [n for n, _pid in launches(tmp_path)] == [0, 1, 2, 3, 4]  # processes really started
    assert "experiment succeeded: NoImprovement: 3 trials in a row did not improve m by more than 0.02" in r.stderr
    assert "best m=0.91 (trial 2)" in r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["outcome"]["reason"] == "NoImprovement"


def test_run_stops_at_the_time_limit_and_cancels_the_running_trial(tmp_path: Path) -> None:
    write_run(tmp_path, [0.5, 0.6, 0.7, 0.8], sleeps={1: 300}, stopping={"maxDurationSeconds": 4})
    started = time.monotonic()
    r = run(tmp_path)
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    assert 4 <= took < 60
    assert [n for n, _pid in launches(tmp_path)] == [0, 1]
    assert "experiment succeeded: TimeLimitReached: the time limit ran out" in r.stderr
    states = [(t["number"], t["state"], t["reason"]) for t in rows(tmp_path)]
    assert states == [(0, "Succeeded", "Completed"), (1, "Canceled", "ExperimentFinished")]
    assert all(gone(pid) for _n, pid in launches(tmp_path))
    assert all(gone(pid) for [pid] in launches(tmp_path, ".children"))


def test_resumed_run_keeps_its_time_budget(tmp_path: Path) -> None:
    write_run(tmp_path, [0.5, 0.6, 0.7, 0.8], stopping={"maxDurationSeconds": 2})
    first = run(tmp_path, "-n", "1")
    assert first.returncode == 0, first.stderr
    assert [n for n, _ in launches(tmp_path)] == [0]
    [row] = rows(tmp_path)
    start = datetime.fromisoformat(row["start_time"].replace("Z", "+00:00"))
    while datetime.now(timezone.utc) - start < timedelta(seconds=2.5):
        time.sleep(0.1)
    resumed = run(tmp_path, "-n", "4")  # the budget counts from trial 0's start: it ran out before this run
    assert resumed.returncode == 0, resumed.stderr
    assert "experiment succeeded: TimeLimitReached" in resumed.stderr
    assert [n for n, _ in launches(tmp_path)] == [0]  # no new process
    # a larger budget (stopping may change on resume) lets the same journal go on
    write_run(tmp_path, [0.5, 0.6, 0.7, 0.8], stopping={"maxDurationSeconds": 3600})
    more = run(tmp_path, "-n", "4")
    assert more.returncode == 0, more.stderr
    assert "MaxTrialsReached" in more.stderr
    assert [n for n, _ in launches(tmp_path)] == [0, 1, 2, 3]


def test_trial_timeout_kills_the_process_group(tmp_path: Path) -> None:
    # the trial ignores SIGTERM and has a child: both end (SIGKILL after the 1 s grace); the template's
    # activeDeadlineSeconds is larger, so trialTimeoutSeconds is the limit
    write_run(tmp_path, [0.5, 0.6], sleeps={0: 300}, ignore_term=True, job={"activeDeadlineSeconds": 120},
              trialTimeoutSeconds=1, maxTrials=1)
    started = time.monotonic()
    r = run(tmp_path)
    assert time.monotonic() - started < 60
    assert r.returncode == 1  # the only trial failed
    assert "experiment failed: NoSuccessfulTrials" in r.stderr
    [t] = rows(tmp_path)
    assert (t["state"], t["reason"], t["message"]) == (
        "Failed", "DeadlineExceeded", "the trial ran longer than trialTimeoutSeconds=1s")
    assert t["metrics"] == {"m": 0.5}  # what it reported before the limit is kept
    [[_n, pid]] = launches(tmp_path)
    [[child]] = launches(tmp_path, ".children")
    assert gone(pid) and gone(child)


def test_example_ends_where_the_count_first_reaches_its_trials(tmp_path: Path) -> None:
    """examples/digits-svm-stopping.yaml as shipped, one trial at a time (so the suggestions are deterministic):
    it ends with NoImprovement at the first trial after which 8 in a row did not improve by more than 0.1 %."""
    example = Path(__file__).resolve().parents[2] / "examples" / "digits-svm-stopping.yaml"
    r = subprocess.run([sys.executable, "-m", "kubetune", "run", str(example), "-p", "1", "--quiet",
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "experiment succeeded: NoImprovement: 8 trials in a row did not improve accuracy" in r.stderr
    seq = [(TrialState(t["state"]), t["metrics"].get("accuracy")) for t in rows(tmp_path)]
    assert all(state is S for state, _ in seq)
    counts = [_brute("maximize", 0.001, seq[:k]) for k in range(1, len(seq) + 1)]
    assert counts[-1] == 8 and all(c < 8 for c in counts[:-1])
