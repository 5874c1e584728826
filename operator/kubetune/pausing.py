"""Successive halving that pauses and resumes trials: ``earlyStopping: {rule: asha}`` with ``spec.checkpoints``.

Without checkpoints the ``asha`` rule stops a trial that falls behind at a rung (``Pruned``, see
:mod:`kubetune.pruning.asha`): a stopped trial can never be continued, so the rule judges it once, against the trials
that reached the rung before it. With ``spec.checkpoints`` the rule becomes the promotion form of asynchronous
successive halving (Li et al. 2020, Algorithm 2): every configuration trains one rung at a time and is resumed from
its checkpoint when it is promoted, so nothing is lost by pausing it early and a later, worse crowd at its rung can
still promote it.

The rungs are the ``asha`` rule's (``r_k = minResource * reductionFactor^k`` below ``maxResource``, which is
required here) and the *ladder* is the rungs followed by ``maxResource``. A configuration is a chain of trials
(*segments*), each with a :class:`~kubetune.trials.Lineage`:

* its first trial is suggested by the algorithm as usual and trains steps ``1 .. r_0``
  (``Lineage(member=itself, parent=None, start=0, end=r_0)``: the trial gets ``KUBETUNE_END_STEP = r_0``);
* a segment that ends (``Succeeded`` by the trial's reports) before ``maxResource`` is recorded ``Paused``
  (reason ``RungReached``): its Job is complete, no pod is held, its checkpoint stays;
* a promotion of a trial ``t`` paused at rung ``r_k`` is a new trial with ``t``'s parameters and
  ``Lineage(member, parent=t, start=r_k, end=r_{k+1})``: it restores ``t``'s checkpoint (``KUBETUNE_RESTORE_DIR``,
  ``KUBETUNE_RESTORE_STEP = r_k``) and trains only steps ``r_k + 1 .. r_{k+1}``;
* the segment that trains to ``maxResource`` ends ``Succeeded``: only such trials are results (the best trial, the
  target, ``noImprovement``). A trial that reports a step at or beyond ``maxResource`` is never paused (a script
  that ignores ``KUBETUNE_END_STEP`` simply trains every configuration to the end).

Promotion (ASHA's ``get_job``): of the ``n`` trials paused at rung ``k``, the best ``max(1, floor(n / eta))`` by
the objective value of their final report (ties: the lower number) are promotable; with ``n < minTrials`` every one
is, as the stopping rule lets every trial continue on too little evidence. A promotable trial that no trial
continues yet (no trial names it as ``parent``) is promoted. Each time trials may start, promotions come first,
higher rungs first and better first, then new configurations (after ``initialTrials``). Every segment is a trial
and counts in ``maxTrials``.

Everything is read from the records (states, lineages, final values), so both backends and a restarted operator
promote the same trials. A paused trial is seen by the algorithm like a pruned one: a partial result at its rung.

Checkpoints: once the trial that continued a paused trial has finished, the paused trial's checkpoint is never
restored again (:func:`superseded`); ``kubetune run`` deletes it, so its directory holds one checkpoint per
configuration (the latest segment's) plus those a running trial restores. On a cluster, as for every algorithm,
the operator deletes no checkpoint (the claim is the owner's; at most one directory per trial).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from .engine import ParamValue
from .spec import ExperimentSpec
from .trials import Lineage, Trial, TrialState

RUNG_REACHED = "RungReached"
"""The reason recorded on a ``Paused`` trial."""


def pauses(spec: ExperimentSpec) -> bool:
    """Whether ``spec``'s early stopping pauses trials at its rungs instead of pruning them."""
    es = spec.early_stopping
    return spec.checkpoints is not None and es is not None and es.rule == "asha"


def ladder(spec: ExperimentSpec) -> tuple[int, ...]:
    """The rungs' steps followed by ``maxResource`` (at most 21 entries: ``maxResource`` is at most a million and
    the rungs at least double)."""
    eff = spec.early_stopping.effective if spec.early_stopping is not None else None
    if eff is None or eff.max_resource is None:
        raise ValueError("pausing needs earlyStopping.maxResource")
    out, r = [], eff.min_resource
    while r < eff.max_resource:
        out.append(r)
        r *= eff.reduction_factor
    return (*out, eff.max_resource)


def first_lineage(spec: ExperimentSpec, number: int) -> Lineage:
    """The lineage of a configuration's first trial: it starts afresh and trains to the first rung."""
    return Lineage(number, None, 0, ladder(spec)[0])


def paused_reason(spec: ExperimentSpec, trial: Trial) -> tuple[str, str] | None:
    """``(reason, message)`` when ``trial``, which just ended with every objective reported, is to be recorded
    ``Paused`` rather than ``Succeeded``: its segment ended on a rung below ``maxResource`` and it reported no step
    at or beyond ``maxResource``. None otherwise."""
    if not pauses(spec) or trial.lineage is None:
        return None
    steps = ladder(spec)
    top, end = steps[-1], trial.lineage.end
    if end >= top or (trial.curve and trial.curve[-1][0] >= top):
        return None
    rung = f"rung {steps.index(end)}" if end in steps else "a rung"
    return RUNG_REACHED, f"paused at {rung} (step {end}); a promotion resumes it from its checkpoint"


def settle(spec: ExperimentSpec, trial: Trial) -> None:
    """Record ``trial`` (just ended ``Succeeded``) as ``Paused`` when :func:`paused_reason` says so."""
    if trial.state is TrialState.SUCCEEDED and (why := paused_reason(spec, trial)) is not None:
        trial.state, (trial.reason, trial.message) = TrialState.PAUSED, why


class PausedIndex:
    """The paused trials of one experiment by the step they ended at, and the trials some trial continues (the
    parents named by lineages), kept as trials are added (see :class:`kubetune.plan.History`)."""

    def __init__(self) -> None:
        self.paused: dict[int, dict[int, Trial]] = {}
        """end step -> trial number -> the paused trial."""
        self.continued: set[int] = set()

    def add(self, trial: Trial) -> None:
        for rung in self.paused.values():
            rung.pop(trial.number, None)
        if trial.lineage is None:
            return
        if trial.lineage.parent is not None:
            self.continued.add(trial.lineage.parent)
        if trial.state is TrialState.PAUSED:
            self.paused.setdefault(trial.lineage.end, {})[trial.number] = trial


def index(trials: Iterable[Trial]) -> PausedIndex:
    out = PausedIndex()
    for t in trials:
        out.add(t)
    return out


def promotions(spec: ExperimentSpec, paused: Mapping[int, Mapping[int, Trial]], continued: Collection[int],
               limit: int) -> list[tuple[dict[str, ParamValue], Lineage]]:
    """At most ``limit`` promotions, in the order they are to start (see the module docstring): each the parameters
    of a paused trial and the lineage of the trial that resumes it. ``paused``: :attr:`PausedIndex.paused`;
    ``continued``: every trial that a trial (finished, active, or about to be created) names as its parent."""
    if limit <= 0 or not paused:
        return []
    eff = spec.early_stopping.effective  # type: ignore[union-attr]
    steps = ladder(spec)
    objective = spec.objective
    out: list[tuple[dict[str, ParamValue], Lineage]] = []
    for k in range(len(steps) - 2, -1, -1):
        members = [(objective.loss(v), t.number, t) for t in paused.get(steps[k], {}).values()
                   if (v := t.objective_value(objective)) is not None]
        if not members:
            continue
        n = len(members)
        top = n if n < eff.min_trials else max(1, n // eff.reduction_factor)
        for _, number, t in sorted(members, key=lambda m: (m[0], m[1]))[:top]:
            if number in continued:
                continue
            assert t.lineage is not None
            out.append((dict(t.params), Lineage(t.lineage.member, number, steps[k], steps[k + 1])))
            if len(out) >= limit:
                return out
    return out


def superseded(trials: Iterable[Trial]) -> set[int]:
    """The paused trials whose checkpoint nothing will restore again: those a *finished* trial continued (a paused
    trial is promoted at most once, and the trial that continued it has its own checkpoint, or failed). ``kubetune
    run`` deletes their directories, so at most one checkpoint per configuration, plus those being restored, is
    kept."""
    return {t.lineage.parent for t in trials
            if t.lineage is not None and t.lineage.parent is not None and not t.active}


def promotable(spec: ExperimentSpec, trials: Sequence[Trial],
               limit: int) -> list[tuple[dict[str, ParamValue], Lineage]]:
    """:func:`promotions` over every trial of an experiment."""
    idx = index(trials)
    return promotions(spec, idx.paused, idx.continued, limit)
