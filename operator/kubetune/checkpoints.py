"""Checkpoints in the trial contract (``spec.checkpoints``), shared by the operator and ``kubetune run``.

Every trial of an experiment with ``spec.checkpoints`` gets a directory of its own to write its checkpoint to,
``<root>/<trial name>`` where the root is ``<mountPath>/<experiment>`` on a cluster (the PersistentVolumeClaim is
mounted at ``mountPath`` into every container of every trial) and ``<results directory>/checkpoints`` with
``kubetune run``. A trial that continues another trial's training (a pbt segment, a hyperband promotion: see
:mod:`kubetune.resume`, or an asha promotion: see :mod:`kubetune.pausing`) also gets the directory to restore from
and the step that checkpoint holds. The trial learns them from env vars (read by the SDK's ``checkpoint_dir()``,
``restore_dir()``, ``restore_step()`` and ``end_step()``):

* ``KUBETUNE_CHECKPOINT_DIR``: the trial's own directory (``kubetune run`` creates it; on a cluster the SDK does);
* ``KUBETUNE_RESTORE_DIR``, ``KUBETUNE_RESTORE_STEP``: the checkpoint to start from and its step (absent for a
  fresh start);
* ``KUBETUNE_END_STEP``: with pbt, the step the trial's segment trains to; it reports steps up to it and ends (a
  hyperband promotion that resumes gets its rung's resource; with asha and checkpoints every trial gets the rung it
  pauses at, or ``maxResource``).

Cleanup: a checkpoint is *superseded* once its pbt member has two later finished segments; nothing restores from a
superseded checkpoint again once no running trial restores from it (:func:`deletable`). ``kubetune run`` deletes
those directories as trials finish, so at most ``2 * populationSize + parallelTrials`` checkpoints exist at once. On a
cluster the operator does not mount the claim and deletes nothing: the claim holds at most one directory per trial
(``maxTrials``), and deleting the experiment's directory (or the claim) is the owner's. With asha pausing,
``kubetune run`` deletes a paused trial's checkpoint once the trial that continued it finished
(:func:`kubetune.pausing.superseded`). Checkpoints of other algorithms are never deleted by kubetune (they are each
trial's own, for a later resume).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence

from .spec import ExperimentSpec
from .template import trial_name
from .trials import Lineage, Trial

ENV_CHECKPOINT_DIR = "KUBETUNE_CHECKPOINT_DIR"
ENV_RESTORE_DIR = "KUBETUNE_RESTORE_DIR"
ENV_RESTORE_STEP = "KUBETUNE_RESTORE_STEP"
ENV_END_STEP = "KUBETUNE_END_STEP"
VOLUME_NAME = "kubetune-checkpoints"


def cluster_root(mount_path: str, experiment: str) -> str:
    """The directory of an experiment's checkpoints inside a trial's containers on a cluster."""
    return posixpath.join(mount_path, experiment)


def checkpoint_env(root: str, experiment: str, number: int, lineage: Lineage | None) -> dict[str, str]:
    """The env vars of trial ``number`` (see the module docstring); ``root`` holds one directory per trial."""
    env = {ENV_CHECKPOINT_DIR: posixpath.join(root, trial_name(experiment, number))}
    if lineage is not None:
        if lineage.parent is not None:
            env[ENV_RESTORE_DIR] = posixpath.join(root, trial_name(experiment, lineage.parent))
            env[ENV_RESTORE_STEP] = str(lineage.start)
        env[ENV_END_STEP] = str(lineage.end)
    return env


def deletable(recent: Mapping[int, Sequence[Trial]], candidates: Iterable[int], active: Iterable[Trial]) -> set[int]:
    """Of the finished trials numbered ``candidates``, those whose checkpoint nothing can restore from any more: not
    one of its member's last two finished segments (``recent``, see :func:`kubetune.plan.recent_segments`; the pbt
    sampler restores only from those) and not the parent of an ``active`` trial. A segment leaves its member's last
    two only when later ones of that member finished, so once deletable a checkpoint stays deletable (a restart
    cannot bring it back)."""
    kept = {t.number for segs in recent.values() for t in segs}
    in_use = {t.lineage.parent for t in active if t.lineage is not None and t.lineage.parent is not None}
    return {n for n in candidates if n not in kept and n not in in_use}


def trial_checkpoint(spec: ExperimentSpec, experiment: str, number: int) -> str:
    """Where trial ``number``'s checkpoint is on a cluster, as its containers see it; empty without
    ``spec.checkpoints``."""
    if spec.checkpoints is None:
        return ""
    return posixpath.join(cluster_root(spec.checkpoints.mount_path, experiment), trial_name(experiment, number))
