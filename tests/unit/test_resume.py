"""Hyperband promotions that resume from the promoted trial's checkpoint (``spec.checkpoints``, kubetune/resume.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetune.plan import History, make_plan
from kubetune.spec import ExperimentSpec
from kubetune.trials import Lineage, Trial, TrialState
from tests.support.local_run import run_local

ROOT = Path(__file__).resolve().parents[2]


def _spec(checkpoints: bool = True, **over: Any) -> ExperimentSpec:
    doc = yaml.safe_load("""
objective: {metric: q, goal: maximize}
parameters:
  - {name: x, type: float, min: 0, max: 1}
  - {name: y, type: int, min: 0, max: 5}
  - {name: epochs, type: int, min: 1, max: 27}
algorithm: {name: hyperband, seed: 5, settings: {resourceParameter: epochs}}
maxTrials: 60
parallelTrials: 3
trialTemplate: {spec: {template: {spec: {containers: [{name: t, image: x, command: [run]}]}}}}
""")
    if checkpoints:
        doc["checkpoints"] = {"persistentVolumeClaim": "ck"}
    doc.update(over)
    return ExperimentSpec.model_validate(doc)


def _quality(params: dict[str, Any]) -> float:
    return float(params["x"]) * (1 + int(params["y"])) * (1 - 1 / (1 + int(params["epochs"])))


def drive(spec: ExperimentSpec, order: list[int] | None = None, fail: set[int] = frozenset(),
          replay: bool = False) -> list[Trial]:
    """Run the experiment to its end: each round one active trial (chosen by ``order``) finishes. With ``replay``
    every plan is made from the stored records of all trials (a restarted operator) and checked against the one an
    incremental History gives."""
    trials: list[Trial] = []
    history = History(spec, "e")
    order = order or [0]
    for rnd in range(10_000):
        active = [t for t in trials if t.active]
        plan = make_plan(spec, active, experiment="e", history=history)
        if replay:
            fresh = make_plan(spec, [Trial.from_record(t.to_record()) for t in trials], experiment="e")
            assert fresh.create == plan.create
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
            t.state, t.metrics = TrialState.SUCCEEDED, {"q": _quality(t.params)}
        history.add(t)
    raise AssertionError("the experiment did not end")


def config(t: Trial) -> tuple[Any, ...]:
    return tuple(sorted((k, v) for k, v in t.params.items() if k != "epochs"))


def check_resumes(trials: list[Trial]) -> None:
    """Brute force over the trials of each configuration, in the order of their resource: every trial after a
    configuration's first restores the checkpoint of the one before it (which succeeded), from its resource to its
    own; no finished trial is restored twice; so the steps trained per configuration are its largest resource."""
    by_config: dict[tuple[Any, ...], list[Trial]] = defaultdict(list)
    for t in trials:
        by_config[config(t)].append(t)
    parents: list[int] = []
    for ts in by_config.values():
        ts.sort(key=lambda t: int(t.params["epochs"]))
        assert ts[0].lineage is None  # a configuration's first trial starts afresh
        for prev, t in zip(ts, ts[1:]):
            assert prev.state is TrialState.SUCCEEDED and int(prev.params["epochs"]) < int(t.params["epochs"])
            assert t.lineage == Lineage(ts[0].number, prev.number, int(prev.params["epochs"]),
                                        int(t.params["epochs"]))
            parents.append(prev.number)
        trained = int(ts[0].params["epochs"]) + sum(t.lineage.end - t.lineage.start for t in ts[1:])  # type: ignore
        assert trained == max(int(t.params["epochs"]) for t in ts)
    assert len(parents) == len(set(parents))


def test_promotions_restore_the_promoted_trial_and_train_only_the_new_steps() -> None:
    trials = drive(_spec())
    check_resumes(trials)
    resumed = [t for t in trials if t.lineage is not None]
    assert len(resumed) >= 8  # promotions happened, to every rung above the first
    assert {t.lineage.end for t in resumed} == {3, 9, 27}  # type: ignore[union-attr]
    # compute: epochs trained with resumes against the retraining run of the same experiment
    resumed_epochs = sum(t.lineage.end - t.lineage.start if t.lineage else int(t.params["epochs"]) for t in trials)
    retrained_epochs = sum(int(t.params["epochs"]) for t in drive(_spec(checkpoints=False)))
    assert resumed_epochs < retrained_epochs


def test_without_checkpoints_nothing_changes_and_with_them_the_suggestions_are_the_same() -> None:
    plain = drive(_spec(checkpoints=False))
    assert all(t.lineage is None for t in plain)
    resumed = drive(_spec())
    assert [(t.number, t.params) for t in plain] == [(t.number, t.params) for t in resumed]


def test_a_failed_trial_is_never_restored_and_its_configuration_not_promoted() -> None:
    trials = drive(_spec(), fail={0, 4, 7, 11})
    check_resumes(trials)
    assert not any(t.lineage is not None and t.lineage.parent in {0, 4, 7, 11} for t in trials)


@settings(max_examples=15, deadline=None)
@given(order=st.lists(st.integers(0, 5), min_size=1, max_size=6), parallel=st.integers(1, 5))
def test_any_finishing_order_resumes_each_trial_at_most_once_and_a_replay_decides_the_same(
        order: list[int], parallel: int) -> None:
    trials = drive(_spec(parallelTrials=parallel, maxTrials=40), order=order, replay=True)
    check_resumes(trials)


def test_the_lineage_is_recorded_and_the_trial_gets_the_restore_env() -> None:
    from kubetune.checkpoints import checkpoint_env
    from kubetune.k8s.jobs import build_job

    trials = drive(_spec())
    t = next(t for t in trials if t.lineage is not None)
    assert Trial.from_record(json.loads(json.dumps(t.to_record()))).lineage == t.lineage
    assert t.lineage is not None and t.lineage.parent is not None
    env = checkpoint_env("/c/e", "e", t.number, t.lineage)
    assert env["KUBETUNE_RESTORE_DIR"] == f"/c/e/e-{t.lineage.parent:04d}"
    assert env["KUBETUNE_RESTORE_STEP"] == str(t.lineage.start)
    assert env["KUBETUNE_END_STEP"] == str(t.params["epochs"])
    body = {"metadata": {"name": "e", "namespace": "ns", "uid": "u"}}
    job = build_job(body, _spec(), t.number, t.params, t.lineage)
    got = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert got["KUBETUNE_RESTORE_DIR"] == f"/checkpoints/e/e-{t.lineage.parent:04d}"
    assert got["KUBETUNE_RESTORE_STEP"] == str(t.lineage.start)


# -- kubetune run: a trial that counts the steps it really trains ---------------------------------------------------


TRIAL = r"""
import json, os, sys
import kubetune_trial as kt
p = kt.params()
epochs = int(p["epochs"])
start, state = 0, {"steps": []}
if kt.restore_dir():
    with open(os.path.join(kt.restore_dir(), "state.json")) as f:
        state = json.load(f)
    start = kt.restore_step()
    if state["steps"][-1] != start:
        sys.exit(3)  # the checkpoint does not hold the step it is said to
key = f'{p["x"]!r}/{p["y"]}'
with open(os.environ["STEP_LOG"], "a") as log:
    for step in range(start + 1, epochs + 1):
        state["steps"].append(step)
        log.write(json.dumps([key, step, os.getpid()]) + "\n")
        log.flush()
        with open(os.path.join(kt.checkpoint_dir(), "state.json"), "w") as f:
            json.dump(state, f)
        kt.report(step=step, q=float(p["x"]) * (1 + int(p["y"])) * step / (1 + step))
kt.report(q=float(p["x"]) * (1 + int(p["y"])) * epochs / (1 + epochs))
"""


@pytest.mark.timeout(300)
def test_kubetune_run_trains_no_step_of_a_configuration_twice(tmp_path: Path) -> None:
    (tmp_path / "trial.py").write_text(TRIAL)
    doc = {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": "hb"},
        "spec": {
            "objective": {"metric": "q", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1},
                           {"name": "y", "type": "int", "min": 0, "max": 5},
                           {"name": "epochs", "type": "int", "min": 1, "max": 9}],
            "algorithm": {"name": "hyperband", "seed": 2, "settings": {"resourceParameter": "epochs"}},
            "checkpoints": {"persistentVolumeClaim": "ck"},
            "maxTrials": 16, "parallelTrials": 2,
            "trialTemplate": {"spec": {"template": {"spec": {"containers": [
                {"name": "t", "image": "x", "command": [sys.executable, str(tmp_path / "trial.py")]}]}}}},
        },
    }
    log = tmp_path / "steps.jsonl"
    proc, out = run_local(tmp_path, doc, timeout=240, STEP_LOG=str(log))
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(records) == 16 and all(r["state"] == "Succeeded" for r in records)  # a wrong restore exits 3
    trials = [Trial.from_record(r) for r in records]
    check_resumes(trials)
    assert any(t.lineage is not None for t in trials)
    # what the processes really trained: no (configuration, step) twice, and each configuration's steps 1..max
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    trained = [(key, step) for key, step, _ in lines]
    assert len(trained) == len(set(trained))
    by_config: dict[str, list[int]] = defaultdict(list)
    for key, step in trained:
        by_config[key].append(step)
    top = defaultdict(int)
    for t in trials:
        key = f'{t.params["x"]!r}/{t.params["y"]}'
        top[key] = max(top[key], int(t.params["epochs"]))
    assert {k: sorted(v) for k, v in by_config.items()} == {k: list(range(1, m + 1)) for k, m in top.items()}
    # the records' curves start right after the restored step
    for r in records:
        start = r["lineage"]["start"] if "lineage" in r else 0
        assert [p[0] for p in r["curve"]] == list(range(start + 1, r["params"]["epochs"] + 1))


# -- the benchmark ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_quick_benchmark_prints_a_well_formed_table() -> None:
    from benchmarks import resume as bench

    cfg = bench.config_for(quick=True)
    results = bench.run(cfg)
    assert [r.method for r in results] == bench.METHODS
    budget = cfg.trials * cfg.max_epochs
    for r in results:
        assert budget <= r.epochs <= budget + cfg.parallel and r.trials >= 1 and 0 <= r.best_val <= 1
    retrain, resume = results
    assert retrain.resumed == 0 and resume.resumed >= 1
    lines = bench.table(results, "mlp-digits").splitlines()
    assert lines[0] == "| " + " | ".join(bench.HEADER) + " |" and len(lines) == 4
    assert [row.split("|")[1].strip() for row in lines[2:]] == bench.METHODS
    assert lines[2].split("|")[4].strip() == "1/1"  # the retraining run reaches its own final accuracy


@pytest.mark.timeout(300)
def test_the_example_resumes_models_and_ends_where_training_from_scratch_ends(tmp_path: Path) -> None:
    """examples/digits-mlp-hyperband-resume.yaml, its budget cut to 8 trials one at a time: the promoted trials
    unpickle their parent's model and train on; their accuracy is the one a from-scratch run of the same
    configuration reaches (the model's random state travels with it)."""
    doc = yaml.safe_load((ROOT / "examples" / "digits-mlp-hyperband-resume.yaml").read_text())
    doc["spec"]["maxTrials"], doc["spec"]["parallelTrials"] = 8, 1
    proc, out = run_local(tmp_path, doc, timeout=280)
    trials = [Trial.from_record(json.loads(line)) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 8 and all(t.state is TrialState.SUCCEEDED for t in trials)  # a wrong restore exits 3
    check_resumes(trials)
    resumed = [t for t in trials if t.lineage is not None]
    assert resumed
    t = resumed[0]
    assert t.lineage is not None and [s for s, _ in t.curve] == list(range(t.lineage.start + 1, t.lineage.end + 1))
    scratch = subprocess.run(
        [sys.executable, "-m", "kubetune_trial.examples.digits_mlp", "--epochs", str(t.params["epochs"]),
         "--lr", repr(t.params["lr"]), "--alpha", repr(t.params["alpha"]), "--hidden", str(t.params["hidden"])],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("KUBETUNE_")},
             "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT / "trial_image")])},
        capture_output=True, text=True,
        timeout=120)
    assert scratch.returncode == 0, scratch.stderr
    assert f"accuracy={t.metrics['accuracy']:.4f} after {t.params['epochs']} epochs" in scratch.stdout
