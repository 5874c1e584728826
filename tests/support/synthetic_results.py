"""Results directories as ``kubetune run`` writes them (its own writers), for trials made up by a test.

``accuracy`` depends strongly on ``lr`` (log scale), weakly on ``layers``, a little on ``opt`` and not at all on
``noise``; some trials report learning curves and are pruned, a few fail.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from kubetune.local.results import Journal, ResultsWriter, journal_identity
from kubetune.plan import Outcome
from kubetune.spec import TuningExperiment
from kubetune.trials import Reason, Trial, TrialState

PARAMETERS = [
    {"name": "lr", "type": "float", "min": 1e-4, "max": 1.0, "scale": "log"},
    {"name": "layers", "type": "int", "min": 1, "max": 8},
    {"name": "opt", "type": "categorical", "values": ["adam", "sgd", "rmsprop"]},
    {"name": "noise", "type": "float", "min": 0.0, "max": 1.0},
]


def experiment(name: str = "synthetic", max_trials: int = 10_000) -> TuningExperiment:
    return TuningExperiment.model_validate({
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "accuracy", "goal": "maximize"}, "additionalMetrics": ["loss"],
            "parameters": PARAMETERS, "algorithm": {"name": "random", "seed": 3}, "maxTrials": max_trials,
            "parallelTrials": 4, "earlyStopping": {"rule": "median"},
            "trialTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "trial", "image": "unused:1", "command": ["true"]}]}}}},
        },
    })


def accuracy(lr: float, layers: int, opt: str) -> float:
    return 0.95 - 0.12 * (math.log10(lr) + 2.0) ** 2 / 4 - 0.01 * abs(layers - 4) / 4 \
        + {"adam": 0.02, "sgd": 0.0, "rmsprop": 0.01}[opt]


def make_trials(n: int, seed: int = 0, curves: bool = True) -> list[Trial]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        params = {"lr": float(10 ** rng.uniform(-4, 0)), "layers": int(rng.integers(1, 9)),
                  "opt": str(rng.choice(["adam", "sgd", "rmsprop"])), "noise": float(rng.random())}
        acc = accuracy(params["lr"], params["layers"], params["opt"])  # type: ignore[arg-type]
        start = f"2026-01-01T00:{(i // 60) % 60:02d}:{i % 60:02d}Z"
        end = f"2026-01-01T01:{(i // 60) % 60:02d}:{i % 60:02d}Z"
        t = Trial(i, params, TrialState.SUCCEEDED, {"accuracy": acc, "loss": 1 - acc}, reason=Reason.COMPLETED,
                  start_time=start, completion_time=end)
        if curves:
            steps = 10
            t.curve = [(s, acc * (1 - math.exp(-(s + 1) / 3))) for s in range(steps)]
            if i % 5 == 3:  # stopped early: a shorter curve, its last report as the metric
                t.state, t.reason, t.message = TrialState.PRUNED, "MedianStop", "below the median at step 4"
                t.curve = t.curve[:5]
                t.metrics = {"accuracy": t.curve[-1][1]}
        if i % 17 == 5:
            t.state, t.reason, t.message, t.metrics, t.curve = (TrialState.FAILED, Reason.ERROR,
                                                                 "exit code 1 <b>not bold</b>", {}, [])
        out.append(t)
    return out


def write_results_dir(out: Path, trials: list[Trial], *, name: str = "synthetic", finished: bool = True,
                      max_trials: int = 10_000, journal: bool = True) -> Path:
    """``out`` as ``kubetune run`` leaves it: experiment.json, journal, results.csv, trials.jsonl, summary.json."""
    exp = experiment(name, max_trials)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps(exp.model_dump(mode="json", by_alias=True, exclude_none=True)))
    if journal:  # synced line by line, as the runner does: slow for thousands of trials
        j = Journal(out / "journal.jsonl")
        j.open(journal_identity(name, exp.spec))
        for t in trials:
            j.launch(Trial(t.number, t.params, TrialState.RUNNING, start_time=t.start_time))
            if t.state.finished:
                j.finish(t)
        j.close()
    outcome = Outcome(True, "MaxTrialsReached", "done") if finished else None
    ResultsWriter(out, exp.spec, name).write(trials, outcome)
    return out
