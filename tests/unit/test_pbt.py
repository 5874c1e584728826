"""Population-based training (engine/pbt.py, the plan's pbt path) and checkpoints in the trial contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetune.checkpoints import checkpoint_env, deletable
from kubetune.engine import CategoricalDistribution, FloatDistribution, IntDistribution, SearchSpace, make_sampler
from kubetune.engine.pbt import PBTSampler, Segment, quantiles
from kubetune.k8s.jobs import build_job
from kubetune.plan import History, make_plan, recent_segments
from kubetune.spec import ExperimentSpec
from kubetune.trials import MAX_LINEAGE_BYTES, Lineage, Trial, TrialState, json_size
from kubetune.validation import validate_document
from tests.support.local_run import run_local

ROOT = Path(__file__).resolve().parents[2]

SPACE = SearchSpace.of({
    "lr": FloatDistribution(1e-4, 1.0, log=True),
    "drop": FloatDistribution(0.0, 0.5, step=0.05),
    "units": IntDistribution(4, 64),
    "opt": CategoricalDistribution(("adam", "sgd", "rmsprop")),
})


def _spec(**over: object) -> ExperimentSpec:
    doc = yaml.safe_load("""
objective: {metric: q, goal: maximize}
parameters:
  - {name: h0, type: float, min: 0, max: 1}
  - {name: h1, type: float, min: 0, max: 1}
algorithm: {name: pbt, seed: 3, settings: {populationSize: 4, perturbationInterval: 4}}
checkpoints: {persistentVolumeClaim: ck}
maxTrials: 40
parallelTrials: 4
trialTemplate: {spec: {template: {spec: {containers: [{name: t, image: x, command: [run]}]}}}}
""")
    doc.update(over)
    return ExperimentSpec.model_validate(doc)


# -- the sampler --------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=0, max_size=40), st.floats(0.01, 0.5))
def test_quantiles_follow_ray_tunes_sizes_and_split_by_score(losses: list[float], fraction: float) -> None:
    segs = [Segment(i, {}, i, 0, 1, True, x) for i, x in enumerate(losses)]
    bottom, top = quantiles(segs, fraction)
    n = len(losses)
    # Ray Tune's _quantiles, counted independently: ceil(n * q), but at most floor(n / 2); nothing below 2 members
    expected = 0 if n <= 1 else min(math.ceil(n * fraction), n // 2)
    assert len(bottom) == len(top) == expected
    assert not {s.member for s in bottom} & {s.member for s in top}
    rest = [s for s in segs if s not in bottom and s not in top]
    for b in bottom:  # bottom = highest losses (worst), top = lowest
        assert all(b.loss >= s.loss for s in rest + top)  # type: ignore[operator]
    for t in top:
        assert all(t.loss <= s.loss for s in rest + bottom)  # type: ignore[operator]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0, 1), st.data())
def test_explore_keeps_every_value_in_the_space(seed: int, resample: float, data: st.DataObject) -> None:
    s: PBTSampler = make_sampler("pbt", SPACE, seed=1, settings={"resampleProbability": resample,
                                                                  "perturbationFactors": [100.0, 0.001]})
    start = SPACE.from_unit([data.draw(st.floats(0, 1)) for _ in range(len(SPACE))])
    out = s.explore(start, np.random.default_rng(seed))
    assert set(out) == set(start) and SPACE.contains(out)


def test_explore_without_resampling_multiplies_clips_and_moves_categoricals_to_a_neighbour() -> None:
    space = SearchSpace.of({"x": FloatDistribution(0.0, 10.0), "n": IntDistribution(1, 100),
                            "c": CategoricalDistribution(("a", "b", "c"))})
    s: PBTSampler = make_sampler("pbt", space, seed=1, settings={"resampleProbability": 0.0,
                                                                 "perturbationFactors": [2.0]})
    rng = np.random.default_rng(0)
    seen_c = set()
    for _ in range(50):
        out = s.explore({"x": 3.0, "n": 7, "c": "b"}, rng)
        assert out["x"] == 6.0 and out["n"] == 14
        seen_c.add(out["c"])
    assert seen_c == {"a", "c"}
    assert s.explore({"x": 8.0, "n": 90, "c": "a"}, rng)["x"] == 10.0  # 16 clipped to max
    assert s.explore({"x": 8.0, "n": 90, "c": "a"}, rng)["n"] == 100


def _segments(losses: dict[int, float | None], end: int = 4) -> dict[int, Segment]:
    return {m: Segment(10 + m, {"h0": m / 10, "h1": 0.5}, m, end - 4, end, True, x) for m, x in losses.items()}


def test_bottom_members_exploit_top_members_the_others_continue() -> None:
    s: PBTSampler = make_sampler("pbt", SearchSpace.of({"h0": FloatDistribution(0, 1), "h1": FloatDistribution(0, 1)}),
                                 seed=5, settings={"populationSize": 8, "quantileFraction": 0.25,
                                                     "perturbationInterval": 4})
    losses = {m: float(m) for m in range(8)}  # member 0 best (lowest loss), member 7 worst
    out = {n.member: n for n in s.next_segments({m: [x] for m, x in _segments(losses).items()}, [], 8)}
    assert set(out) == set(range(8))
    for m, n in out.items():
        if m in (6, 7):  # bottom quarter: ceil(8 * 0.25) = 2
            assert n.exploited and n.parent in (10, 11) and n.start == 4 and n.end == 8
        else:
            assert not n.exploited and n.parent == 10 + m and n.params == {"h0": m / 10, "h1": 0.5}
            assert (n.start, n.end) == (4, 8)


def test_generations_are_synchronous() -> None:
    s: PBTSampler = make_sampler("pbt", SearchSpace.of({"h0": FloatDistribution(0, 1)}), seed=5,
                                 settings={"populationSize": 4})
    seg = {m: Segment(m, {"h0": 0.1 * m}, m, 0, 5, True, float(m)) for m in range(4)}
    # the first generation first: while a member never ran, nobody else goes on
    out = s.next_segments({0: [seg[0]], 1: [seg[1]]}, busy=[2], n=3)
    assert [(n.member, n.parent, n.start, n.end) for n in out] == [(3, None, 0, 5)]  # default interval 5
    # members at the lowest step go on; one a generation ahead waits, and is ranked by its segment at that step
    ahead = Segment(9, {"h0": 0.0}, 0, 5, 10, True, 100.0)  # member 0's second segment: worst at step 10
    recent = {0: [seg[0], ahead], 1: [seg[1]], 2: [seg[2]], 3: [seg[3]]}
    out = s.next_segments(recent, busy=[1], n=4)
    assert sorted(n.member for n in out) == [2, 3]
    by_member = {n.member: n for n in out}
    assert by_member[3].exploited and by_member[3].parent == 0 and by_member[3].start == 5  # member 0 was best at 5
    assert not by_member[2].exploited and by_member[2].parent == 2
    # the same decisions whichever plan makes them: one at a time, or with the others already started
    assert s.next_segments(recent, busy=[1, 2], n=4) == [by_member[3]]
    assert s.next_segments(recent, busy=[1], n=1) == [by_member[2]]


def test_decisions_are_a_function_of_the_segments_and_the_trial_number() -> None:
    space = SearchSpace.of({"h0": FloatDistribution(0, 1), "h1": FloatDistribution(0, 1)})
    latest = {m: [x] for m, x in _segments({m: float(m) for m in range(8)}).items()}
    a = make_sampler("pbt", space, seed=7, settings={"populationSize": 8}).next_segments(latest, [], 8)
    b = make_sampler("pbt", space, seed=7, settings={"populationSize": 8}).next_segments(dict(reversed(latest.items())),
                                                                                         [], 8)
    assert a == b


# -- the plan -----------------------------------------------------------------------------------------------------


def _toy(params: dict, theta: tuple[float, float], steps: int) -> tuple[float, float]:
    for _ in range(steps):
        theta = (theta[0] * (1 - 0.02 * params["h0"]), theta[1] * (1 - 0.02 * params["h1"]))
    return theta


def _drive(spec: ExperimentSpec, *, restart_at: int | None = None, fail: set[int] = frozenset(),
           order: int = 0, deleted: set[int] | None = None) -> list[Trial]:
    """The backends' loop, simulated: plan, start the new segments, finish one running segment per step (the
    oldest, or by ``order`` a seeded pick), restoring each from the recorded parent's checkpoint. With
    ``restart_at``, the plan's History is dropped after that many finished trials and rebuilt from the records as
    they are stored (to_record / from_record), as a restarted operator does. After every plan, the checkpoints
    :func:`deletable` names are added to ``deleted``; no trial created later restores one of them."""
    deleted = set() if deleted is None else deleted
    store: dict[int, tuple[float, float]] = {}
    trials: dict[int, Trial] = {}
    history = History(spec, "toy")
    rng = np.random.default_rng(order)
    finished = 0
    while True:
        if restart_at is not None and finished == restart_at:
            records = [Trial.from_record(json.loads(json.dumps(t.to_record()))) for t in trials.values()]
            trials = {t.number: t for t in records}
            history = History(spec, "toy", [t for t in records if not t.active])
            restart_at = None
        active = [t for t in trials.values() if t.active]
        plan = make_plan(spec, active, experiment="toy", history=history)
        assert plan.counts.running <= spec.parallel_trials
        for n in plan.create:
            assert n.number not in trials and n.lineage is not None
            assert n.lineage.parent not in deleted
            trials[n.number] = Trial(n.number, n.params, TrialState.RUNNING, lineage=n.lineage)
        active = sorted((t for t in trials.values() if t.active), key=lambda t: t.number)
        done = [t for t in trials.values() if not t.active]
        deleted |= deletable(recent_segments(done), [t.number for t in done], active)
        if not active:
            assert plan.finished
            return sorted(trials.values(), key=lambda t: t.number)
        t = active[int(rng.integers(len(active)))] if order else active[0]
        lin = t.lineage
        assert lin is not None
        if lin.parent is not None:
            parent = trials[lin.parent]
            assert parent.state is TrialState.SUCCEEDED and parent.lineage is not None
            assert lin.start == parent.lineage.end
            assert lin.parent not in deleted  # its checkpoint is still there while it runs
            theta = store[lin.parent]
        else:
            assert lin.start == 0
            theta = (0.9, 0.9)
        theta = _toy(t.params, theta, lin.end - lin.start)
        if t.number in fail:
            t.state = TrialState.FAILED
        else:
            store[t.number] = theta
            t.metrics = {"q": 1.2 - theta[0] ** 2 - theta[1] ** 2}
            t.state = TrialState.SUCCEEDED
        history.add(t)
        finished += 1


def test_a_population_trains_in_segments_with_lineage_and_improves() -> None:
    spec = _spec()
    trials = _drive(spec)
    assert len(trials) == 40
    members = {t.lineage.member for t in trials if t.lineage}
    assert members == {0, 1, 2, 3}
    assert all(t.lineage and t.lineage.end - t.lineage.start == 4 for t in trials)
    assert any(t.lineage and t.lineage.parent is not None
               and trials[t.lineage.parent].lineage.member != t.lineage.member for t in trials)  # exploits happened
    first = max(t.metrics["q"] for t in trials[:4])
    assert max(t.metrics["q"] for t in trials) > first


@pytest.mark.parametrize("order", [0, 1, 2])
def test_a_restart_replays_to_the_same_decisions(order: int) -> None:
    spec = _spec()
    plain = _drive(spec, order=order)
    for restart_at in (3, 11, 26):
        again = _drive(spec, restart_at=restart_at, order=order)
        assert [(t.number, t.params, t.lineage, t.metrics) for t in again] == \
            [(t.number, t.params, t.lineage, t.metrics) for t in plain]


def test_the_plan_with_and_without_a_history_decides_the_same() -> None:
    spec = _spec(maxTrials=20)
    trials = _drive(spec, fail={6})
    # replay every decision from the whole list of trials (no History) and compare with what was created
    for cut in range(4, 20):
        known = [Trial.from_record(t.to_record()) for t in trials[:cut]]
        # the trials that were running when trial `cut` was created: those created later never existed then
        plan_full = make_plan(spec, known, experiment="toy")
        history = History(spec, "toy", [t for t in known if not t.active])
        plan_hist = make_plan(spec, [t for t in known if t.active], experiment="toy", history=history)
        assert [(n.number, n.params, n.lineage) for n in plan_full.create] == \
            [(n.number, n.params, n.lineage) for n in plan_hist.create]


def test_a_failed_segment_is_replaced_from_a_top_member() -> None:
    trials = _drive(_spec(maxTrials=16), fail={5})
    after = [t for t in trials if t.lineage and t.lineage.member == trials[5].lineage.member and t.number > 5]
    assert after and after[0].lineage.parent is not None and after[0].lineage.parent != 5


def test_pbt_ends_with_max_trials_not_with_an_exhausted_space() -> None:
    doc = {"parameters": [{"name": "h0", "type": "int", "min": 1, "max": 2}, {"name": "h1", "type": "float", "min": 0,
                                                                              "max": 1, "step": 0.5}]}
    trials = _drive(_spec(**doc, maxTrials=12))
    assert len(trials) == 12


# -- records, the contract and cleanup ----------------------------------------------------------------------------


def test_lineage_round_trips_and_is_bounded() -> None:
    big = Lineage(2**53 - 1, 2**53 - 1, 2**53 - 1, 2**53 - 1)
    assert json_size(big.to_record()) <= MAX_LINEAGE_BYTES
    t = Trial(3, {"a": 1}, TrialState.SUCCEEDED, lineage=big, checkpoint="/c/" + "x" * 2000)
    rec = t.to_record()
    back = Trial.from_record(rec)
    assert back.lineage == big and len(back.checkpoint) <= 512
    for bad in ({"member": -1, "start": 0, "end": 1}, {"member": 1, "start": 0}, {"member": 1, "start": 0, "end": 2,
                                                                                  "parent": "x"}, [1, 2], "x"):
        assert Trial.from_record({**rec, "lineage": bad}).lineage is None
    assert Trial.from_record({**rec, "checkpoint": 5}).checkpoint == ""


def test_checkpoint_env_and_the_job_mount() -> None:
    env = checkpoint_env("/ck/exp", "exp", 7, Lineage(1, 3, 8, 12))
    assert env == {"KUBETUNE_CHECKPOINT_DIR": "/ck/exp/exp-0007", "KUBETUNE_RESTORE_DIR": "/ck/exp/exp-0003",
                   "KUBETUNE_RESTORE_STEP": "8", "KUBETUNE_END_STEP": "12"}
    assert checkpoint_env("/ck/exp", "exp", 0, Lineage(0, None, 0, 4)) == {
        "KUBETUNE_CHECKPOINT_DIR": "/ck/exp/exp-0000", "KUBETUNE_END_STEP": "4"}
    spec = _spec()
    body = {"metadata": {"name": "exp", "namespace": "ns", "uid": "u"}}
    job = build_job(body, spec, 7, {"h0": 0.5, "h1": 0.1}, Lineage(1, 3, 8, 12))
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "kubetune-checkpoints", "persistentVolumeClaim": {"claimName": "ck"}}]
    c = pod["containers"][0]
    assert c["volumeMounts"] == [{"name": "kubetune-checkpoints", "mountPath": "/checkpoints"}]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KUBETUNE_RESTORE_DIR"] == "/checkpoints/exp/exp-0003" and env["KUBETUNE_END_STEP"] == "12"
    plain = build_job(body, _spec(algorithm={"name": "random"}, checkpoints=None), 1, {"h0": 0.5, "h1": 0.1})
    assert "volumes" not in plain["spec"]["template"]["spec"]


def test_deletable_checkpoints_are_never_restored_from_later() -> None:
    """Over whole runs (``_drive`` checks, at every step, that no trial restores a checkpoint found deletable
    before), checkpoints are deleted as the run goes, and at the end only each member's last two are left."""
    for order in range(4):
        deleted: set[int] = set()
        trials = _drive(_spec(maxTrials=40), order=order, deleted=deleted)
        kept = {t.number for t in trials} - deleted
        assert kept == {t.number for segs in recent_segments(trials).values() for t in segs}


def test_spec_rules_for_pbt() -> None:
    base = yaml.safe_load((ROOT / "examples" / "pbt-toy.yaml").read_text())
    assert validate_document(base)[1] == []

    def problems(**changes: object) -> str:
        doc = json.loads(json.dumps(base))
        for k, v in changes.items():
            if v is None:
                doc["spec"].pop(k, None)
            else:
                doc["spec"][k] = v
        return " ".join(str(p) for p in validate_document(doc)[1])

    assert "the pbt algorithm needs spec.checkpoints" in problems(checkpoints=None)
    assert "earlyStopping cannot be combined with the pbt algorithm" in problems(earlyStopping={"rule": "median"})
    assert "initialTrials cannot be combined with the pbt algorithm" in problems(initialTrials=[{"h0": 0.5,
                                                                                                "h1": 0.5}])
    assert "maxTrials counts segments and must be at least settings.populationSize" in problems(maxTrials=3,
                                                                                                parallelTrials=1)
    assert "perturbationFactors" in problems(algorithm={"name": "pbt", "settings": {"perturbationFactors": [0]}})
    assert "quantileFraction" in problems(algorithm={"name": "pbt", "settings": {"quantileFraction": 0.6}})
    assert "settings.perturbationInterval applies only to algorithm pbt" in problems(
        algorithm={"name": "random", "settings": {"perturbationInterval": 3}})
    assert problems(algorithm={"name": "random"}) == ""  # checkpoints without pbt are fine


# -- kubetune run -------------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_kubetune_run_restores_checkpoints_and_deletes_the_ones_nothing_needs(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "pbt-toy.yaml").read_text())
    doc["spec"]["maxTrials"] = 16
    doc["spec"]["parallelTrials"] = 3
    proc, out = run_local(tmp_path, doc, timeout=240)
    assert "population:" in proc.stdout and "schedule of the best trial:" in proc.stdout
    assert sum(line.startswith("  member ") for line in proc.stdout.splitlines()) == 4
    # the report's summary shows the population and the best trial's schedule
    from kubetune.report.html import build
    from kubetune.results import load

    doc = build(load(str(out))).html
    assert "<b>population</b>#0 step" in doc and "<b>best trial&#x27;s schedule</b>steps 0-" in doc
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(records) == 16 and all(r["state"] == "Succeeded" for r in records)  # a bad restore exits 3
    by_number = {r["number"]: r for r in records}
    for r in records:
        lin = r["lineage"]
        assert r["checkpoint"] == str(out / "checkpoints" / f"pbt-toy-{r['number']:04d}")
        # what the trial reported starts right after the step it restored, and ends at its segment's end
        assert [p[0] for p in r["curve"]] == list(range(lin["start"] + 1, lin["end"] + 1))
        if "parent" in lin:
            assert lin["start"] == by_number[lin["parent"]]["lineage"]["end"]
    # a process per trial, each run once (its report file written by one process)
    assert len(list((out / "trials").iterdir())) == 16
    # cleanup: only each member's last two checkpoints are left at the end
    left = sorted(p.name for p in (out / "checkpoints").iterdir())
    recent = recent_segments(Trial.from_record(r) for r in records)
    assert left == sorted(f"pbt-toy-{t.number:04d}" for segs in recent.values() for t in segs)
    for name in left:
        saved = json.loads((out / "checkpoints" / name / "theta.json").read_text())
        assert saved["step"] == by_number[int(name[-4:])]["lineage"]["end"]


# -- lineage in the results ---------------------------------------------------------------------------------------


def test_schedule_follows_parents_merges_equal_segments_and_is_bounded() -> None:
    from kubetune.lineage import MAX_SCHEDULE_ROWS, population, schedule

    a, b = {"h0": 0.5, "h1": 0.1}, {"h0": 0.6, "h1": 0.1}
    trials = {
        0: Trial(0, a, TrialState.SUCCEEDED, {"q": 1.0}, lineage=Lineage(0, None, 0, 4)),
        1: Trial(1, b, TrialState.SUCCEEDED, {"q": 0.5}, lineage=Lineage(1, None, 0, 4)),
        2: Trial(2, a, TrialState.SUCCEEDED, {"q": 2.0}, lineage=Lineage(0, 0, 4, 8)),
        3: Trial(3, b, TrialState.SUCCEEDED, {"q": 2.5}, lineage=Lineage(1, 0, 4, 8)),  # exploited member 0
        4: Trial(4, b, TrialState.SUCCEEDED, {"q": 3.0}, lineage=Lineage(1, 3, 8, 12)),
    }
    s = schedule(trials, trials[4])
    assert [(r.start, r.end, dict(r.params), r.first, r.last) for r in s.rows] == [(0, 4, a, 0, 0), (4, 12, b, 3, 4)]
    assert s.omitted == 0
    members = {m.member: (m.latest.number, m.segments, m.exploits) for m in population(trials.values())}
    assert members == {0: (2, 2, 0), 1: (4, 3, 1)}
    # a chain of 1,000 alternating segments: the last 50 rows, the rest counted
    long = {n: Trial(n, a if n % 2 else b, TrialState.SUCCEEDED, lineage=Lineage(0, n - 1 if n else None, 4 * n,
                                                                                 4 * n + 4)) for n in range(1000)}
    s = schedule(long, long[999])
    assert len(s.rows) == MAX_SCHEDULE_ROWS and s.omitted == 1000 - MAX_SCHEDULE_ROWS
    assert s.rows[-1].last == 999 and s.rows[0].first == 1000 - MAX_SCHEDULE_ROWS


def test_sdk_reads_the_checkpoint_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import kubetune_trial as kt

    for k in ("KUBETUNE_CHECKPOINT_DIR", "KUBETUNE_RESTORE_DIR", "KUBETUNE_RESTORE_STEP", "KUBETUNE_END_STEP"):
        monkeypatch.delenv(k, raising=False)
    assert (kt.checkpoint_dir(), kt.restore_dir(), kt.restore_step(), kt.end_step()) == (None, None, 0, None)
    monkeypatch.setenv("KUBETUNE_CHECKPOINT_DIR", str(tmp_path / "a" / "b"))
    monkeypatch.setenv("KUBETUNE_RESTORE_DIR", str(tmp_path / "p"))
    monkeypatch.setenv("KUBETUNE_RESTORE_STEP", "12")
    monkeypatch.setenv("KUBETUNE_END_STEP", "16")
    assert kt.checkpoint_dir() == str(tmp_path / "a" / "b") and (tmp_path / "a" / "b").is_dir()
    assert (kt.restore_dir(), kt.restore_step(), kt.end_step()) == (str(tmp_path / "p"), 12, 16)
    monkeypatch.setenv("KUBETUNE_END_STEP", "-3")
    assert kt.end_step() is None


@pytest.mark.timeout(300)
def test_digits_sgd_example_runs_with_kubetune_run(tmp_path: Path) -> None:
    """examples/digits-sgd-pbt.yaml as shipped, its budget cut to two generations: the second restores the pickled
    models of the first and trains them on."""
    doc = yaml.safe_load((ROOT / "examples" / "digits-sgd-pbt.yaml").read_text())
    population = doc["spec"]["algorithm"]["settings"]["populationSize"]
    interval = doc["spec"]["algorithm"]["settings"]["perturbationInterval"]
    doc["spec"]["maxTrials"] = 2 * population
    proc, out = run_local(tmp_path, doc, timeout=280)
    trials = [Trial.from_record(json.loads(line)) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 2 * population and all(t.state is TrialState.SUCCEEDED for t in trials)
    for t in trials[population:]:
        assert t.lineage is not None and t.lineage.parent is not None and t.lineage.start == interval
        assert [s for s, _ in t.curve] == list(range(interval + 1, 2 * interval + 1))
        assert t.metrics["accuracy"] > 0.8


@pytest.mark.timeout(300)
def test_benchmark_quick_mode_scores_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import pbt as bench

    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| toy") or line.startswith("| sgd-digits")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.split("|")[2:-2]]
        assert len(cells) == len(bench.METHODS)
        assert all(math.isfinite(float(c.split("±")[0])) for c in cells), row
    assert "the best pbt member's schedule" in out


@pytest.mark.parametrize("algorithm", sorted(__import__("kubetune.engine", fromlist=["SAMPLERS"]).SAMPLERS))
def test_every_algorithm_gives_its_trials_their_own_checkpoint_directory(algorithm: str) -> None:
    """spec.checkpoints with every algorithm: each new trial's Job mounts the claim and names its own directory;
    only pbt segments after the first generation (and hyperband's promotions) restore one."""
    params = [{"name": "h0", "type": "float", "min": 0, "max": 1, "step": 0.25},
              {"name": "h1", "type": "int", "min": 1, "max": 9}]
    settings = {"resourceParameter": "h1"} if algorithm == "hyperband" else {}
    if algorithm == "pbt":
        settings = {"populationSize": 4, "perturbationInterval": 2}
    spec = _spec(parameters=params, algorithm={"name": algorithm, "seed": 1, "settings": settings},
                 maxTrials=8, parallelTrials=4)
    body = {"metadata": {"name": "exp", "namespace": "ns", "uid": "u"}}
    trials: list[Trial] = []
    dirs = []
    for _ in range(8):  # rounds: four trials, then more once they finished, until maxTrials
        plan = make_plan(spec, trials, experiment="exp")
        for n in plan.create:
            job = build_job(body, spec, n.number, n.params, n.lineage)
            pod = job["spec"]["template"]["spec"]
            assert pod["volumes"][-1]["persistentVolumeClaim"] == {"claimName": "ck"}
            env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
            dirs.append(env["KUBETUNE_CHECKPOINT_DIR"])
            restores = "KUBETUNE_RESTORE_DIR" in env
            assert restores == (n.lineage is not None and n.lineage.parent is not None), (n.number, env)
            if algorithm == "pbt":
                assert restores == (n.number >= 4)
            elif algorithm != "hyperband":  # hyperband's promotions restore what they promote (test_resume.py)
                assert n.lineage is None
            trials.append(Trial(n.number, n.params, TrialState.SUCCEEDED, {"q": 0.1 * n.number}, [(2, 0.1)],
                                lineage=n.lineage))
    # every trial made (8, or fewer when a finite space ran out), each with its own directory
    assert len(dirs) >= 6 and dirs == [f"/checkpoints/exp/exp-{i:04d}" for i in range(len(dirs))]
