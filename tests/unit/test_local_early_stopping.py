"""End to end under ``kubetune run``: trials report per-epoch metrics, some get pruned (SIGTERM, the SDK's report()
returns False, the trial exits cleanly) and the results show it; hyperband promotes configurations to more epochs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import yaml

from kubetune.template import trial_name

TRIAL = Path(__file__).resolve().parents[1] / "data" / "learning_curve_trial.py"


def experiment(name: str, parameters: list, command: list, **spec) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningExperiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "accuracy", "goal": "maximize"},
            "parameters": parameters,
            "trialTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "trial", "image": "unused", "command": ["python", str(TRIAL), *command]}]}}}},
            **spec,
        },
    }


def run(tmp_path: Path, doc: dict) -> tuple[subprocess.CompletedProcess, Path]:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "kubetune", "run", str(path), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    return proc, out


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


# Categorical values are strings or integers; the trial parses the float.
QUALITIES = ["0.9", "0.2", "0.3", "0.95", "0.1", "0.85", "0.15", "0.5", "0.05"]


def test_median_stopping_prunes_bad_trials_under_kubetune_run(tmp_path: Path) -> None:
    doc = experiment(
        "median-e2e",
        [{"name": "quality", "type": "categorical", "values": QUALITIES}],
        ["--quality", "${params.quality}", "--epochs", "10", "--epoch-seconds", "0.15"],
        algorithm={"name": "grid"},  # the listed order, so the good trials start first
        earlyStopping={"rule": "median", "minTrials": 2},
        maxTrials=len(QUALITIES),
        parallelTrials=3,
    )
    proc, out = run(tmp_path, doc)
    assert proc.returncode == 0, proc.stderr
    recs = records(out)
    assert len(recs) == len(QUALITIES)
    by_quality = {r["params"]["quality"]: r for r in recs}
    pruned = [r for r in recs if r["state"] == "Pruned"]
    assert len(pruned) >= 3, [(r["params"], r["state"]) for r in recs]
    for r in pruned:
        assert r["reason"] == "MedianStopping"
        assert "stopped at step" in r["message"] and "median" in r["message"]
        assert r["curve"][-1][0] < 10  # it did not run to the end ...
        name = trial_name("median-e2e", r["number"])
        log = (out / "trials" / name / "output.log").read_text()
        assert "stopped after epoch" in log  # ... and exited cleanly after report() returned False
    for q in ("0.2", "0.1", "0.05"):
        assert by_quality[q]["state"] == "Pruned"
    assert by_quality["0.95"]["state"] == "Succeeded"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_trial"]["params"]["quality"] == "0.95"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sum(1 for row in rows if row["state"] == "Pruned" and row["reason"] == "MedianStopping") == len(pruned)
    assert "Pruned" in proc.stderr  # the per-trial lines of the progress output


def test_asha_prunes_under_kubetune_run(tmp_path: Path) -> None:
    doc = experiment(
        "asha-e2e",
        [{"name": "quality", "type": "categorical", "values": QUALITIES}],
        ["--quality", "${params.quality}", "--epochs", "9", "--epoch-seconds", "0.15"],
        algorithm={"name": "grid"},
        earlyStopping={"rule": "asha", "minTrials": 3, "maxResource": 9},
        maxTrials=len(QUALITIES),
        parallelTrials=3,
    )
    proc, out = run(tmp_path, doc)
    assert proc.returncode == 0, proc.stderr
    recs = records(out)
    pruned = [r for r in recs if r["state"] == "Pruned"]
    assert pruned and all(r["reason"] == "ASHA" and "rung" in r["message"] for r in pruned)
    assert {r["params"]["quality"] for r in recs if r["state"] == "Succeeded"} >= {"0.95"}
    assert json.loads((out / "summary.json").read_text())["best_trial"]["params"]["quality"] == "0.95"


def test_hyperband_under_kubetune_run(tmp_path: Path) -> None:
    doc = experiment(
        "hyperband-e2e",
        [{"name": "quality", "type": "float", "min": 0.0, "max": 1.0},
         {"name": "epochs", "type": "int", "min": 1, "max": 9}],
        ["--quality", "${params.quality}", "--epochs", "${params.epochs}", "--epoch-seconds", "0.01"],
        algorithm={"name": "hyperband", "seed": 3, "settings": {"resourceParameter": "epochs"}},
        maxTrials=16,
        parallelTrials=2,
    )
    proc, out = run(tmp_path, doc)
    assert proc.returncode == 0, proc.stderr
    recs = records(out)
    assert len(recs) == 16 and all(r["state"] == "Succeeded" for r in recs)
    assert {r["params"]["epochs"] for r in recs} <= {1, 3, 9}
    epochs_by_config: dict[float, list[int]] = {}
    for r in recs:
        epochs_by_config.setdefault(r["params"]["quality"], []).append(r["params"]["epochs"])
        assert r["curve"][-1][0] == r["params"]["epochs"]  # the trial ran exactly the epochs it was given
    promoted = {q: e for q, e in epochs_by_config.items() if len(e) > 1}
    assert promoted  # some configurations ran again with more epochs
    for q, e in promoted.items():
        assert e == sorted(e) and len(set(e)) == len(e)
        # Promoted from the first rung: at least as good as the median configuration started there.
        assert q >= sorted(epochs_by_config)[len(epochs_by_config) // 3]
