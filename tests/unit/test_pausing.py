"""Successive halving that pauses and resumes trials: ``earlyStopping: {rule: asha}`` with ``spec.checkpoints``
(kubetune/pausing.py), through the plan both backends apply."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetune.pausing import ladder, paused_reason, settle
from kubetune.plan import History, make_plan
from kubetune.spec import ExperimentSpec
from kubetune.trials import Lineage, Trial, TrialState
from kubetune.validation import validate_document
from tests.support.local_run import run_local

ROOT = Path(__file__).resolve().parents[2]


def _spec(checkpoints: bool = True, stopping: dict[str, Any] | None = None, **over: Any) -> ExperimentSpec:
    doc = yaml.safe_load("""
objective: {metric: q, goal: maximize}
parameters:
  - {name: x, type: float, min: 0, max: 1}
algorithm: {name: tpe, seed: 5}
maxTrials: 40
parallelTrials: 3
trialTemplate: {spec: {template: {spec: {containers: [{name: t, image: x, command: [run]}]}}}}
""")
    doc["earlyStopping"] = {"rule": "asha", "minTrials": 1, "minResource": 1, "reductionFactor": 3,
                            "maxResource": 9, **(stopping or {})}
    if checkpoints:
        doc["checkpoints"] = {"persistentVolumeClaim": "ck"}
    doc.update(over)
    return ExperimentSpec.model_validate(doc)


def quality(x: float, step: int) -> float:
    """Better closer to x = 0.3 at every step, and better with more steps."""
    return -((x - 0.3) ** 2) * 9 / step


def train(spec: ExperimentSpec, t: Trial) -> None:
    """What a trial that honours KUBETUNE_END_STEP does: trains its segment's steps, reports each, ends."""
    assert t.lineage is not None
    x = float(t.params["x"])
    t.curve = [(s, quality(x, s)) for s in range(t.lineage.start + 1, t.lineage.end + 1)]
    t.metrics = {"q": quality(x, t.lineage.end)}
    t.state = TrialState.SUCCEEDED
    settle(spec, t)


def drive(spec: ExperimentSpec, order: list[int] | None = None, fail: frozenset[int] = frozenset(),
          replay: bool = False) -> list[Trial]:
    """Run the experiment to its end, one active trial (chosen by ``order``) finishing per round. With ``replay``
    every plan is also made from the stored records of all trials (a restarted operator) and must be the same."""
    trials: list[Trial] = []
    history = History(spec, "e")
    order = order or [0]
    for rnd in range(10_000):
        active = [t for t in trials if t.active]
        plan = make_plan(spec, active, experiment="e", history=history)
        if replay:
            fresh = make_plan(spec, [Trial.from_record(json.loads(json.dumps(t.to_record()))) for t in trials],
                              experiment="e")
            assert fresh.create == plan.create and fresh.counts == plan.counts
        assert not plan.stop  # nothing is pruned: trials end at their rungs themselves
        for n in plan.create:
            trials.append(Trial(n.number, dict(n.params), TrialState.RUNNING, lineage=n.lineage))
        active = [t for t in trials if t.active]
        if not active:
            assert plan.finished
            return trials
        t = active[order[rnd % len(order)] % len(active)]
        if t.number in fail:
            t.state = TrialState.FAILED
        else:
            train(spec, t)
        history.add(t)
    raise AssertionError("the experiment did not end")


def chains(trials: list[Trial]) -> dict[int, list[Trial]]:
    """Each configuration's trials (by member), in training order, checked link by link: the first starts afresh
    and trains to the first rung; each next one restores the one before it (Paused), from its end to the next
    rung, with the same parameters; no trial is restored twice; only the last of a chain may be anything but
    Paused."""
    by_member: dict[int, list[Trial]] = defaultdict(list)
    for t in trials:
        assert t.lineage is not None, t
        by_member[t.lineage.member].append(t)
    parents = [t.lineage.parent for t in trials if t.lineage is not None and t.lineage.parent is not None]
    assert len(parents) == len(set(parents))
    for member, chain in by_member.items():
        chain.sort(key=lambda t: t.lineage.start)  # type: ignore[union-attr]
        first = chain[0]
        assert first.number == member and first.lineage is not None and first.lineage.parent is None
        assert first.lineage.start == 0
        for prev, t in zip(chain, chain[1:]):
            assert prev.state is TrialState.PAUSED and t.params == prev.params
            assert t.lineage is not None and prev.lineage is not None
            assert (t.lineage.parent, t.lineage.start) == (prev.number, prev.lineage.end) and t.number > prev.number
        for t in chain[:-1]:
            assert t.state is TrialState.PAUSED
    return by_member


# -- known answers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stopping, expected", [
    ({"minResource": 1, "reductionFactor": 3, "maxResource": 27}, (1, 3, 9, 27)),
    ({"minResource": 1, "reductionFactor": 3, "maxResource": 9}, (1, 3, 9)),
    ({"minResource": 2, "reductionFactor": 2, "maxResource": 10}, (2, 4, 8, 10)),
    ({"minResource": 5, "reductionFactor": 4, "maxResource": 6}, (5, 6)),
    ({"minResource": 1, "reductionFactor": 2, "maxResource": 1_000_000}, (*(2**k for k in range(20)), 1_000_000)),
])
def test_ladder(stopping: dict[str, Any], expected: tuple[int, ...]) -> None:
    assert ladder(_spec(stopping=stopping)) == expected


def test_a_hand_worked_run() -> None:
    """Six given configurations, one trial at a time, rungs 1 and 2 and the end at 4, eta 2: worked out by hand
    from the rule (the best max(1, n // 2) of a rung's paused trials are promoted, higher rungs first)."""
    xs = [0.9, 0.3, 0.45, 0.1, 0.7, 0.35]  # distance to 0.3: 0.6, 0, 0.15, 0.2, 0.4, 0.05
    spec = _spec(stopping={"minResource": 1, "reductionFactor": 2, "maxResource": 4}, parallelTrials=1,
                 maxTrials=10, initialTrials=[{"x": x} for x in xs])
    trials = drive(spec)
    assert [float(t.params["x"]) for t in trials[:6]] == xs
    assert [t.lineage for t in trials[:6]] == [Lineage(n, None, 0, 1) for n in range(6)]
    assert [t.lineage for t in trials[6:]] == [
        Lineage(1, 1, 1, 2),  # rung 0 holds 6: the top 3 are x=0.3 (trial 1), 0.35 (5), 0.45 (2); 1 goes first
        Lineage(1, 6, 2, 4),  # rung 1 holds trial 6 alone: max(1, 0) = 1, so it goes on to the end
        Lineage(5, 5, 1, 2),  # rung 1 has no one left to promote; rung 0's next best
        Lineage(2, 2, 1, 2),  # rung 1 holds 6 and 8: the top 1 is 6, continued already; rung 0's third
    ]
    assert [t.state for t in trials] == [TrialState.PAUSED] * 7 + [TrialState.SUCCEEDED] + [TrialState.PAUSED] * 2
    plan = make_plan(spec, trials, experiment="e")
    assert plan.outcome is not None and plan.outcome.reason == "MaxTrialsReached"
    assert plan.best is not None and plan.best.number == 7  # only a trial that trained to the end is a result
    assert (plan.counts.paused, plan.counts.succeeded, plan.counts.pruned) == (9, 1, 0)
    assert plan.counts.as_status(pausing=True)["paused"] == 9
    assert "paused" not in plan.counts.as_status()


@pytest.mark.parametrize("min_trials, third", [(3, Lineage(1, 1, 1, 3)), (1, Lineage(3, None, 0, 1))])
def test_min_trials_promotes_everyone_while_a_rung_has_fewer(min_trials: int, third: Lineage) -> None:
    """Two trials paused at rung 0, x = 0.3 and 0.9: with minTrials 3 both are promoted (too little evidence to
    hold one back, as the stopping rule lets both continue), better first; with minTrials 1 only the top
    max(1, 2 // 3) = 1, and the next trial is a new configuration."""
    spec = _spec(stopping={"minResource": 1, "reductionFactor": 3, "maxResource": 3, "minTrials": min_trials},
                 parallelTrials=1, maxTrials=4, initialTrials=[{"x": 0.3}, {"x": 0.9}])
    trials = drive(spec)
    assert [t.lineage for t in trials] == [Lineage(0, None, 0, 1), Lineage(1, None, 0, 1), Lineage(0, 0, 1, 3), third]


def test_without_checkpoints_asha_prunes_as_before() -> None:
    spec = _spec(checkpoints=False)
    plan = make_plan(spec, [], experiment="e")
    assert all(n.lineage is None for n in plan.create)
    t = Trial(0, {"x": 0.5}, TrialState.SUCCEEDED, metrics={"q": 1.0}, lineage=Lineage(0, None, 0, 1))
    assert paused_reason(spec, t) is None


def test_a_trial_that_trains_past_its_end_step_is_a_result_not_paused() -> None:
    spec = _spec()
    t = Trial(0, {"x": 0.5}, TrialState.SUCCEEDED, metrics={"q": 1.0}, lineage=Lineage(0, None, 0, 1),
              curve=[(s, 1.0) for s in range(1, 10)])
    settle(spec, t)
    assert t.state is TrialState.SUCCEEDED  # reported step 9 = maxResource: a script that ignores END_STEP
    t = Trial(0, {"x": 0.5}, TrialState.SUCCEEDED, metrics={"q": 1.0}, lineage=Lineage(0, None, 0, 1),
              curve=[(1, 1.0)])
    settle(spec, t)
    assert (t.state, t.reason) == (TrialState.PAUSED, "RungReached") and "rung 0 (step 1)" in t.message
    failed = Trial(1, {"x": 0.5}, TrialState.FAILED, lineage=Lineage(1, None, 0, 1))
    settle(spec, failed)
    assert failed.state is TrialState.FAILED


# -- properties ---------------------------------------------------------------------------------------------------


def test_each_configuration_trains_each_step_once_and_a_promoted_one_trains_to_the_end() -> None:
    spec = _spec()
    trials = drive(spec)
    by_member = chains(trials)
    assert any(len(c) == 3 for c in by_member.values())  # promoted twice, to the end
    assert not any(t.state is TrialState.PRUNED for t in trials)
    for chain in by_member.values():
        trained = [s for t in chain for s, _ in t.curve]
        assert trained == list(range(1, chain[-1].lineage.end + 1))  # type: ignore[union-attr]
    ends = [c[-1] for c in by_member.values() if c[-1].state is TrialState.SUCCEEDED]
    assert ends and all(t.lineage.end == 9 for t in ends)  # type: ignore[union-attr]


@settings(max_examples=25, deadline=None)
@given(order=st.lists(st.integers(0, 5), min_size=1, max_size=6), parallel=st.integers(1, 5),
       eta=st.integers(2, 4), min_trials=st.integers(1, 3), fail=st.sets(st.integers(0, 30), max_size=4))
def test_any_finishing_order_resumes_each_trial_once_and_a_replay_decides_the_same(
        order: list[int], parallel: int, eta: int, min_trials: int, fail: set[int]) -> None:
    spec = _spec(stopping={"reductionFactor": eta, "minTrials": min_trials, "maxResource": 2 * eta * eta},
                 parallelTrials=parallel, maxTrials=30, maxFailedTrials=10)
    trials = drive(spec, order=order, fail=frozenset(fail), replay=True)
    assert len(trials) == 30
    by_member = chains(trials)
    assert not any(t.lineage is not None and t.lineage.parent in fail for t in trials)  # a failure is never resumed
    for chain in by_member.values():
        trained = [s for t in chain for s, _ in t.curve]
        assert trained == sorted(set(trained))  # no step twice


def test_promotions_come_before_new_configurations() -> None:
    """Whenever a plan creates a new configuration, no paused trial was promotable: brute force over the paused
    trials at each plan, by the rule's definition (top max(1, n // eta) of a rung, or all below minTrials)."""
    spec = _spec(parallelTrials=2, maxTrials=40)
    eff = spec.early_stopping.effective  # type: ignore[union-attr]
    steps = ladder(spec)
    trials: list[Trial] = []
    for _ in range(200):
        plan = make_plan(spec, trials, experiment="e")
        continued = {t.lineage.parent for t in trials if t.lineage and t.lineage.parent is not None}
        pending_promotable = 0
        for k in range(len(steps) - 1):
            rung = sorted((t for t in trials if t.state is TrialState.PAUSED and t.lineage.end == steps[k]),  # type: ignore[union-attr]
                          key=lambda t: (-t.metrics["q"], t.number))
            top = len(rung) if len(rung) < eff.min_trials else max(1, len(rung) // eff.reduction_factor)
            pending_promotable += sum(1 for t in rung[:top] if t.number not in continued)
        fresh = [n for n in plan.create if n.lineage is not None and n.lineage.parent is None]
        resumed = [n for n in plan.create if n.lineage is not None and n.lineage.parent is not None]
        assert len(resumed) == min(pending_promotable, len(plan.create))
        if fresh:
            assert len(resumed) == pending_promotable
        for n in plan.create:
            trials.append(Trial(n.number, dict(n.params), TrialState.RUNNING, lineage=n.lineage))
        active = [t for t in trials if t.active]
        if not active:
            break
        train(spec, active[0])
    assert any(t.state is TrialState.SUCCEEDED for t in trials)


# -- the spec -----------------------------------------------------------------------------------------------------


def _problems(**spec: Any) -> str:
    doc = {"apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": "p"},
           "spec": {"objective": {"metric": "q", "goal": "maximize"},
                    "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1},
                                   {"name": "epochs", "type": "int", "min": 1, "max": 9}],
                    "maxTrials": 10,
                    "trialTemplate": {"spec": {"template": {"spec": {"containers": [
                        {"name": "t", "image": "x", "command": ["run"]}]}}}}, **spec}}
    return "\n".join(str(p) for p in validate_document(doc)[1])


def test_the_spec_refuses_pausing_without_max_resource_or_with_hyperband() -> None:
    ck = {"persistentVolumeClaim": "ck"}
    assert "it needs maxResource" in _problems(checkpoints=ck, earlyStopping={"rule": "asha"})
    assert _problems(checkpoints=ck, earlyStopping={"rule": "asha", "maxResource": 9}) == ""
    assert _problems(earlyStopping={"rule": "asha"}) == ""  # pruning asha needs no maxResource
    assert _problems(checkpoints=ck, earlyStopping={"rule": "median"}) == ""
    assert "use one of the two" in _problems(
        checkpoints=ck, earlyStopping={"rule": "asha", "maxResource": 9},
        algorithm={"name": "hyperband", "settings": {"resourceParameter": "epochs"}})


# -- kubetune run: trials that count the steps they really train --------------------------------------------------


TRIAL = r"""
import json, os, sys
import kubetune_trial as kt
p = kt.params()
x = float(p["x"])
end = kt.end_step()
if end is None:
    sys.exit(5)  # every segment is told where to end
start, state = 0, {"x": x, "steps": []}
if kt.restore_dir():
    with open(os.path.join(kt.restore_dir(), "state.json")) as f:
        state = json.load(f)
    start = kt.restore_step()
    if state["steps"][-1] != start or state["x"] != x:
        sys.exit(3)  # the checkpoint does not hold the step (or the configuration) it is said to
with open(os.environ["STEP_LOG"], "a") as log:
    for step in range(start + 1, end + 1):
        state["steps"].append(step)
        log.write(json.dumps([x, step, os.getpid()]) + "\n")
        log.flush()
        with open(os.path.join(kt.checkpoint_dir(), "state.json"), "w") as f:
            json.dump(state, f)
        kt.report(step=step, q=-((x - 0.3) ** 2) * 9 / step)
kt.report(q=-((x - 0.3) ** 2) * 9 / end)
"""


@pytest.mark.timeout(300)
def test_kubetune_run_pauses_and_resumes_and_trains_no_step_twice(tmp_path: Path) -> None:
    (tmp_path / "trial.py").write_text(TRIAL)
    doc = {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": "sha"},
        "spec": {
            "objective": {"metric": "q", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1}],
            "algorithm": {"name": "random", "seed": 3},
            "earlyStopping": {"rule": "asha", "minTrials": 1, "reductionFactor": 3, "maxResource": 9},
            "checkpoints": {"persistentVolumeClaim": "ck"},
            "maxTrials": 16, "parallelTrials": 2,
            "trialTemplate": {"spec": {"template": {"spec": {"containers": [
                {"name": "t", "image": "x", "command": [sys.executable, str(tmp_path / "trial.py")]}]}}}},
        },
    }
    log = tmp_path / "steps.jsonl"
    proc, out = run_local(tmp_path, doc, timeout=240, STEP_LOG=str(log))
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(records) == 16
    states = [r["state"] for r in records]
    assert set(states) <= {"Paused", "Succeeded"} and "Succeeded" in states, states  # a wrong restore exits 3
    trials = [Trial.from_record(r) for r in records]
    by_member = chains(trials)
    assert any(len(c) >= 2 for c in by_member.values())
    # what the processes really trained: 16 processes, no (configuration, step) twice, each chain's steps 1..end
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len({pid for _, _, pid in lines}) == 16
    trained = [(x, step) for x, step, _ in lines]
    assert len(trained) == len(set(trained))
    steps: dict[float, list[int]] = defaultdict(list)
    for x, step in trained:
        steps[x].append(step)
    assert {x: sorted(v) for x, v in steps.items()} == {
        float(c[0].params["x"]): list(range(1, c[-1].lineage.end + 1)) for c in by_member.values()}  # type: ignore
    # the records' curves hold their segment's steps; the CLI shows the Paused ones and the best is a full run
    for t in trials:
        assert [s for s, _ in t.curve] == list(range(t.lineage.start + 1, t.lineage.end + 1))  # type: ignore
    assert "Paused    q=" in proc.stdout + proc.stderr  # the live table shows the state
    best = max((t for t in trials if t.state is TrialState.SUCCEEDED), key=lambda t: t.metrics["q"])
    assert best.lineage is not None and best.lineage.end == 9
    # a paused trial's checkpoint is deleted once the trial that continued it finished: one per configuration left
    kept = sorted(int(d.name.rsplit("-", 1)[1]) for d in (out / "checkpoints").iterdir())
    assert kept == sorted(c[-1].number for c in by_member.values())


@pytest.mark.timeout(300)
def test_the_example_pauses_and_resumes_models(tmp_path: Path) -> None:
    """examples/digits-mlp-asha-pause.yaml cut to 7 trials: the trial script trains to KUBETUNE_END_STEP, a promoted
    trial unpickles its parent's model (exit 3 when it holds another epoch) and trains only the next epochs."""
    doc = yaml.safe_load((ROOT / "examples" / "digits-mlp-asha-pause.yaml").read_text())
    doc["spec"]["maxTrials"], doc["spec"]["parallelTrials"] = 7, 1
    doc["spec"]["earlyStopping"].update(minTrials=1, maxResource=9)
    doc["spec"]["initialTrials"] = [{"lr": 0.01, "alpha": 1e-4, "hidden": 32}, {"lr": 0.0002, "alpha": 1e-4,
                                                                                "hidden": 16}]
    proc, out = run_local(tmp_path, doc, timeout=280)
    trials = [Trial.from_record(json.loads(line)) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 7 and {t.state for t in trials} <= {TrialState.PAUSED, TrialState.SUCCEEDED}
    by_member = chains(trials)
    # the first configuration (lr 0.01) learns faster than lr 0.0002: promoted to 3, then to the end (9)
    assert [t.lineage.end for t in by_member[0]] == [1, 3, 9]  # type: ignore[union-attr]
    assert by_member[0][-1].state is TrialState.SUCCEEDED
    for t in trials:
        assert [s for s, _ in t.curve] == list(range(t.lineage.start + 1, t.lineage.end + 1))  # type: ignore


@pytest.mark.timeout(300)
def test_quick_benchmark_pausing_against_pruning() -> None:
    from benchmarks import resume as bench

    cfg = bench.config_for(quick=True)
    results = bench.run(cfg, family="asha")
    assert [r.method for r in results] == bench.FAMILIES["asha"]
    budget = cfg.trials * cfg.max_epochs
    prune, pause = results
    assert prune.resumed == 0 and pause.resumed >= 1  # only pausing resumes
    for r in results:
        assert budget <= r.epochs <= budget + cfg.parallel and 0 <= r.best_val <= 1
    lines = bench.table(results, "mlp-digits").splitlines()
    assert "reached the pruning run's final accuracy" in lines[0] and len(lines) == 4
    assert [row.split("|")[1].strip() for row in lines[2:]] == bench.FAMILIES["asha"]
    assert lines[2].split("|")[4].strip() == "1/1"  # the pruning run reaches its own final accuracy


def test_no_improvement_counts_no_paused_trial() -> None:
    """stopping.noImprovement over trials that pause: a paused trial is not a result, so a run of paused trials
    (every new configuration pauses at rung 0) never ends the experiment; the results at maxResource count."""
    doc_spec = _spec(stopping={"minResource": 1, "reductionFactor": 3, "maxResource": 3}, parallelTrials=1,
                     maxTrials=12)
    doc = doc_spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc["stopping"] = {"noImprovement": {"trials": 2}}
    spec = ExperimentSpec.model_validate(doc)
    paused = [Trial(n, {"x": 0.1 * n}, TrialState.PAUSED, metrics={"q": -1.0}, lineage=Lineage(n, None, 0, 1))
              for n in range(5)]
    plan = make_plan(spec, paused, experiment="e")
    assert plan.outcome is None and plan.create  # five paused trials in a row: no stall
    done = [*paused, Trial(5, {"x": 0.0}, TrialState.SUCCEEDED, metrics={"q": -2.0},
                           lineage=Lineage(0, 0, 1, 3)),
            Trial(6, {"x": 0.1}, TrialState.SUCCEEDED, metrics={"q": -3.0}, lineage=Lineage(1, 1, 1, 3)),
            Trial(7, {"x": 0.2}, TrialState.SUCCEEDED, metrics={"q": -4.0}, lineage=Lineage(2, 2, 1, 3))]
    plan = make_plan(spec, done, experiment="e")
    assert plan.outcome is not None and plan.outcome.reason == "NoImprovement"  # 6 and 7 did not beat 5
