"""The operator scale benchmark (benchmarks/operator_scale.py --quick) runs end to end on its own real control plane
and produces every table with sane numbers. No timing is asserted: only that things were measured, and counts that
must hold whatever the speed (one Job created per trial, every trial finished, results stored)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_benchmark_produces_every_table(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "operator_scale.py"), "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    results = json.loads((tmp_path / "results.json").read_text())
    text = (tmp_path / "results.md").read_text()
    for heading in ("Time to first Job", "Trial turnaround and throughput", "CPU seconds per trial",
                    "Operator API requests per trial", "All API server requests per trial", "Long experiments",
                    "Reconcile duration"):
        assert heading in text and heading in proc.stdout, heading
    assert results["machine"]["nproc"] >= 1 and results["command"].endswith("--quick --out " + str(tmp_path))

    first = results["first_job"]["rows"]
    assert [r["experiments"] for r in first] == [5, 5]
    assert all(positive(r["p50_s"]) and r["p99_s"] >= r["p50_s"] for r in first)

    turn = results["turnaround"]
    (row,) = turn["rows"]
    assert row["config"] == "5 x 2" and row["trials"] == 20 and row["all_finished"]
    assert positive(row["turnaround_p50_s"]) and row["turnaround_p99_s"] >= row["turnaround_p50_s"]
    assert positive(row["trials_per_min"]) and positive(row["operator_rss_mib"])
    assert 0 <= row["running_mean"] <= row["running_peak"] <= row["concurrent"]  # never more than parallelTrials
    (cpu,) = turn["cpu"]
    assert all(positive(cpu[p]) for p in ("operator", "kube-apiserver", "etcd")), cpu
    (requests,) = turn["operator_requests"]
    assert requests["by_resource"]["create jobs"] == 1.0  # exactly one Job per trial, counted in the operator
    assert requests["by_resource"]["patch tuningexperiments/status"] > 0
    (api,) = turn["apiserver_requests"]
    assert api["per_trial"]["POST"] >= 1.0 and api["per_trial"]["PATCH"] > 0

    check_long(results["long"], steps=10)
    kubelet = results["kubelet"]
    assert kubelet["annotations"] > kubelet["succeeded"] >= 20 + 30  # intermediate reports were written too
    assert results["kubelet_errors"] == []

    again = tmp_path / "again"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "operator_scale.py"), "--from-json",
                    str(tmp_path / "results.json"), "--out", str(again)], cwd=ROOT, check=True, timeout=120)
    assert (again / "results.md").read_text() == text  # the docs tables are reproduced from the JSON


def check_long(long: dict[str, Any], steps: int) -> None:
    """The long experiments: every count is what happened (status counts add up, one annotation per trial without
    intermediate steps; with them, a trial that ran to the end wrote as many intermediate patches as the SDK sends
    for ``steps`` reports, at most one per step, and its final one), every mark has its window."""
    rows = long["rows"]
    assert [(r["variant"], r["early_stopping"]) for r in rows] == [("random", "none"),
                                                                  ("random+median", f"median, {steps} steps")]
    assert long["windows"] == [[0, 3], [10, 15], [25, 30]]
    for r in rows:
        assert r["completed"] and r["finished"] == r["max_trials"] == 30, r
        assert r["succeeded"] + r["pruned"] + r["failed"] == r["finished"] and r["failed"] == 0, r
        assert r["configmaps"] >= 1 and r["configmap_bytes_max"] > 0 and positive(r["rss_mib"])
        assert r["experiment_bytes"] > r["status_bytes"] > 0
        assert positive(r["wall_s"]) and positive(r["trials_per_min"]) and positive(r["operator_cpu_s"])
        assert r["operator_requests_per_trial"]["create"] >= 1.0  # at least its Job
        assert r["operator_version"]
        assert [m["mark"] for m in r["marks"]] == [3, 15, 30]
        for m in r["marks"]:
            assert m["from_finished"] <= m["finished"] and m["finished"] >= m["mark"], m
            assert m["reconciles"] >= 0 and m["plannings"] >= 0
            if m["reconciles"]:
                assert positive(m["reconcile_mean_s"]) and m["reconcile_p99_s"] >= m["reconcile_p50_s"], m
    plain, median = rows
    assert plain["pruned"] == 0 and plain["annotations_per_trial"] == 1.0
    assert plain["intermediate_writes"] == 0 and 1 <= median["intermediate_writes"] <= steps
    per_trial = median["intermediate_writes"] + 1
    written = round(median["annotations_per_trial"] * median["finished"])
    assert median["succeeded"] * per_trial <= written <= median["finished"] * per_trial, median
    assert median["configmap_bytes_total"] > plain["configmap_bytes_total"]  # the curves are recorded
