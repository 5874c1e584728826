"""Trial records stay bounded: the largest possible record fits a shard many times over."""

from __future__ import annotations

import json

from kubetune.k8s.prometheus import TRIALS_FINISHED, render
from kubetune.k8s.store import SHARD_SIZE, record_key, shard_name
from kubetune.trials import MAX_CURVE_POINTS, Trial, TrialState, add_curve_point


def test_a_full_shard_of_the_largest_records_fits_a_configmap() -> None:
    params = {f"parameter_{i:02d}_{'x' * 40}": 1.2345678901234567e-05 for i in range(64)}
    curve: list[tuple[int, float]] = []
    for step in range(5000):  # a trial reporting far more points than are kept
        curve = add_curve_point(curve, step, 0.123456789012345)
    assert len(curve) <= MAX_CURVE_POINTS and curve[-1][0] == 4999
    metrics = {f"metric_{i:02d}": 0.98765432109876 for i in range(17)}
    trial = Trial(9999, params, TrialState.PRUNED, metrics=metrics, curve=curve, reason="MedianStopping",
                  message="m" * 300, start_time="2026-01-01T00:00:00.000Z", completion_time="2026-01-01T00:00:00.000Z")
    record = json.dumps(trial.to_record(), separators=(",", ":"))
    shard = {record_key(n): record for n in range(SHARD_SIZE)}
    size = sum(len(k) + len(v) for k, v in shard.items())
    assert size < 1024 * 1024 * 0.9, size  # etcd's object limit is 1.5 MiB, ConfigMap data 1 MiB


def test_shards_are_deterministic_and_hold_shard_size_trials() -> None:
    names = {shard_name("exp", n) for n in range(10_000)}
    assert len(names) == 10_000 // SHARD_SIZE
    assert shard_name("exp", 0) == "exp-results-000" and shard_name("exp", 9_999) == "exp-results-199"
    assert record_key(7) == "t00007"


def test_prometheus_text_exposition() -> None:
    TRIALS_FINISHED.inc("Succeeded")
    text = render()
    assert "# TYPE kubetune_trials_finished_total counter" in text
    assert 'kubetune_trials_finished_total{state="Succeeded"}' in text
    assert "kubetune_reconcile_seconds_count" in text
