"""Hyperband promotions that resume from a checkpoint instead of retraining (``algorithm: hyperband`` with
``spec.checkpoints``).

Without checkpoints a promotion is a new trial that trains the configuration from step 0 to the larger resource.
With ``spec.checkpoints`` the promotion of a configuration from rung ``k`` to rung ``k + 1`` is still a new trial
(with the resource of rung ``k + 1``), but it restores the checkpoint of the trial that finished rung ``k`` (its
*parent*): its :class:`~kubetune.trials.Lineage` is ``{member, parent, start: r_k, end: r_k+1}``, so the trial gets
``KUBETUNE_RESTORE_DIR`` (the parent's checkpoint directory), ``KUBETUNE_RESTORE_STEP = r_k`` and
``KUBETUNE_END_STEP = r_k+1`` (see :mod:`kubetune.checkpoints`) and trains only steps ``r_k + 1 .. r_k+1``. The
member is the configuration's first trial, so the chain of trials that trained one configuration is read from the
records (each promotion names its parent). A trial on a configuration's first rung has no lineage and starts
afresh, as without checkpoints.

The parent is the configuration's first Succeeded trial with the rung's resource (the one the sampler ranked, see
:meth:`kubetune.engine.hyperband.HyperbandSampler.lineages`), found among the finished trials: a function of the
records alone, so a restarted operator restores the same checkpoints. A suggestion that no finished trial of its
configuration precedes on the ladder (a configuration's first trial, an off-ladder resource) gets no lineage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .engine import ParamValue, Sampler
from .engine.hyperband import HyperbandSampler
from .spec import ExperimentSpec
from .trials import Lineage, Trial, TrialState


def resumes(spec: ExperimentSpec) -> bool:
    """Whether ``spec``'s promotions restore checkpoints: ``algorithm: hyperband`` with ``spec.checkpoints``."""
    return spec.checkpoints is not None and spec.algorithm.name == HyperbandSampler.name


def promotion_lineages(sampler: Sampler, finished: Iterable[Trial],
                       new: Sequence[Mapping[str, ParamValue]]) -> list[Lineage | None]:
    """For each configuration of ``new`` (in order), the lineage of the checkpoint it resumes from, or None to
    start afresh. ``finished`` are the experiment's finished trials in ascending number; one pass over them, and
    only when ``new`` holds a promotion."""
    if not isinstance(sampler, HyperbandSampler):
        return [None] * len(new)
    wanted: dict[tuple[tuple[object, ...], int], int] = {}
    """(configuration key, the lower rung's resource) -> index into ``new``."""
    for i, params in enumerate(new):
        rung = sampler._rung_index(params[sampler.resource]) if sampler.resource in params else None
        if rung is not None and rung > 0:
            wanted[(sampler.lineage_key(params), sampler.ladder[rung - 1])] = i
    out: list[Lineage | None] = [None] * len(new)
    if not wanted:
        return out
    for t in finished:
        if t.state is not TrialState.SUCCEEDED:
            continue
        try:
            resource = int(t.params[sampler.resource])
        except (KeyError, ValueError, TypeError, OverflowError):
            continue
        key = (sampler.lineage_key(t.params), resource)
        if key not in wanted:
            continue
        i = wanted.pop(key)
        member = t.lineage.member if t.lineage is not None else t.number
        out[i] = Lineage(member, t.number, resource, int(new[i][sampler.resource]))
        if not wanted:
            break
    return out
