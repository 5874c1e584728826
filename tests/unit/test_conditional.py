"""Conditional parameters (``when``): the space's arithmetic against brute force, the models ignoring inactive
values, the template's injection rules, ``kubetune run``, the report and the client with trials that lack a
parameter, and the suggestions of spaces without conditions unchanged."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetune.engine import (
    SAMPLERS,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    Observation,
    ObservationState,
    SearchSpace,
    make_sampler,
)
from kubetune.engine.bayesian import BayesianSampler
from kubetune.engine.space import Condition
from kubetune.template import render_pod_spec, template_problems
from kubetune.validation import validate_document

ROOT = Path(__file__).resolve().parents[2]

SVM = SearchSpace.of(
    {
        "kernel": CategoricalDistribution(("rbf", "poly", "sigmoid")),
        "C": IntDistribution(1, 1000, log=True),
        "degree": IntDistribution(2, 5),
        "coef0": FloatDistribution(0.0, 1.0, step=0.25),
        "mode": CategoricalDistribution(("a", "b")),
        "depth": IntDistribution(1, 4),
    },
    {
        "degree": Condition("kernel", ("poly",)),
        "coef0": Condition("kernel", ("poly", "sigmoid")),
        "mode": Condition("kernel", ("sigmoid",)),
        "depth": Condition("mode", ("b",)),
    },
)


# -- the space: activity, identity, and the grid by arithmetic against brute force --------------------------------


def test_active_parameters_follow_the_chain_of_conditions() -> None:
    assert SVM.active_names({"kernel": "rbf", "C": 1.0}) == ["kernel", "C"]
    assert SVM.active_names({"kernel": "poly", "C": 1.0, "degree": 3, "coef0": 0.5}) == \
        ["kernel", "C", "degree", "coef0"]
    assert SVM.active_names({"kernel": "sigmoid", "C": 1.0, "coef0": 0.0, "mode": "b", "depth": 2}) == \
        ["kernel", "C", "coef0", "mode", "depth"]
    # depth's parent is itself inactive under rbf, whatever value a stray "mode" holds
    assert "depth" not in SVM.active_names({"kernel": "rbf", "C": 1.0, "mode": "b"})


def test_contains_and_key_ignore_nothing_but_inactive_parameters() -> None:
    rbf = {"kernel": "rbf", "C": 1.0}
    assert SVM.contains(rbf)
    assert not SVM.contains({**rbf, "degree": 3})  # an inactive parameter must be absent
    assert not SVM.contains({"kernel": "poly", "C": 1.0, "coef0": 0.5})  # an active one present
    # Two configurations differing only in inactive parameters are the same configuration.
    assert SVM.key({**rbf, "degree": 3}) == SVM.key({**rbf, "degree": 5}) == SVM.key(rbf)
    assert SVM.key({"kernel": "poly", "C": 1.0, "degree": 3, "coef0": 0.5}) != \
        SVM.key({"kernel": "poly", "C": 1.0, "degree": 4, "coef0": 0.5})
    assert SVM.from_unit([0.1, 0.5, 0.9, 0.9, 0.9, 0.9]) == {"kernel": "rbf", "C": SVM.distributions[1].from_unit(0.5)}
    assert all(math.isnan(u) for u in SVM.to_unit(rbf)[2:])


def _brute_force(space: SearchSpace) -> set[tuple[object, ...]]:
    """Every combination of every parameter's values, reduced to its active parameters: the configurations."""
    axes = [d.grid() for d in space.distributions]
    out = set()
    for values in itertools.product(*axes):
        out.add(space.key(space.active(dict(zip(space.names, values)))))
    return out


@st.composite
def conditional_spaces(draw: st.DrawFn) -> SearchSpace:
    """Small finite spaces with random forests of conditions (parents categorical and earlier)."""
    n = draw(st.integers(2, 6))
    dims: list[tuple[str, Any]] = []
    conditions: list[tuple[str, Condition]] = []
    for i in range(n):
        name = f"p{i}"
        kind = draw(st.sampled_from(["cat", "int", "float"]))
        if kind == "cat":
            dist: Any = CategoricalDistribution(tuple(f"v{j}" for j in range(draw(st.integers(1, 3)))))
        elif kind == "int":
            dist = IntDistribution(0, draw(st.integers(1, 3)))
        else:
            dist = FloatDistribution(0.0, 1.0, step=draw(st.sampled_from([0.5, 1.0])))
        parents = [(j, d) for j, (_, d) in enumerate(dims) if isinstance(d, CategoricalDistribution)]
        if parents and draw(st.booleans()):
            j, parent = draw(st.sampled_from(parents))
            values = draw(st.lists(st.sampled_from(parent.choices), min_size=1, unique=True))
            conditions.append((name, Condition(f"p{j}", tuple(values))))
        dims.append((name, dist))
    return SearchSpace(tuple(dims), tuple(conditions))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conditional_spaces())
def test_grid_size_and_points_match_brute_force(space: SearchSpace) -> None:
    expected = _brute_force(space)
    size = space.grid_size()
    assert size == len(expected)
    points = [space.point(k) for k in range(size)]
    keys = [space.key(p) for p in points]
    assert len(set(keys)) == size and set(keys) == expected  # one-to-one onto the configurations
    assert all(space.contains(p) for p in points)


def test_grid_of_a_huge_conditional_space_is_arithmetic() -> None:
    """64 parameters of a billion values each under conditions: sizes and points without listing anything."""
    dims: list[tuple[str, Any]] = [("branch", CategoricalDistribution(tuple(f"b{i}" for i in range(8))))]
    conditions = []
    for i in range(63):
        dims.append((f"x{i}", IntDistribution(0, 10**9 - 1)))
        conditions.append((f"x{i}", Condition("branch", (f"b{i % 8}",))))
    space = SearchSpace(tuple(dims), tuple(conditions))
    per_branch = [sum(1 for i in range(63) if i % 8 == b) for b in range(8)]
    assert space.grid_size() == sum((10**9) ** k for k in per_branch)
    sampler = make_sampler("grid", space, seed=1, settings={"order": "shuffled"})
    started = time.monotonic()
    history: list[Observation] = []
    for _ in range(5):
        for p in sampler.suggest(history, [], n=4):
            assert space.contains(p)
            history.append(Observation(p, ObservationState.COMPLETE, 1.0))
    assert len({space.key(o.params) for o in history}) == 20
    assert time.monotonic() - started < 60  # a guard against listing, not a timing claim
    last = space.grid_size() - 1
    assert space.contains(space.point(last)) and space.point(last)["branch"] == "b7"


def test_conditions_are_checked_on_construction() -> None:
    base = {"k": CategoricalDistribution(("a", "b")), "x": FloatDistribution(0.0, 1.0)}
    with pytest.raises(ValueError, match="declared before"):
        SearchSpace.of({"x": FloatDistribution(0.0, 1.0), "k": CategoricalDistribution(("a",))},
                       {"x": Condition("k", ("a",))})
    with pytest.raises(ValueError, match="categorical"):
        SearchSpace.of({"x": FloatDistribution(0.0, 1.0), "k": CategoricalDistribution(("a",))},
                       {"k": Condition("x", (0.5,))})
    with pytest.raises(ValueError, match="not one of the values"):
        SearchSpace.of(base, {"x": Condition("k", ("c",))})
    with pytest.raises(ValueError, match="not a parameter"):
        SearchSpace.of(base, {"x": Condition("nope", ("a",))})


# -- the models learn nothing from inactive values ----------------------------------------------------------------


def _loss(p: dict[str, Any]) -> float:
    base = (math.log10(float(p["C"])) - 1.0) ** 2
    if p["kernel"] == "poly":
        return base + abs(int(p["degree"]) - 3) + float(p["coef0"])
    if p["kernel"] == "sigmoid":
        return base + 0.5 + (0.3 * int(p["depth"]) if p["mode"] == "b" else 0.7)
    return base + 0.4


def _history(name: str, n: int, seed: int = 3) -> list[Observation]:
    sampler = make_sampler(name, SVM, seed=seed, settings=_settings(name))
    history: list[Observation] = []
    while len(history) < n:
        for p in sampler.suggest(history, [], n=3):
            history.append(Observation(p, ObservationState.COMPLETE, _loss(p)))
    return history


def _settings(name: str) -> dict[str, Any] | None:
    return {"resourceParameter": "depth"} if name == "hyperband" else None


CONDITIONAL = sorted(n for n, c in SAMPLERS.items() if c.supports_conditions and n not in ("hyperband",))


@pytest.mark.parametrize("name", CONDITIONAL)
def test_values_of_inactive_parameters_change_nothing(name: str) -> None:
    """A history whose trials also carry values for their inactive parameters (as a flat encoding would) gives the
    same suggestions: no model and no duplicate check sees a value that had no effect."""
    history = _history(name, 18)
    rng = np.random.default_rng(0)
    noisy = []
    for o in history:
        extra = {n: d.from_unit(float(rng.random())) for n, d in SVM.dims if n not in o.params}
        noisy.append(Observation({**o.params, **extra}, o.state, o.loss))
    pending = [{"kernel": "poly", "C": 3, "degree": 2, "coef0": 0.25}]
    noisy_pending = [{**pending[0], "mode": "b", "depth": 4}]
    a = make_sampler(name, SVM, seed=8).suggest(history, pending, n=3)
    b = make_sampler(name, SVM, seed=8).suggest(noisy, noisy_pending, n=3)
    assert a == b


def test_gp_encodes_inactive_coordinates_by_a_fixed_rule() -> None:
    sampler = BayesianSampler(SVM, seed=0)
    rng = np.random.default_rng(1)
    U = rng.random((200, len(SVM)))
    V = U.copy()
    inactive = ~np.array([[n in SVM.active_names(SVM.from_unit(u.tolist())) for n in SVM.names] for u in U])
    V[inactive] = rng.random(int(inactive.sum()))  # other values where inactive only
    V2 = V.copy()
    V2[inactive] = np.nan  # or none at all
    assert np.array_equal(sampler._encode(U), sampler._encode(V))
    assert np.array_equal(sampler._encode(U), sampler._encode(V2))
    # and the active coordinates still matter
    W = U.copy()
    W[~inactive] = rng.random(int((~inactive).sum()))
    assert not np.array_equal(sampler._encode(U), sampler._encode(W))


def test_tpe_fits_each_group_on_the_trials_where_it_was_active() -> None:
    """Fault injection: poison the coordinates of inactive groups in the unit history; suggestions are unchanged
    only if each group's densities read the rows where it is active (NaN elsewhere)."""
    from kubetune.engine import _unit, tpe

    history = _history("tpe", 24)
    clean = make_sampler("tpe", SVM, seed=4).suggest(history, [], n=2)
    original = _unit.to_unit_matrix

    def poisoned(space: SearchSpace, params: Any) -> np.ndarray:
        X = original(space, params)
        return X if space is not SVM else np.where(np.isnan(X), 0.123, X)

    tpe_to_unit, unit_to_unit = tpe.to_unit_matrix, _unit.to_unit_matrix
    try:
        tpe.to_unit_matrix = _unit.to_unit_matrix = poisoned  # type: ignore[assignment]
        dirty = make_sampler("tpe", SVM, seed=4).suggest(history, [], n=2)
    finally:
        tpe.to_unit_matrix, _unit.to_unit_matrix = tpe_to_unit, unit_to_unit  # type: ignore[assignment]
    assert dirty != clean  # the poison reaches the model when it is not masked: the test can fail


def test_unsupported_algorithms_refuse_a_conditional_space() -> None:
    for name, cls in SAMPLERS.items():
        if cls.supports_conditions:
            continue
        with pytest.raises(ValueError, match="conditional parameters"):
            make_sampler(name, SVM, seed=0)


def test_hyperband_refuses_a_conditional_resource() -> None:
    with pytest.raises(ValueError, match="without a condition"):
        make_sampler("hyperband", SVM, seed=0, settings={"resourceParameter": "degree"})


# -- suggestions of spaces without conditions are unchanged -------------------------------------------------------

MIXED = SearchSpace.of({
    "lr": FloatDistribution(1e-5, 1.0, log=True),
    "dropout": FloatDistribution(0.0, 0.5, step=0.05),
    "layers": IntDistribution(1, 8),
    "units": IntDistribution(16, 1024, log=True),
    "opt": CategoricalDistribution(("adam", "sgd", "rmsprop")),
    "bn": CategoricalDistribution((True, False)),
})
FINITE = SearchSpace.of({
    "lr": FloatDistribution(0.001, 0.1, step=0.001),
    "layers": IntDistribution(1, 8),
    "opt": CategoricalDistribution(("adam", "sgd", "rmsprop")),
    "bn": CategoricalDistribution((True, False)),
})


def _flat_loss(p: dict[str, Any]) -> float:
    return ((math.log10(float(p["lr"])) + 2.5) ** 2 + 0.1 * abs(int(p["layers"]) - 3)
            + 0.2 * (p["opt"] != "adam") + 0.3 * (p["bn"] is True))


# sha256 of the suggestions below, recorded with the engine as it was before conditional parameters existed.
DIGESTS = [
    ("random", MIXED, {}, "6e21c99f3f5595ca63ba4dd16bd0a366d0d698e095e0ba42ca253313756af186"),
    ("sobol", MIXED, {}, "b0a04ff55a4a2ab8aa722417b3564004fcc70020af370beaa0917a1546dd87b3"),
    ("grid", FINITE, {}, "d4c1ed015c4515f7afa72f13319e89594be30b9e903f02a3d232be834f807e22"),
    ("grid", FINITE, {"order": "shuffled"}, "f428be080a0cf320eccb0bd54802784a2f103c7dc500a1482a2456fc5c6a72a2"),
    ("tpe", MIXED, {}, "29fbc39bd1e901f97b6c5e16683c53ebb612936433362c76e5b2b1fd067f7876"),
    ("tpe", MIXED, {"multivariate": False}, "10108fd8dc2ec2706a0c83a61ebbfbfc8f082f033e0b7a28307652413f010c66"),
    ("tpe", MIXED, {"constantLiar": False}, "621e97716d9494c315a8afc358ba085ea2c7c4bb87077e279966ef969d626e3e"),
    ("bayesian", MIXED, {}, "a7040fcc3ff30dd80af43e21115b6ed5857737ec486efd53e2b1d57d25e1c9b9"),
    ("hyperband", MIXED, {"resourceParameter": "layers"},
     "25c58a197f7aca22529af8deb08db79f6e3bcc46289b3e704a8fc7502a8e110d"),
]


@pytest.mark.parametrize("name,space,config,digest", DIGESTS, ids=[f"{d[0]}-{json.dumps(d[2])}" for d in DIGESTS])
def test_suggestions_without_conditions_are_byte_identical(name: str, space: SearchSpace, config: dict[str, Any],
                                                           digest: str) -> None:
    sampler = make_sampler(name, space, seed=5, settings=config)
    history: list[Observation] = []
    out = []
    while len(history) < 24:
        pending = sampler.suggest(history, [], n=1)
        batch = sampler.suggest(history, pending, n=3)
        out.append([pending, batch])
        for p in pending + batch:
            if len(history) % 7 == 5:
                history.append(Observation(p, ObservationState.FAILED))
            elif len(history) % 7 == 6:
                history.append(Observation(p, ObservationState.PRUNED, _flat_loss(p) + 1,
                                           ((1, _flat_loss(p) + 1),)))
            else:
                history.append(Observation(p, ObservationState.COMPLETE, _flat_loss(p)))
    assert hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest() == digest


# -- the trial template -------------------------------------------------------------------------------------------

POD = {"restartPolicy": "Never", "containers": [{
    "name": "t", "image": "x",
    "command": ["python", "train.py", "--kernel", "${params.kernel}", "--degree=${params.degree}"],
    "env": [{"name": "DEGREE", "value": "${params.degree}"}, {"name": "KERNEL", "value": "${params.kernel}"},
            {"name": "PLAIN", "value": "1"}],
}]}


def test_inactive_parameter_is_not_injected_anywhere() -> None:
    pod = render_pod_spec(POD, "svm", 3, {"kernel": "rbf", "C": 1.0}, ["degree"])
    c = pod["containers"][0]
    assert c["command"] == ["python", "train.py", "--kernel", "rbf"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert "DEGREE" not in env and env["KERNEL"] == "rbf" and env["PLAIN"] == "1"
    assert json.loads(env["KUBETUNE_PARAMS"]) == {"kernel": "rbf", "C": 1.0}
    active = render_pod_spec(POD, "svm", 4, {"kernel": "poly", "C": 1.0, "degree": 3}, ["degree"])
    c = active["containers"][0]
    assert c["command"][-1] == "--degree=3" and {e["name"]: e["value"] for e in c["env"]}["DEGREE"] == "3"


def test_template_refuses_conditional_placeholders_that_leaving_out_would_break() -> None:
    job = {"template": {"spec": {"containers": [{"name": "t", "command": [
        "python", "--degree", "${params.degree}", "--ok=${params.degree}", "sh -c 'x ${params.degree}'",
        "${params.kernel}"]}]}}}
    problems = dict(template_problems(job, ["kernel", "degree"], ["degree"]))
    base = "spec.template.spec.containers[0].command"
    assert "is a whole argument" in problems[f"{base}[2]"] and "--degree=${params.degree}" in problems[f"{base}[2]"]
    assert "whitespace" in problems[f"{base}[4]"]
    assert set(problems) == {f"{base}[2]", f"{base}[4]"}  # unconditional whole arguments stay fine


# -- the spec -------------------------------------------------------------------------------------------------------


def _doc(**changes: Any) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / "digits-svm-conditional.yaml").read_text())
    doc["spec"].update(changes)
    return doc


def test_example_is_valid_and_conditional() -> None:
    exp, problems = validate_document(_doc())
    assert problems == [] and exp is not None
    assert exp.spec.conditional_names
    space = exp.spec.search_space()
    assert space.conditional


# -- kubetune run, results, report and client -----------------------------------------------------------------------

TRIAL = """
    import json, os, sys
    import kubetune_trial as kt
    p = json.loads(os.environ["KUBETUNE_PARAMS"])
    with open(os.path.join(os.environ["OUT"], os.environ["KUBETUNE_TRIAL"] + ".json"), "w") as f:
        json.dump({"argv": sys.argv[1:], "params": p, "degree_env": os.environ.get("DEGREE")}, f)
    acc = 0.5 + (0.1 * p["degree"] if "degree" in p else 0.0) + 0.01 * p["C"]
    kt.report(acc=acc)
"""


def test_kubetune_run_report_and_client_with_a_conditional_experiment(tmp_path: Path) -> None:
    (tmp_path / "trial.py").write_text(textwrap.dedent(TRIAL))
    seen = tmp_path / "seen"
    seen.mkdir()
    doc = {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": "cond"},
        "spec": {
            "objective": {"metric": "acc", "goal": "maximize"},
            "parameters": [
                {"name": "kernel", "type": "categorical", "values": ["rbf", "poly"]},
                {"name": "C", "type": "float", "min": 0.0, "max": 1.0},
                {"name": "degree", "type": "int", "min": 2, "max": 4, "when": {"parameter": "kernel",
                                                                               "values": ["poly"]}},
            ],
            "algorithm": {"name": "tpe", "seed": 2, "settings": {"nStartupTrials": 4}},
            "maxTrials": 10, "parallelTrials": 2,
            "trialTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{
                "name": "trial", "image": "unused:1",
                "command": ["python", str(tmp_path / "trial.py"), "--kernel", "${params.kernel}",
                            "--degree=${params.degree}"],
                "env": [{"name": "OUT", "value": str(seen)}, {"name": "DEGREE", "value": "${params.degree}"}],
            }]}}}},
        },
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "kubetune", "run", str(tmp_path / "exp.yaml"), "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    launched = [json.loads(p.read_text()) for p in sorted(seen.iterdir())]
    assert len(launched) == 10  # one process per trial, counted from what each wrote
    kernels = {t["params"]["kernel"] for t in launched}
    assert kernels == {"rbf", "poly"}
    for t in launched:
        if t["params"]["kernel"] == "poly":
            assert t["argv"][-1] == f"--degree={t['params']['degree']}" and t["degree_env"] == \
                str(t["params"]["degree"])
        else:
            assert "degree" not in t["params"] and t["degree_env"] is None
            assert not any(a.startswith("--degree") for a in t["argv"])
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert sorted(json.dumps(r["params"], sort_keys=True) for r in records) == \
        sorted(json.dumps(t["params"], sort_keys=True) for t in launched)

    import pandas as pd

    from kubetune.client import dataframe, load
    from kubetune.report.data import prepare

    frame = dataframe(load(out))
    assert len(frame) == 10
    rbf = frame[frame["param_kernel"] == "rbf"]
    assert len(rbf) and rbf["param_degree"].isna().all()
    csv = pd.read_csv(out / "results.csv")
    assert csv[csv["param_kernel"] == "rbf"]["param_degree"].isna().all()

    report = subprocess.run([sys.executable, "-m", "kubetune", "report", str(out)], capture_output=True, text=True,
                            timeout=240)
    assert report.returncode == 0, report.stdout + report.stderr
    html = (out / "report.html").read_text()
    table = html[html.index('id="trials"'):]
    assert table[:table.index("</table>")].count("<tr") == 11  # the header and every trial
    data = prepare(load(out))
    assert len(data.scored) == 10  # trials without degree are scored too, not dropped as outside the space
    assert data.importance is not None and np.isfinite(data.importance.fractions).all()

    from kubetune.dashboard.state import content, snapshot

    def strict(constant: str) -> None:  # parallel coordinates' missing values must be JSON nulls, not NaN
        raise AssertionError(f"{constant} in the dashboard's JSON")

    body = json.loads(snapshot(content(load(out))).body, parse_constant=strict)
    figures = {f["id"]: f["figure"] for f in body["figures"]}
    assert body["error"] is None and body["trials"] == 10
    slices = figures["slices"]["data"]
    degree = next(t for t in slices if t["name"] == "degree")
    assert len(degree["x"]) == sum(1 for t in launched if "degree" in t["params"])  # the trials where it was active


def test_benchmark_harness_runs_both_encodings() -> None:
    from benchmarks import conditional

    assert conditional.loss({"family": "a", "lr": 0.01, "a0": 0.114614, "a1": 0.555649, "a2": 0.852547}) < 1e-4
    results = conditional.run(seeds=1, trials=6, workers=1, algorithms=["tpe", "random"])
    assert {(r.algorithm, r.encoding) for r in results} == {(a, e) for a in ("tpe", "random")
                                                           for e in ("conditional", "flat")}
    for r in results:
        assert math.isfinite(r.best) and r.best >= 0
        assert r.active_dims_mean == (5 if r.encoding == "conditional" else 14)
    lines = conditional.table(results).splitlines()
    assert lines[0].startswith("| algorithm |") and len(lines) == 2 + 4


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conditional_spaces(), st.sampled_from(CONDITIONAL))
def test_every_sampler_suggests_exactly_active_parameters_on_random_forests(space: SearchSpace, name: str) -> None:
    """Random forests of conditions (nested, groups of numbers only or categories only, parents with every value
    activating nothing): suggestions hold exactly their active parameters, distinct, until the grid is used up."""
    sampler = make_sampler(name, space, seed=1, settings={"nStartupTrials": 3} if name in ("tpe", "bayesian")
                           else None)
    size = space.grid_size()
    assert size is not None
    history: list[Observation] = []
    for _ in range(5):
        pending = sampler.suggest(history, [], n=1)
        batch = pending + sampler.suggest(history, pending, n=2)
        for p in batch:
            assert space.contains(p), p
            history.append(Observation(p, ObservationState.COMPLETE, float(len(str(p)) % 7)))
    keys = [space.key(o.params) for o in history]
    assert len(set(keys)) == len(keys) == min(size, 15)


def test_operator_job_and_spec_checks() -> None:
    from kubetune.k8s.jobs import build_job
    from kubetune.k8s.reconciler import parse_spec

    doc = yaml.safe_load((ROOT / "examples" / "digits-svm-conditional.yaml").read_text())
    spec, problems = parse_spec(doc)
    assert problems == [] and spec is not None
    body = {**doc, "metadata": {"name": "svm", "namespace": "ns", "uid": "u1"}}
    job = build_job(body, spec, 2, {"kernel": "linear", "C": 2.5})
    annotated = json.loads(job["metadata"]["annotations"]["kubetune.io/parameters"])
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert annotated == {"kernel": "linear", "C": 2.5}
    assert not any(a.startswith(("--gamma", "--degree")) for a in container["command"])
    assert container["command"][-4:] == ["--C", "2.5", "--kernel", "linear"]
    poly = build_job(body, spec, 3, {"kernel": "poly", "C": 2.5, "gamma": 0.1, "degree": 3})
    assert poly["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == ["--gamma=0.1", "--degree=3"]
    # the operator stalls (InvalidSpec) on a template that leaving an argument out would break
    broken = json.loads(json.dumps(doc))
    broken["spec"]["trialTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"][-1:] = [
        "--degree", "${params.degree}"]
    spec, problems = parse_spec(broken)
    assert spec is None and any("is a whole argument" in p.message for p in problems)
