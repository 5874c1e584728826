"""The benchmark harness works: ``--quick`` produces well-formed tables with a finite score for every optimizer.

No timing assertions: this only checks that the harness, the problems and every optimizer adapter run. Peers
(Optuna, Hyperopt) are benchmark extras (``pip install '.[bench]'``): without them the harness runs kubetune's
algorithms and scikit-optimize (a runtime dependency) only, and the peer-specific test is skipped.
"""

from __future__ import annotations

import math

import pytest

from benchmarks import latency, quality


def test_peers_are_installed_for_the_benchmark() -> None:
    assert quality.available(quality.OPTIMIZERS) == (quality.OPTIMIZERS, [])


@pytest.mark.timeout(300)
def test_quick_quality_run_scores_every_optimizer() -> None:
    cfg = quality.config_for(quick=True, workers=1)
    res = quality.run(cfg, log=False)
    expected = len(cfg.problems) * len(cfg.optimizers) * len(cfg.seeds) * len(cfg.budgets)
    assert len(res.runs) == expected
    for r in res.runs:
        assert math.isfinite(r.best)
        assert len(r.trace) == cfg.budgets[r.budget][0]
        assert all(b >= a for a, b in zip(r.trace[1:], r.trace))  # best-so-far never gets worse
        assert math.isfinite(quality.score(res, r))
    text = quality.report(res)
    for budget in cfg.budgets:
        table = quality.summary_table(res, budget).splitlines()
        assert table[0].startswith("| optimizer |") and set(table[1]) <= set("|-")
        rows = {line.split("|")[1].strip(): line for line in table[2:]}
        assert set(rows) == set(cfg.optimizers)
        for line in rows.values():
            cells = [c.strip().strip("*") for c in line.split("|")[2:-1]]
            assert all(math.isfinite(float(c)) for c in cells), line
    for fam in quality.families(res):
        assert fam in text


@pytest.mark.timeout(300)
def test_quick_latency_table() -> None:
    names, _missing = quality.available(latency.OPTIMIZERS)
    res = latency.run([10], names, log=False)
    assert set(res) == set(names)
    assert all(math.isfinite(v[10]) and v[10] > 0 for v in res.values())
    table = latency.table(res).splitlines()
    assert len(table) == 2 + len(names)
