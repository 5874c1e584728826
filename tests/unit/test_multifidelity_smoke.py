"""The multi-fidelity benchmark runs end to end in ``--quick`` mode and prints well-formed tables.

No timing or quality assertions: only that every method runs on every task, spends the budget it is given, and
that the table has one well-formed row per method. Optuna comes with the `test` extra.
"""

from __future__ import annotations

import math
import re

import pytest

from benchmarks import multifidelity as mf


@pytest.mark.timeout(600)
def test_quick_run_prints_a_well_formed_table() -> None:
    cfg = mf.config_for(quick=True, workers=1)
    results = mf.run(cfg, log=False)
    assert len(results) == len(cfg.tasks) * len(cfg.seeds) * len(mf.METHODS)
    budget = cfg.trials * cfg.max_epochs
    for r in results:
        assert r.budget_epochs == budget
        assert r.epochs <= budget + cfg.parallel  # cut off at the budget (the last tick may overshoot)
        assert r.seconds > 0 and r.trials >= 1
        assert r.full >= 1 and 0.0 <= r.best_val <= 1.0 and 0.0 <= r.best_test <= 1.0
        if r.method == mf.REFERENCE:
            assert r.epochs == budget and r.pruned == 0 and r.trials == cfg.trials
            assert r.to_target_epochs <= budget  # the reference reaches its own final quality
    text = mf.report(results, cfg, wall=1.0, command="python benchmarks/multifidelity.py --quick")
    assert "command: `python benchmarks/multifidelity.py --quick`" in text
    for task in cfg.tasks:
        lines = mf.table(results, task).splitlines()
        assert lines[0] == "| " + " | ".join(mf.HEADER) + " |"
        assert set(lines[1]) <= set("|-")
        rows = lines[2:]
        assert [row.split("|")[1].strip() for row in rows] == mf.METHODS
        for row in rows:
            cells = [c.strip() for c in row.split("|")[1:-1]]
            assert len(cells) == len(mf.HEADER)
            assert re.fullmatch(r"\d+/\d+ \(\d+ within 1/3\)", cells[4]), cells[4]
            for c in cells[1:4] + cells[5:]:
                assert c == "n/a" or math.isfinite(float(c)), row
        assert f"### {task}" in text
