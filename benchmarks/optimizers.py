"""One ask/tell interface over kubetune's algorithms and the peers (Optuna, scikit-optimize, Hyperopt).

``ask(n)`` returns ``n`` configurations to evaluate together (a batch of parallel trials); ``tell`` reports their
losses. Every peer runs with its library defaults plus its own documented way of proposing a batch:

* Optuna TPE: ``TPESampler(seed=..., constant_liar=True)`` (the liar only matters for batches), ``study.ask``;
* scikit-optimize GP: ``Optimizer(base_estimator="GP")``, batches by ``ask(n_points=n)`` (its constant liar);
* Hyperopt TPE: ``tpe.suggest`` one trial at a time; trials suggested but not yet told count as infinitely bad
  (Hyperopt's own treatment of running trials);
* Optuna CMA-ES: ``CmaEsSampler(seed=...)`` (numeric spaces only; its defaults: no restarts, the first trial
  random), ``study.ask``; each trial records the generation it was drawn from and a generation is told once that
  many of its trials completed;
* Nevergrad ``OnePlusOne`` and SMAC3's ``HyperparameterOptimizationFacade``: told the trial budget and the batch size
  up front (their constructors take them), a batch is ``n`` asks before the tells;
* random search: kubetune's ``random`` algorithm.

Peers are imported lazily: they are benchmark extras (``pip install .[bench]``), never runtime dependencies.
Optuna's GPSampler is not included: it needs PyTorch, whose PyPI wheel pulls the CUDA stack (see
docs/benchmarks.md); nor is HEBO (the ``hebo`` package needs PyTorch too).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kubetune.engine import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    Observation,
    ObservationState,
    ParamValue,
    SearchSpace,
    make_sampler,
)

Params = dict[str, ParamValue]


class Optimizer(Protocol):
    def ask(self, n: int) -> list[Params]: ...

    def tell(self, params: list[Params], losses: list[float]) -> None: ...


class KubetuneOptimizer:
    """A kubetune algorithm, driven exactly like the operator drives it (stateless, whole history each call)."""

    def __init__(self, algorithm: str, space: SearchSpace, seed: int, settings: Mapping[str, object] | None = None,
                 one_by_one: bool = False):
        self.sampler = make_sampler(algorithm, space, seed=seed, settings=settings)
        self.history: list[Observation] = []
        self.one_by_one = one_by_one
        """Ask a round's suggestions one call each, the earlier ones of the round pending (as the operator does when
        trials start one at a time), instead of one call for the whole round."""

    def ask(self, n: int) -> list[Params]:
        if not self.one_by_one:
            return self.sampler.suggest(self.history, [], n=n)
        out: list[Params] = []
        for _ in range(n):
            out += self.sampler.suggest(self.history, out, n=1)
        return out

    def tell(self, params: list[Params], losses: list[float]) -> None:
        self.history += [Observation(p, ObservationState.COMPLETE, loss=l) for p, l in zip(params, losses)]


class OptunaTPE:
    def __init__(self, space: SearchSpace, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.space = space
        self.study = optuna.create_study(sampler=self._sampler(seed))
        self.dists: dict[str, Any] = {name: _optuna_dist(d) for name, d in space.dims}
        self.trials: list[Any] = []

    @staticmethod
    def _sampler(seed: int) -> Any:
        import optuna

        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def ask(self, n: int) -> list[Params]:
        self.trials = [self.study.ask(self.dists) for _ in range(n)]
        return [dict(t.params) for t in self.trials]  # type: ignore[attr-defined]

    def tell(self, params: list[Params], losses: list[float]) -> None:
        for t, l in zip(self.trials, losses):
            self.study.tell(t, l)


class OptunaCmaEs(OptunaTPE):
    @staticmethod
    def _sampler(seed: int) -> Any:
        import optuna

        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _optuna_dist(d: object) -> Any:
    import optuna.distributions as od

    if isinstance(d, FloatDistribution):
        return od.FloatDistribution(d.low, d.high, log=d.log, step=d.step)
    if isinstance(d, IntDistribution):
        return od.IntDistribution(d.low, d.high, log=d.log, step=d.step)
    assert isinstance(d, CategoricalDistribution)
    return od.CategoricalDistribution(list(d.choices))


class SkoptGP:
    """scikit-optimize's GP optimizer; stepped parameters are searched as integer step indexes."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        from skopt import Optimizer as SkOptimizer
        from skopt.space import Categorical, Integer, Real

        dims: list[object] = []
        self.decode: list[Callable[[Any], ParamValue]] = []
        for _name, d in space.dims:
            if isinstance(d, CategoricalDistribution):
                dims.append(Categorical([str(i) for i in range(len(d.choices))]))
                self.decode.append(partial(_choice, d))
            elif isinstance(d, FloatDistribution) and d.step is None:
                dims.append(Real(d.low, d.high, prior="log-uniform" if d.log else "uniform"))
                self.decode.append(partial(_requantize, d))
            elif isinstance(d, IntDistribution) and d.step == 1:
                dims.append(Integer(d.low, d.high, prior="log-uniform" if d.log else "uniform"))
                self.decode.append(_int)
            else:
                grid = d.grid() or []
                dims.append(Integer(0, len(grid) - 1))
                self.decode.append(partial(_grid_value, grid))
        self.names = space.names
        self.opt = SkOptimizer(dims, base_estimator="GP", random_state=seed)
        self.raw: list[list[object]] = []

    def ask(self, n: int) -> list[Params]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.raw = [self.opt.ask()] if n == 1 else self.opt.ask(n_points=n)
        return [{k: f(v) for k, f, v in zip(self.names, self.decode, x)} for x in self.raw]

    def tell(self, params: list[Params], losses: list[float]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.opt.tell([list(x) for x in self.raw], [float(l) for l in losses])


def _choice(d: CategoricalDistribution, v: Any) -> ParamValue:
    return d.choices[int(v)]


def _requantize(d: FloatDistribution | IntDistribution, v: Any) -> ParamValue:
    return d.from_unit(d.to_unit(float(v)))


def _int(v: Any) -> ParamValue:
    return int(v)


def _grid_value(grid: Sequence[ParamValue], v: Any) -> ParamValue:
    return grid[int(v)]


class HyperoptTPE:
    def __init__(self, space: SearchSpace, seed: int) -> None:
        from hyperopt import Domain, Trials, hp

        hspace: dict[str, object] = {}
        for name, d in space.dims:
            if isinstance(d, CategoricalDistribution):
                hspace[name] = hp.choice(name, list(d.choices))
            elif isinstance(d, FloatDistribution):
                if d.step is not None:
                    hspace[name] = hp.quniform(name, d.low, d.high, d.step)
                elif d.log:
                    hspace[name] = hp.loguniform(name, math.log(d.low), math.log(d.high))
                else:
                    hspace[name] = hp.uniform(name, d.low, d.high)
            else:
                if d.log:
                    hspace[name] = hp.qloguniform(name, math.log(d.low), math.log(d.high), 1)
                else:
                    hspace[name] = hp.quniform(name, d.low, d.high, d.step)
        self.space = space
        self.domain = Domain(lambda p: 0.0, hspace)
        self.trials = Trials()
        self.rng = np.random.default_rng(seed)
        self.pending: list[dict[str, object]] = []

    def ask(self, n: int) -> list[Params]:
        from hyperopt import space_eval, tpe

        out: list[Params] = []
        self.pending = []
        for _ in range(n):
            tid = self.trials.new_trial_ids(1)
            self.trials.refresh()
            docs = tpe.suggest(tid, self.domain, self.trials, int(self.rng.integers(2**31 - 1)))
            self.trials.insert_trial_docs(docs)
            self.trials.refresh()
            doc = docs[0]
            vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
            raw = space_eval(self.domain.expr, vals)
            out.append({name: self._fix(d, raw[name]) for name, d in self.space.dims})
            self.pending.append(doc)
        return out

    @staticmethod
    def _fix(d: object, v: object) -> ParamValue:
        if isinstance(d, CategoricalDistribution):
            return v  # type: ignore[return-value]
        assert isinstance(d, (FloatDistribution, IntDistribution))
        return d.from_unit(d.to_unit(float(v)))  # type: ignore[arg-type]

    def tell(self, params: list[Params], losses: list[float]) -> None:
        from hyperopt import JOB_STATE_DONE, STATUS_OK

        tids = {doc["tid"] for doc in self.pending}
        for doc, l in zip(self.pending, losses):
            assert doc["tid"] in tids
            for stored in self.trials._dynamic_trials:
                if stored["tid"] == doc["tid"]:
                    stored["state"] = JOB_STATE_DONE
                    stored["result"] = {"loss": float(l), "status": STATUS_OK}
        self.trials.refresh()


class NevergradOnePlusOne:
    """Nevergrad's ``OnePlusOne``, the nevergrad configuration bayesmark ships (``builtin_opt/config.py``), told the
    budget and the batch size it runs with. (Nevergrad's recommended ``NGOpt`` was tried: with numpy 2.4 its
    meta-model step raises ``TypeError`` on ``float()`` of a one-element array.) Categoricals are ``ng.p.Choice``,
    ints ``ng.p.Scalar(...).set_integer_casting()``, log-scaled numbers ``ng.p.Log``."""

    def __init__(self, space: SearchSpace, seed: int, budget: int = 128, workers: int = 1) -> None:
        import nevergrad as ng

        params: dict[str, Any] = {}
        for name, d in space.dims:
            if isinstance(d, CategoricalDistribution):
                params[name] = ng.p.Choice(list(range(len(d.choices))))
            elif d.log:
                params[name] = ng.p.Log(lower=float(d.low), upper=float(d.high))
            else:
                params[name] = ng.p.Scalar(lower=float(d.low), upper=float(d.high))
            if isinstance(d, IntDistribution) and not isinstance(d, CategoricalDistribution):
                params[name].set_integer_casting()
        self.space = space
        param = ng.p.Dict(**params)
        param.random_state = np.random.RandomState(seed)
        self.opt = ng.optimizers.OnePlusOne(parametrization=param, budget=budget, num_workers=workers)
        self.cands: list[Any] = []

    def ask(self, n: int) -> list[Params]:
        self.cands = [self.opt.ask() for _ in range(n)]
        out = []
        for c in self.cands:
            v = c.value
            out.append({name: d.choices[int(v[name])] if isinstance(d, CategoricalDistribution)
                        else d.from_unit(d.to_unit(float(v[name])))  # type: ignore[union-attr]
                        for name, d in self.space.dims})
        return out

    def tell(self, params: list[Params], losses: list[float]) -> None:
        for c, l in zip(self.cands, losses):
            self.opt.tell(c, float(l))


class Smac3HPO:
    """SMAC3's ``HyperparameterOptimizationFacade`` (random forest surrogate, log EI, its Sobol' initial design),
    driven by ``ask``/``tell`` with the trial budget in its scenario; a batch is ``n`` asks before the tells."""

    def __init__(self, space: SearchSpace, seed: int, budget: int = 128, workers: int = 1) -> None:
        import logging
        import tempfile

        from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer
        from smac import HyperparameterOptimizationFacade, Scenario

        logging.getLogger("smac").setLevel(logging.ERROR)
        cs = ConfigurationSpace(seed=seed)
        for name, d in space.dims:
            if isinstance(d, CategoricalDistribution):
                cs.add(Categorical(name, [str(i) for i in range(len(d.choices))]))
            elif isinstance(d, IntDistribution):
                cs.add(Integer(name, (int(d.low), int(d.high)), log=d.log))
            else:
                cs.add(Float(name, (float(d.low), float(d.high)), log=d.log))
        self._tmp = tempfile.TemporaryDirectory(prefix="smac3-")
        scenario = Scenario(cs, deterministic=True, n_trials=budget, seed=seed, output_directory=Path(self._tmp.name))
        self.smac = HyperparameterOptimizationFacade(scenario, target_function=lambda config, seed=0: 0.0,
                                                     overwrite=True, logging_level=logging.ERROR)
        self.space = space
        self.infos: list[Any] = []

    def ask(self, n: int) -> list[Params]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.infos = [self.smac.ask() for _ in range(n)]
        out = []
        for info in self.infos:
            cfg = dict(info.config)
            out.append({name: d.choices[int(cfg[name])] if isinstance(d, CategoricalDistribution)
                        else d.from_unit(d.to_unit(cfg[name]))  # type: ignore[union-attr]
                        for name, d in self.space.dims})
        return out

    def tell(self, params: list[Params], losses: list[float]) -> None:
        from smac.runhistory.dataclasses import TrialValue

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for info, l in zip(self.infos, losses):
                self.smac.tell(info, TrialValue(cost=float(l)))


PEERS: dict[str, Callable[[SearchSpace, int], Optimizer]] = {
    "optuna-tpe": OptunaTPE,
    "optuna-cmaes": OptunaCmaEs,
    "skopt-gp": SkoptGP,
    "hyperopt-tpe": HyperoptTPE,
    "nevergrad-1p1": NevergradOnePlusOne,
    "smac3-hpo": Smac3HPO,
}
BUDGET_AWARE = {"nevergrad-1p1", "smac3-hpo"}
"""Peers that are told the trial budget and the batch size up front (``make_optimizer(..., budget=, workers=)``)."""

KUBETUNE = ("bayesian", "tpe", "sobol", "random", "cmaes")


def make_optimizer(name: str, space: SearchSpace, seed: int, budget: int | None = None,
                   workers: int | None = None) -> Optimizer:
    """``kubetune-<algorithm>`` (``random`` is the random-search baseline) or a peer name from :data:`PEERS`.

    Kubetune settings may follow in brackets, for experiments: ``kubetune-tpe[multivariate=false,gamma=0.2]``;
    ``kubetune-tpe:one-by-one`` asks each suggestion of a round in its own call, the earlier ones pending.
    """
    if name.startswith("kubetune-"):
        algo, _, rest = name.removeprefix("kubetune-").partition("[")
        algo, _, mode = algo.partition(":")
        if mode not in ("", "one-by-one"):
            raise ValueError(f"unknown mode {mode!r} in {name!r} (known: one-by-one)")
        settings = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in rest.rstrip("]").split(",") if kv)}
        return KubetuneOptimizer(algo, space, seed, settings, one_by_one=mode == "one-by-one")
    if name == "random":
        return KubetuneOptimizer("random", space, seed)
    if name in BUDGET_AWARE and budget is not None:
        return PEERS[name](space, seed, budget, workers or 1)  # type: ignore[call-arg]
    return PEERS[name](space, seed)
