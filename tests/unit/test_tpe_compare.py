"""benchmarks/tpe_compare.py: one small run renders the side-by-side tables, and its JSON renders them again."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def test_small_run_and_json_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    importlib.import_module("optuna")  # a test extra: missing is a failure, not a skip
    from benchmarks import tpe_compare

    out = tmp_path / "r.json"
    argv = ["--seeds", "2", "--problems", "branin", "--budgets", "seq50", "batch4", "--workers", "1",
            "--variants", "kubetune-tpe", "--json", str(out)]
    assert tpe_compare.main(argv) == 0
    text = capsys.readouterr().out
    assert "### seq50: 50 rounds x 1 suggestions" in text and "### batch4: 25 rounds x 4 suggestions" in text
    row = next(line for line in text.splitlines() if line.startswith("| branin |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 4  # problem, two means, one W/T/L column
    wins, ties, losses = (int(v) for v in cells[3].split(",")[0].split("/"))
    assert wins + ties + losses == 2
    assert tpe_compare.main(["--from-json", str(out)]) == 0
    again = capsys.readouterr().out
    assert again.split("\n", 1)[1] == text.split("\n", 1)[1]
    assert len(json.loads(out.read_text())["runs"]) == 2 * 2 * 2


def test_one_by_one_mode_asks_each_suggestion_with_the_earlier_ones_pending() -> None:
    from benchmarks.optimizers import make_optimizer
    from benchmarks.problems import problem

    space = problem("branin").space
    batch = make_optimizer("kubetune-tpe", space, 0)
    serial = make_optimizer("kubetune-tpe:one-by-one", space, 0)
    for opt in (batch, serial):
        for _ in range(4):
            ps = opt.ask(4)
            assert len({space.key(p) for p in ps}) == 4
            opt.tell(ps, [float(sum(p.values())) for p in ps])
    assert batch.ask(4) != serial.ask(4)
    with pytest.raises(ValueError):
        make_optimizer("kubetune-tpe:all-at-once", space, 0)
