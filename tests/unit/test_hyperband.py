"""The hyperband algorithm: ladder, brackets, asynchronous promotions, exhaustion, settings."""

from __future__ import annotations

from collections import Counter

import pytest

from kubetune.engine import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    Observation,
    ObservationState,
    SearchSpace,
    make_sampler,
)
from kubetune.engine.hyperband import HyperbandSampler

SPACE = SearchSpace.of({"x": FloatDistribution(0.0, 1.0), "epochs": IntDistribution(1, 27)})
COMPLETE, FAILED, PRUNED = ObservationState.COMPLETE, ObservationState.FAILED, ObservationState.PRUNED


def hb(space: SearchSpace = SPACE, seed: int = 0, **settings) -> HyperbandSampler:
    return make_sampler("hyperband", space, seed=seed, settings={"resourceParameter": "epochs", **settings})


def done(x: float, epochs: int, loss: float | None = None, state=COMPLETE) -> Observation:
    return Observation({"x": x, "epochs": epochs}, state, loss if loss is not None else x)


# --------------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("dist", "settings", "ladder"),
    [
        (IntDistribution(1, 27), {}, [1, 3, 9, 27]),
        (IntDistribution(1, 100), {}, [1, 4, 11, 33, 100]),
        (IntDistribution(1, 100), {"reductionFactor": 2}, [2, 3, 6, 13, 25, 50, 100]),
        (IntDistribution(1, 100), {"minResource": 10, "maxResource": 90}, [10, 30, 90]),
        (IntDistribution(2, 20, step=2), {}, [2, 6, 20]),
        (IntDistribution(5, 8), {}, [8]),  # less than eta apart: one rung, plain random search at the full budget
    ],
)
def test_ladder(dist, settings, ladder):
    s = hb(SearchSpace.of({"x": FloatDistribution(0, 1), "epochs": dist}), **settings)
    assert s.ladder == ladder
    assert all(dist.contains(r) for r in s.ladder)


@pytest.mark.parametrize(
    ("space", "settings", "message"),
    [
        (SPACE, {}, "needs settings.resourceParameter"),
        (SPACE, {"resourceParameter": "nope"}, "is not a parameter"),
        (SPACE, {"resourceParameter": "x"}, "must name an int parameter"),
        (SearchSpace.of({"epochs": IntDistribution(1, 27)}), {"resourceParameter": "epochs"}, "at least one parameter"),
        (SPACE, {"resourceParameter": "epochs", "minResource": 9, "maxResource": 9}, "less than"),
        (SPACE, {"resourceParameter": "epochs", "maxResource": 30}, "within the resource parameter"),
        (SearchSpace.of({"x": FloatDistribution(0, 1), "epochs": IntDistribution(0, 27)}),
         {"resourceParameter": "epochs"}, "at least 1"),
    ],
)
def test_settings_errors(space, settings, message):
    with pytest.raises(ValueError, match=message):
        make_sampler("hyperband", space, settings=settings)


def test_brackets_get_hyperband_shares_of_new_configurations():
    s = hb()
    assert s.s_max == 3
    # Hyperband's bracket sizes for eta=3, s_max=3: 27, 12, 6, 4 configurations.
    counts = Counter(s.bracket_of_new(j) for j in range(4900))
    for bracket, n in {3: 27, 2: 12, 1: 6, 0: 4}.items():
        assert counts[bracket] == pytest.approx(4900 * n / 49, rel=0.02)
    # Interleaved from the start, not one bracket after the other.
    assert set(s.bracket_of_new(j) for j in range(12)) == {0, 1, 2, 3}


def test_new_configurations_start_on_their_brackets_base_rung():
    s = hb()
    first = s.suggest([], [], n=20)
    for j, p in enumerate(first):
        assert p["epochs"] == s.ladder[s.s_max - s.bracket_of_new(j)]
    assert len({p["x"] for p in first}) == 20


# --------------------------------------------------------------------------------------------------- promotions


def base_runs(s: HyperbandSampler, losses: list[float], bracket: int, state=COMPLETE) -> list[Observation]:
    """Finished trials of ``bracket`` on its base rung with the given losses (x identifies them)."""
    r = s.ladder[s.s_max - bracket]
    return [done(0.01 * (i + 1), r, loss, state) for i, loss in enumerate(losses)]


def test_promotes_the_best_third_of_a_rung_asynchronously():
    s = hb()
    hist = base_runs(s, [0.5, 0.2], bracket=3)
    assert s.promotions(s.lineages(hist, [])) == []  # floor(2/3) = 0
    hist = base_runs(s, [0.5, 0.2, 0.9], bracket=3)
    assert s.promotions(s.lineages(hist, [])) == [{"x": 0.02, "epochs": 3}]  # floor(3/3) = 1: the best
    nxt = s.suggest(hist, [], n=2)
    assert nxt[0] == {"x": 0.02, "epochs": 3}  # promotions come before new configurations
    assert nxt[1]["x"] not in (0.01, 0.02, 0.03)
    # Pending promotion: not promoted twice.
    assert s.promotions(s.lineages(hist, [{"x": 0.02, "epochs": 3}])) == []
    # Six finished: floor(6/3) = 2, the second best joins.
    hist6 = hist + [done(0.04, 1, 0.95), done(0.05, 1, 0.1), done(0.06, 1, 0.99)]
    assert s.promotions(s.lineages(hist6, [])) == [{"x": 0.05, "epochs": 3}, {"x": 0.02, "epochs": 3}]
    promoted = hist6 + [done(0.02, 3, 0.3)]
    assert s.promotions(s.lineages(promoted, [])) == [{"x": 0.05, "epochs": 3}]


def test_ties_go_to_the_earlier_trial():
    s = hb()
    hist = base_runs(s, [0.5, 0.5, 0.5], bracket=3)
    assert s.promotions(s.lineages(hist, [])) == [{"x": 0.01, "epochs": 3}]


def test_failed_and_pruned_trials_fill_a_rung_but_are_never_promoted():
    s = hb()
    hist = base_runs(s, [0.1, 0.2, 0.3], bracket=3, state=FAILED)
    assert s.promotions(s.lineages(hist, [])) == []
    # They count towards the rung (quota floor(3/3) = 1) and rank behind every complete trial, whatever loss
    # they reported before stopping.
    hist = [done(0.01, 1, 0.1, PRUNED), done(0.02, 1, 0.2, FAILED), done(0.03, 1, 0.9)]
    assert s.promotions(s.lineages(hist, [])) == [{"x": 0.03, "epochs": 3}]


def test_higher_rungs_first_and_brackets_kept_apart():
    s = hb()
    # Bracket 3 (base 1 epoch): one lineage already at rung 2 (9 epochs) among three.
    hist = [done(0.1 * i, 1, 0.1 * i) for i in range(1, 10)]  # nine at 1 epoch: top 3 promoted to 3
    hist += [done(0.1, 3, 0.3), done(0.2, 3, 0.2), done(0.3, 3, 0.1)]  # three at 3 epochs: top 1 -> 9
    # Bracket 2 (base 3 epochs): three lineages started at 3 epochs.
    hist += [done(0.55, 3, 0.05), done(0.65, 3, 0.06), done(0.75, 3, 0.07)]
    promos = s.promotions(s.lineages(hist, []))
    # Rung 1 (3 epochs) of bracket 3 and of bracket 2, each promoting its own top third to 9 epochs.
    assert promos[0] == {"x": pytest.approx(0.3), "epochs": 9}
    assert promos[1] == {"x": 0.55, "epochs": 9}
    assert len(promos) == 2  # rung 0 of bracket 3 already promoted its top 3


def test_off_ladder_trials_are_kept_but_never_promoted():
    s = hb()
    hist = [done(0.01, 2, 0.0), done(0.02, 1, 0.5), done(0.03, 1, 0.6), done(0.04, 1, 0.7)]
    promos = s.promotions(s.lineages(hist, []))
    assert promos == [{"x": 0.02, "epochs": 3}]
    assert all(p["x"] != 0.01 for p in s.suggest(hist, [], n=10))


# --------------------------------------------------------------------------------------------------- as a loop


def run(s: HyperbandSampler, n_trials: int, loss, batch: int = 1) -> list[Observation]:
    hist: list[Observation] = []
    while len(hist) < n_trials:
        out = s.suggest(hist, [], n=batch)
        if not out:
            break
        hist += [Observation(p, COMPLETE, loss(p)) for p in out]
    return hist


def test_deterministic_and_replayable():
    loss = lambda p: (p["x"] - 0.3) ** 2 + 1 / p["epochs"]
    a = run(hb(seed=4), 60, loss, batch=3)
    b = run(hb(seed=4), 60, loss, batch=3)
    assert [o.params for o in a] == [o.params for o in b]
    assert hb(seed=4).suggest(a[:30], [], n=4) == hb(seed=4).suggest(a[:30], [], n=4)


def test_spends_most_trials_on_small_budgets_and_promotes_good_configurations():
    loss = lambda p: (p["x"] - 0.3) ** 2 + 1 / p["epochs"]
    hist = run(hb(seed=1), 150, loss)
    epochs = Counter(o.params["epochs"] for o in hist)
    assert epochs[1] > epochs[3] > epochs[9] > 0 and epochs[27] > 0
    full = [o for o in hist if o.params["epochs"] == 27]
    # Configurations that reached the full budget are better than a typical random x.
    promoted = [o for o in full if sum(1 for h in hist if h.params["x"] == o.params["x"]) > 1]
    assert promoted and sum(abs(o.params["x"] - 0.3) for o in promoted) / len(promoted) < 0.2
    # Far less resource than running every configuration at the full budget.
    configs = len({o.params["x"] for o in hist})
    assert sum(o.params["epochs"] for o in hist) < 0.5 * configs * 27


def test_finite_space_is_exhausted_exactly():
    space = SearchSpace.of({"a": CategoricalDistribution(("x", "y", "z")),
                            "b": CategoricalDistribution((1, 2.5, True)),
                            "epochs": IntDistribution(1, 9)})
    s = hb(space, seed=2)
    hist: list[Observation] = []
    for _ in range(100):
        out = s.suggest(hist, [], n=2)
        if not out:
            break
        hist += [Observation(p, COMPLETE, float(len(hist) % 7)) for p in out]
    lineages = Counter(s.lineage_key(o.params) for o in hist)
    assert len(lineages) == 9  # every configuration started once ...
    full_keys = [space.key(o.params) for o in hist]
    assert len(set(full_keys)) == len(full_keys)  # ... and no trial repeated
    assert s.remaining(hist, []) == 0 and s.suggest(hist, [], n=1) == []
    assert sum(lineages.values()) > 9  # some were promoted


def test_remaining_counts_untried_configurations_and_due_promotions():
    space = SearchSpace.of({"a": CategoricalDistribution(("x", "y", "z")), "epochs": IntDistribution(1, 9)})
    s = hb(space)
    assert s.remaining([], []) == 3
    assert hb().remaining([], []) is None  # a continuous parameter: unbounded
    hist = [Observation({"a": a, "epochs": 1}, COMPLETE, float(i)) for i, a in enumerate("xyz")]
    assert s.remaining(hist, []) == 1  # nothing untried; one promotion due (the best of three at 1 epoch)
    assert s.remaining(hist, [{"a": "x", "epochs": 3}]) == 0  # ... and once it is pending, nothing


def test_pending_trials_are_not_repeated_and_batches_are_unique():
    s = hb()
    pending = s.suggest([], [], n=5)
    batch = s.suggest([], pending, n=10)
    keys = [s.lineage_key(p) for p in pending + batch]
    assert len(set(keys)) == 15


def test_promotions_to_higher_rungs_come_first():
    s = hb()
    hist = [done(0.01 * i, 1, 0.01 * i) for i in range(1, 13)]  # twelve at 1 epoch: quota 4
    hist += [done(0.01, 3, 0.5), done(0.02, 3, 0.4), done(0.03, 3, 0.6)]  # top 3 ran 3 epochs: quota 1 -> 9
    assert s.promotions(s.lineages(hist, [])) == [{"x": 0.02, "epochs": 9}, {"x": 0.04, "epochs": 3}]
    assert s.suggest(hist, [], n=1) == [{"x": 0.02, "epochs": 9}]
