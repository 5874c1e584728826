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


@pytest.mark.timeout(300)
def test_latency_batch_mode_asks_the_whole_batch_in_one_call_on_step_like_losses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, list[float]]] = []
    real = latency.make_sampler

    def recording(algorithm: str, space: object, seed: int) -> object:
        sampler = real(algorithm, space, seed=seed)  # type: ignore[arg-type]
        suggest = sampler.suggest

        def counted(history: list, pending: list, n: int = 1) -> list:  # type: ignore[type-arg]
            calls.append((n, [float(o.loss or 0.0) for o in history]))
            return suggest(history, pending, n=n)

        monkeypatch.setattr(sampler, "suggest", counted)
        return sampler

    monkeypatch.setattr(latency, "make_sampler", recording)
    res = latency.run([20], ["kubetune-bayesian"], log=False, batch=4, step=latency.STEPS)
    assert math.isfinite(res["kubetune-bayesian"][20]) and res["kubetune-bayesian"][20] > 0
    assert calls and {n for n, _ in calls} == {4}
    sizes = [len(values) for _, values in calls]
    assert sizes == [20 + 4 * k for k in range(len(calls))]  # every call adds the 4 suggestions it made
    for _, values in calls:  # the losses the sampler saw are on the steps
        assert all(abs(v / latency.STEPS - round(v / latency.STEPS)) < 1e-9 for v in values)
    assert (latency.BATCH, latency.STEP) == (1, 0.0)  # restored for the next run
    assert latency.ties_at_best(200, latency.STEPS) >= 3  # the plateau rule's threshold, as the docstring says
    assert latency.ties_at_best(200, 0.0) == 1
    with pytest.raises(ValueError):
        latency.run([10], ["kubetune-random"], log=False, batch=0)
