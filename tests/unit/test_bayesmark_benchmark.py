"""The bayesmark benchmark: its problems are bayesmark's, its score is bayesmark's, and ``--quick`` runs every peer.

The scoring tests use hand-made studies whose score is worked out by hand from the formulas of bayesmark's
``docs/scoring.rst`` (not by calling the same code twice). No timing assertions.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bayesmark as bm
from benchmarks.bayesmark_problems import DEVIATIONS, bayesmark_problem, model_kwargs, problem_names, space_of


def test_the_problem_set_is_bayesmarks_without_boston() -> None:
    names = problem_names()
    # 9 models x (4 classification datasets x 2 metrics + 1 regression dataset x 2 metrics)
    assert len(names) == 90 == len(set(names))
    assert {n.split("_")[0] for n in names} == {"DT", "MLP-adam", "MLP-sgd", "RF", "SVM", "ada", "kNN", "lasso",
                                                 "linear"}
    assert not any("boston" in n for n in names)
    assert any("boston" in d for d in DEVIATIONS)


def test_logit_warped_parameters_are_searched_in_logit_space() -> None:
    space = space_of({"f": {"type": "real", "space": "logit", "range": (0.01, 0.99)},
                      "n": {"type": "int", "space": "log", "range": (10, 5000)}, "b": {"type": "bool"}})
    assert space.names == ["b", "f_logit", "n"]
    f = dict(space.dims)["f_logit"]
    assert f.low == pytest.approx(math.log(0.01 / 0.99)) and f.high == pytest.approx(math.log(0.99 / 0.01))
    # uniform in logit space: the middle of the range is 0.5, the ends are the published bounds
    assert model_kwargs({"f_logit": 0.0})["f"] == 0.5
    assert model_kwargs({"f_logit": f.low})["f"] == pytest.approx(0.01)
    assert dict(space.dims)["n"].log


def test_objective_matches_sklearn_cross_val_score_on_the_published_split() -> None:
    from sklearn.datasets import load_wine
    from sklearn.model_selection import cross_val_score, train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    X, y = load_wine(return_X_y=True)
    X, _, y, _ = train_test_split(X, y, test_size=0.2, random_state=0, shuffle=True)
    want = -cross_val_score(KNeighborsClassifier(n_neighbors=7, p=2), X, y, scoring="neg_log_loss", cv=5).mean()
    assert bayesmark_problem("kNN_wine_nll").loss({"n_neighbors": 7, "p": 2}) == pytest.approx(want, rel=1e-12)


def _results(studies: dict[tuple[str, str, int], list[float]], rounds: int, batch: int) -> bm.Results:
    cfg = bm.Config(sorted({p for p, _, _ in studies}), sorted({o for _, o, _ in studies}),
                    sorted({s for _, _, s in studies}), {"b": (rounds, batch)})
    return bm.Results(cfg, [bm.Run(p, o, "b", s, losses, 0.0, 0.0) for (p, o, s), losses in studies.items()])


def test_score_is_bayesmarks_leaderboard_number_worked_by_hand() -> None:
    # One problem, two seeds, 2 rounds of 2. Random search's evaluations pooled: 5 6 6 7 8 9 10 12 -> clip = the
    # median = 7.5. Best evaluation of anyone: 1 -> opt = 1 (minus bayesmark's pad of 10000 ulps).
    res = _results({("p", "random", 0): [5.0, 7.0, 6.0, 9.0], ("p", "random", 1): [6.0, 8.0, 10.0, 12.0],
                    ("p", "x", 0): [3.0, 1.0, 4.0, 4.0], ("p", "x", 1): [20.0, 30.0, 40.0, 50.0]}, 2, 2)
    # x: seed 0 best 1 -> normalized 0; seed 1 best 20 -> (20 - 1) / (7.5 - 1) > 1 -> clipped to 1. Mean 0.5.
    assert bm.score(res, "b", "x")[0] == pytest.approx(50.0, abs=1e-6)
    # random: seed 0 best 5 -> 4 / 6.5; seed 1 best 6 -> 5 / 6.5; mean 4.5 / 6.5 = 9 / 13 -> 100 * 4 / 13
    assert bm.score(res, "b", "random")[0] == pytest.approx(100 * 4 / 13, abs=1e-6)
    # standard error over problems needs two problems: a second one where both are perfect
    res2 = _results({**{(r.problem, r.optimizer, r.seed): r.losses for r in res.runs},
                     ("q", "random", 0): [2.0, 3.0, 4.0, 5.0], ("q", "random", 1): [2.0, 3.0, 4.0, 5.0],
                     ("q", "x", 0): [1.0] * 4, ("q", "x", 1): [1.0] * 4}, 2, 2)
    s, se = bm.score(res2, "b", "x")
    # per-problem means 0.5 and 0 -> score 75, s.e. = std([0.5, 0], ddof=1) / sqrt(2) = 0.25 -> 25 points
    assert s == pytest.approx(75.0, abs=1e-6) and se == pytest.approx(25.0, abs=1e-6)


def test_score_against_the_peers_leaves_the_scored_optimizers_out_of_opt() -> None:
    # Random search as above (clip 7.5, best 5). A peer: seed 0 best 4, seed 1 best 4.5. The default: 1 and 5.75.
    P = "DT_wine_nll"
    res = _results({(P, "random", 0): [5.0, 7.0, 6.0, 9.0], (P, "random", 1): [6.0, 8.0, 10.0, 12.0],
                    (P, "peer", 0): [4.0, 9.0, 9.0, 9.0], (P, "peer", 1): [9.0, 4.5, 9.0, 9.0],
                    (P, bm.DEFAULT, 0): [3.0, 1.0, 9.0, 9.0], (P, bm.DEFAULT, 1): [9.0, 9.0, 5.75, 9.0]}, 2, 2)
    assert bm.reference_pool(res) == ["peer", "random"]
    ref = bm.reference_pool(res)
    # opt = 4 (the peer's best; the default's 1 is left out), span 7.5 - 4 = 3.5.
    # default: (1 - 4) / 3.5 = -0.857 (better than the reference's best: negative), (5.75 - 4) / 3.5 = 0.5
    assert bm.score(res, "b", bm.DEFAULT, reference=ref)[0] == pytest.approx(100 * (1 - (-3 / 3.5 + 0.5) / 2), abs=1e-6)
    # peer: 0 and 0.5 / 3.5
    assert bm.score(res, "b", "peer", reference=ref)[0] == pytest.approx(100 * (1 - (0.5 / 3.5) / 2), abs=1e-6)
    # in the pool (opt = 1, span 6.5): default 0 and 4.75 / 6.5, peer 3 / 6.5 and 3.5 / 6.5
    assert bm.score(res, "b", bm.DEFAULT)[0] == pytest.approx(100 * (1 - 4.75 / 13), abs=1e-6)
    assert bm.score(res, "b", "peer")[0] == pytest.approx(100 * (1 - 6.5 / 13), abs=1e-6)
    text = bm.report(res)
    assert "against the peers" in text and "117.9" in text and "92.9" in text


def test_median_against_random_uses_the_pooled_minimum_quantile() -> None:
    # 100 random evaluations 1..100, budget of 1 evaluation -> random's median best is the median evaluation.
    rand = {("p", "random", s): [float(v)] for s, v in enumerate(range(1, 101))}
    res = _results({**rand, **{("p", "x", s): [0.0] for s in range(100)}}, 1, 1)
    assert bm.baselines(res, "b")["p"].rand_med == 50.0
    assert bm.median_vs_random(res, "b", "x")["p"] == pytest.approx(0.0, abs=1e-9)
    # random's own studies: their median best 50.5 (an even count) against the pooled estimate 50
    assert bm.median_vs_random(res, "b", "random")["p"] == pytest.approx(50.5 / 50.0, rel=1e-9)
    # everyone at the same plateau (up to float rounding): level with random search, not a huge ratio
    flat = _results({("p", o, s): [0.465827 + 1e-17 * s] for o in ("random", "x") for s in range(5)}, 1, 1)
    assert bm.median_vs_random(flat, "b", "x")["p"] == 1.0


def test_studies_against_random_medians_best_are_counted_better_level_worse() -> None:
    # 100 random evaluations 1..100, budget 1: random search's median best is 50. The default's five studies end at
    # 10, 50, 50 + 1e-12 (level: float rounding), 70 and 99.
    rand = {("DT_wine_nll", "random", s): [float(v)] for s, v in enumerate(range(1, 101))}
    mine = {("DT_wine_nll", bm.DEFAULT, s): [v] for s, v in enumerate([10.0, 50.0, 50.0 + 1e-12, 70.0, 99.0])}
    res = _results({**rand, **mine}, 1, 1)
    assert bm.against_random_median(res, "b", bm.DEFAULT) == {"DT_wine_nll": (1, 2, 2)}
    # random search's own 100 studies: 49 below 50, one at it, 50 above
    assert bm.against_random_median(res, "b", "random") == {"DT_wine_nll": (49, 1, 50)}
    assert "| 1 / 2 / 2 |" in bm.problem_table(res, "b")


def test_win_tie_loss_counts_problems() -> None:
    studies: dict[tuple[str, str, int], list[float]] = {}
    for p, (a, b) in {"p1": (1.0, 5.0), "p2": (5.0, 1.0), "p3": (3.0, 3.0)}.items():
        for s in range(3):
            studies[(p, "random", s)] = [9.0]
            studies[(p, bm.DEFAULT, s)] = [a]
            studies[(p, "x", s)] = [b]
    res = _results(studies, 1, 1)
    assert bm.win_tie_loss(res, "b", bm.DEFAULT, "x") == (1, 1, 1)
    assert bm.win_tie_loss(res, "b", "x", bm.DEFAULT) == (1, 1, 1)
    # a difference within twice its standard error over seeds is a tie
    noisy = dict(studies)
    for s, v in enumerate([1.0, 8.0, 1.5]):
        noisy[("p2", bm.DEFAULT, s)] = [v]
        noisy[("p2", "x", s)] = [1.0 + s]
    assert bm.win_tie_loss(_results(noisy, 1, 1), "b", bm.DEFAULT, "x") == (1, 2, 0)


def test_ceilings_of_the_pool_worked_by_hand() -> None:
    P = "DT_wine_nll"  # a name the report's family table can parse
    # As above: random search's evaluations give clip 7.5, the best evaluation of anyone is 1 -> opt 1.
    rand = {(P, "random", 0): [5.0, 7.0, 6.0, 9.0], (P, "random", 1): [6.0, 8.0, 10.0, 12.0]}
    # the default: seed 0 best 1 -> 0, seed 1 best 4.25 -> 3.25 / 6.5 = 0.5 (mean 0.25)
    # the peer: seed 0 best 4.25 -> 0.5, seed 1 best 2.3 -> 1.3 / 6.5 = 0.2 (mean 0.35)
    res = _results({**rand, (P, bm.DEFAULT, 0): [1.0, 50.0, 50.0, 50.0],
                    (P, bm.DEFAULT, 1): [50.0, 4.25, 50.0, 50.0], (P, "peer", 0): [4.25, 50.0, 50.0, 50.0], (P, "peer", 1): [50.0, 50.0, 2.3, 50.0]}, 2, 2)
    assert bm.score(res, "b", bm.DEFAULT)[0] == pytest.approx(75.0, abs=1e-6)
    assert bm.score(res, "b", "peer")[0] == pytest.approx(65.0, abs=1e-6)
    ceil = bm.ceilings(res, "b")
    assert ceil is not None
    # the better optimizer on the problem (the default, 0.25) -> 75; per seed the better study: min(0, 0.5) and
    # min(0.5, 0.2) -> mean 0.1 -> 90.
    assert ceil == pytest.approx((75.0, 90.0), abs=1e-6)
    assert "**75.0**" in bm.report(res) and "**90.0**" in bm.report(res)
    # one optimizer besides random search: nothing to choose among
    one = _results({k: v for k, v in res_studies(res).items() if k[1] != "peer"}, 2, 2)
    assert bm.ceilings(one, "b") is None and "Ceilings" not in bm.report(one)
    # and no peer besides random search: no score against the peers either
    assert "against the peers" not in bm.report(one) and "against the peers" in bm.report(res)


def test_seed_noise_worked_by_hand() -> None:
    P, Q = "DT_wine_nll", "DT_iris_nll"
    rand = {(P, "random", 0): [5.0, 7.0, 6.0, 9.0], (P, "random", 1): [6.0, 8.0, 10.0, 12.0]}
    # As in the ceilings test: opt 1, clip 7.5. The default's normalized losses 0 and 0.5, the peer's 0.5 and 0.2.
    studies = {**rand, (P, bm.DEFAULT, 0): [1.0, 50.0, 50.0, 50.0], (P, bm.DEFAULT, 1): [50.0, 4.25, 50.0, 50.0],
               (P, "peer", 0): [4.25, 50.0, 50.0, 50.0], (P, "peer", 1): [50.0, 50.0, 2.3, 50.0]}
    res = _results(studies, 2, 2)
    # one problem: var([0, 0.5], ddof=1) = 0.125, over 2 seeds 0.0625, sqrt 0.25 -> 25 points; the peer:
    # var([0.5, 0.2]) = 0.045 -> 0.0225 -> 0.15 -> 15 points
    assert bm.seed_noise(res, "b", bm.DEFAULT) == pytest.approx(25.0, abs=1e-9)
    assert bm.seed_noise(res, "b", "peer") == pytest.approx(15.0, abs=1e-9)
    # a second problem where each optimizer ends at the same loss in both seeds adds no variance, and the mean over
    # two problems halves the standard error: 12.5 and 7.5. There opt = 1, clip = 2.5, and the default ends at 2
    # (normalized 2/3), the peer at 1 (0).
    flat = {(Q, o, s): [1.0, 2.0, 3.0, 4.0] for o in ("random", "peer") for s in (0, 1)}
    flat |= {(Q, bm.DEFAULT, s): [2.0, 3.0, 4.0, 5.0] for s in (0, 1)}
    res2 = _results({**studies, **flat}, 2, 2)
    assert bm.seed_noise(res2, "b", bm.DEFAULT) == pytest.approx(12.5, abs=1e-9)
    assert bm.seed_noise(res2, "b", "peer") == pytest.approx(7.5, abs=1e-9)
    # the spread over problems is another number: std([0.25, 2/3], ddof=1) / sqrt 2 = (2/3 - 0.25) / 2
    assert bm.score(res2, "b", bm.DEFAULT)[1] == pytest.approx(100 * (2 / 3 - 0.25) / 2, abs=1e-9)
    text = bm.report(res2)
    # beside each score to two decimals: the default's mean normalized loss (0.25 + 2/3) / 2 -> 54.17; the peer's
    # (0.35 + 0) / 2 -> 82.50
    assert "Seed noise" in text and f"{bm.DEFAULT} 54.17 ± 12.50" in text and "peer 82.50 ± 7.50" in text
    # one seed: no spread to measure
    one = _results({k: v for k, v in studies.items() if k[2] == 0}, 2, 2)
    assert math.isnan(bm.seed_noise(one, "b", bm.DEFAULT)) and "Seed noise" not in bm.report(one)


def res_studies(res: bm.Results) -> dict[tuple[str, str, int], list[float]]:
    return {(r.problem, r.optimizer, r.seed): r.losses for r in res.runs}


@pytest.mark.timeout(600)
def test_quick_run_scores_every_optimizer() -> None:
    cfg = bm.config_for(quick=True, workers=1)
    assert cfg.missing == []  # every peer installs here: pip install -e '.[test]'
    assert {"nevergrad-1p1", "smac3-hpo", "optuna-tpe", "hyperopt-tpe", "random"} <= set(cfg.optimizers)
    res = bm.run(cfg, log=False)
    assert len(res.runs) == len(cfg.problems) * len(cfg.optimizers) * len(cfg.seeds) * len(cfg.budgets)
    for r in res.runs:
        rounds, batch = cfg.budgets[r.budget]
        assert len(r.losses) == rounds * batch and all(math.isfinite(v) for v in r.losses)
        space = bayesmark_problem(r.problem).space
        assert space is not None
        # the recorded best configuration is the one that scored the best loss (the objectives are deterministic)
        assert r.best_params is not None and set(r.best_params) == set(space.names)
        assert bayesmark_problem(r.problem).loss(r.best_params) == r.best
    for budget in cfg.budgets:
        for o in cfg.optimizers:
            s, se = bm.score(res, budget, o)
            assert -100.0 <= s <= 200.0
        table = bm.summary_table(res, budget).splitlines()
        assert {line.split("|")[1].strip() for line in table[2:]} == set(cfg.optimizers)
    text = bm.report(res)
    assert "DT-acc" in text and "kNN-nll" in text
    again = bm.from_json(__import__("json").loads(__import__("json").dumps(bm.to_json(res))))
    assert bm.report(again) == text
    assert np.isfinite(bm.score(again, "batch8", bm.DEFAULT)[0])


def test_resume_runs_only_the_missing_studies_and_partial_reports_keep_finished_problems(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Counted by the studies really run (run_one is wrapped), against a run cut short by hand: a line removed and
    # a torn last line, as a kill leaves them.
    cfg = bm.config_for(quick=True, workers=1, optimizers=["kubetune-bayesian"], budgets=["batch8"])
    partial = tmp_path / "r.partial.jsonl"
    first = bm.run(cfg, log=False, partial=partial)
    lines = partial.read_text().splitlines()
    assert len(lines) == len(first.runs) == 4  # 2 problems x (bayesian, random) x 1 seed
    dropped = json.loads(lines[1])
    partial.write_text("\n".join(lines[:1] + lines[2:]) + "\n" + lines[1][:40])
    cut = bm.from_partial(partial)
    assert cut.config.problems == [p for p in cfg.problems if p != dropped["problem"]]
    assert cut.config.missing == [f"{dropped['problem']} (unfinished)"]
    ran: list[tuple[str, str]] = []
    real = bm.run_one

    def counting(problem: str, optimizer: str, *args: object) -> bm.Run:
        ran.append((problem, optimizer))
        return real(problem, optimizer, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(bm, "ProcessPoolExecutor", _InProcess)
    monkeypatch.setattr(bm, "run_one", counting)
    again = bm.run(cfg, log=False, partial=partial, resume=True)
    assert ran == [(dropped["problem"], dropped["optimizer"])]
    assert sorted((r.problem, r.optimizer, r.losses) for r in again.runs) == \
        sorted((r.problem, r.optimizer, r.losses) for r in first.runs)
    whole = bm.from_partial(partial)
    assert whole.config.problems == cfg.problems and whole.config.missing == []
    # A report on recorded studies names the file and claims no wall time or workers of its own.
    header = bm.report(whole).splitlines()[2]
    assert "read from r.partial.jsonl (no study ran in this invocation)" in header and "workers" not in header
    assert "this invocation: wall" in bm.report(again).splitlines()[2]
    # ... and a report on a finished run's --json gives that run's wall time as the run's, not this invocation's.
    written = tmp_path / "r.json"
    written.write_text(json.dumps(bm.to_json(again)))
    capsys.readouterr()
    assert bm.main(["--from-json", str(written)]) == 0
    header = capsys.readouterr().out.splitlines()[2]
    assert header.endswith(f"read from r.json (no study ran in this invocation); the run that wrote it: wall "
                           f"{again.wall_seconds:.0f} s, CPU {again.cpu_seconds:.0f} s with 1 worker."), header


def test_from_json_with_optimizers_scores_a_smaller_pool(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # Hand-made studies on two problems and two seeds: kubetune-bayesian finds the best loss everywhere, Optuna's
    # TPE the second best, random search worse. In the whole pool TPE is below 100; without kubetune's studies its
    # own best losses set the scale, so it scores exactly 100, and kubetune's row is gone.
    rows = []
    for problem in ("DT_iris_acc", "kNN_iris_nll"):
        for seed in (0, 1):
            for optimizer, losses in (("kubetune-bayesian", [0.5, 0.1]), ("optuna-tpe", [0.6, 0.3]),
                                      ("random", [0.9, 0.7])):
                rows.append(asdict(bm.Run(problem, optimizer, "seq40", seed, list(losses) * 20, 1.0, 1.0)))
    partial = tmp_path / "r.partial.jsonl"
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows))
    whole = bm.from_partial(partial)
    assert bm.score(whole, "seq40", "optuna-tpe")[0] < 99.0
    assert bm.score(bm.only(whole, ["optuna-tpe"]), "seq40", "optuna-tpe")[0] == pytest.approx(100.0)
    capsys.readouterr()
    assert bm.main(["--from-json", str(partial), "--optimizers", "optuna-tpe"]) == 0
    out = capsys.readouterr().out
    assert "| optuna-tpe | **100.0** |" in out and "kubetune-bayesian |" not in out
    with pytest.raises(SystemExit):
        bm.main(["--from-json", str(partial), "--optimizers", "hyperopt-tpe"])
    assert "not in these results: hyperopt-tpe" in capsys.readouterr().err


class _InProcess:
    """A ProcessPoolExecutor stand-in that runs each task in this process (so a wrapped run_one is seen)."""

    def __init__(self, max_workers: int) -> None:
        pass

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def submit(self, fn: object, *args: object) -> object:
        from concurrent.futures import Future

        f: Future[object] = Future()
        f.set_result(fn(*args))  # type: ignore[operator]
        return f


def test_an_optimizer_with_more_seeds_than_the_baselines_is_paired_on_the_seeds_both_have(tmp_path: Path) -> None:
    # The default has seeds 0-3, the peer and random search 0-1 (the peer's studies held fixed, as the challenge
    # held its baselines). One problem, 1 round of 1: random search ends at 10 and 12 -> clip 11; the best
    # evaluation of anyone is 1 (the default's seed 3) -> opt 1 (minus the pad), span 10.
    P = "DT_wine_nll"
    studies = {(P, "random", 0): [10.0], (P, "random", 1): [12.0], (P, "peer", 0): [6.0], (P, "peer", 1): [6.0]}
    studies |= {(P, bm.DEFAULT, s): [v] for s, v in enumerate([2.0, 2.0, 11.0, 1.0])}
    rows = [asdict(bm.Run(p, o, "seq40", s, losses * 40, 0.0, 0.0)) for (p, o, s), losses in studies.items()]
    partial = tmp_path / "r.partial.jsonl"
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = bm.from_partial(partial)
    # the problem is complete: every optimizer has every one of its own seeds
    assert res.config.problems == [P] and res.config.missing == []
    assert bm.seeds_of(res, bm.DEFAULT) == [0, 1, 2, 3] and bm.seeds_of(res, "peer") == [0, 1]
    # the default's normalized losses 0.1, 0.1, 1.0, 0 -> mean 0.3 -> 70; the peer's 0.5, 0.5 -> 50
    assert bm.score(res, "seq40", bm.DEFAULT)[0] == pytest.approx(70.0, abs=1e-6)
    assert bm.score(res, "seq40", "peer")[0] == pytest.approx(50.0, abs=1e-6)
    # paired on seeds 0 and 1 the default wins (0.1 against 0.5 both times); its seeds 2 and 3 are not paired with
    # anything (over all four of its seeds the difference would be 0.2 with a large spread, a tie)
    assert bm.win_tie_loss(res, "seq40", bm.DEFAULT, "peer") == (1, 0, 0)
    # no seed in common: nothing to pair, a tie (and no mean of an empty difference)
    apart = bm.Results(res.config, [r for r in res.runs if r.optimizer != "peer"]
                       + [bm.Run(P, "peer", "seq40", 9, [6.0] * 40, 0.0, 0.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bm.win_tie_loss(apart, "seq40", bm.DEFAULT, "peer") == (0, 1, 0)
    # the portfolio ceiling takes the better study of each seed both have: min(0.1, 0.5) twice -> 90; the best
    # optimizer per problem is the default (0.3) -> 70
    assert bm.ceilings(res, "seq40") == pytest.approx((70.0, 90.0), abs=1e-6)
    text = bm.report(res)
    assert f"Seeds: [0, 1, 2, 3] ({bm.DEFAULT}); [0, 1] (random, peer);" in text
    # a seed the default lacks on some problem leaves that problem unfinished
    partial.write_text(partial.read_text() + json.dumps(asdict(bm.Run("DT_iris_nll", bm.DEFAULT, "seq40", 4, [1.0] * 40,
                                                                      0.0, 0.0))) + "\n")
    cut = bm.from_partial(partial)
    assert cut.config.problems == [] and set(cut.config.missing) == {f"{P} (unfinished)", "DT_iris_nll (unfinished)"}


def test_fixed_baselines_runs_only_the_named_optimizer_against_the_recorded_peers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The baselines are hand-made studies in the --json's .partial.jsonl (seed 0 of random search and a peer), so
    # they cannot have been run by this invocation; the default's seed 0 is there too. Asked for 3 seeds of the
    # default, the run must run exactly its seeds 1 and 2, and neither random search nor the peer.
    P, budget = "DT_iris_acc", "batch8"
    n = 2 * 4  # --quick's batch8: 2 rounds of 4
    held = [bm.Run(P, "random", budget, 0, [-0.5] * n, 0.0, 0.0), bm.Run(P, "optuna-tpe", budget, 0, [-0.9] * n, 0.0, 0.0),
            bm.Run(P, bm.DEFAULT, budget, 0, [-0.94] * n, 0.0, 0.0)]
    json_path = tmp_path / "r.json"
    partial = json_path.with_suffix(".partial.jsonl")
    partial.write_text("".join(json.dumps(asdict(r)) + "\n" for r in held))
    ran: list[tuple[str, str, int]] = []
    real = bm.run_one

    def counting(problem: str, optimizer: str, budget: str, rounds: int, batch: int, seed: int) -> bm.Run:
        ran.append((problem, optimizer, seed))
        return real(problem, optimizer, budget, rounds, batch, seed)

    monkeypatch.setattr(bm, "ProcessPoolExecutor", _InProcess)
    monkeypatch.setattr(bm, "run_one", counting)
    args = ["--quick", "--seeds", "3", "--problems", P, "--budgets", budget, "--json", str(json_path), "--resume",
            "--workers", "1"]
    capsys.readouterr()
    assert bm.main([*args, "--optimizers", bm.DEFAULT, "--fixed-baselines"]) == 0
    out = capsys.readouterr().out
    assert sorted(ran) == [(P, bm.DEFAULT, 1), (P, bm.DEFAULT, 2)]
    assert f"Seeds: [0, 1, 2] ({bm.DEFAULT}); [0] (optuna-tpe, random);" in out
    res = bm.from_partial(partial)
    assert res.config.problems == [P] and len(res.runs) == 5
    # the default's new studies are scored against the held studies: against the peers, opt is the peer's -0.9
    # (minus the pad) and clip random search's -0.5; the seed-0 study, at -0.94, is 0.1 of the span better than opt
    base = bm.baselines(res, budget, bm.reference_pool(res))[P]
    assert base.opt == pytest.approx(-0.9, abs=1e-9) and base.clip == -0.5
    assert bm.by_seed(res, budget, bm.DEFAULT, bm.reference_pool(res))[P][0] == pytest.approx(-0.1, abs=1e-9)
    assert f"| {bm.DEFAULT} |" in out and "| optuna-tpe |" in out
    # without --resume, or with a problem whose baseline is not in the file, it refuses
    for bad, why in ((["--quick", "--optimizers", bm.DEFAULT, "--fixed-baselines", "--json", str(json_path)],
                      "--fixed-baselines needs --json, --resume and --optimizers"),
                     ([*args[:3], "--problems", "kNN_iris_nll", *args[5:], "--optimizers", bm.DEFAULT,
                       "--fixed-baselines"], "no random-search studies (the baseline) for 1 of the problems asked: "
                                             "kNN_iris_nll batch8")):
        with pytest.raises(SystemExit):
            bm.main(bad)
        assert why in capsys.readouterr().err
    assert len(ran) == 2
