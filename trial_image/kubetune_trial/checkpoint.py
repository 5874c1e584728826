"""Checkpoints in the trial contract: where this trial writes its checkpoint and where it restores from.

kubetune sets these env vars when the experiment has ``spec.checkpoints`` (``kubetune run`` and the operator alike):

* ``KUBETUNE_CHECKPOINT_DIR``: this trial's own directory (:func:`checkpoint_dir` creates it when missing);
* ``KUBETUNE_RESTORE_DIR`` and ``KUBETUNE_RESTORE_STEP``: the checkpoint to start from (another trial's directory,
  which this trial must only read) and the step it holds; absent when the trial starts afresh;
* ``KUBETUNE_END_STEP``: with ``algorithm: pbt``, the step this trial's segment trains to: report every step up to
  it (``report(step=...)``), then make the final report and exit. A hyperband promotion that resumes (``algorithm:
  hyperband`` with ``spec.checkpoints``) gets it too: its rung's resource, the value of the resource parameter; so
  does every trial of ``earlyStopping: {rule: asha}`` with ``spec.checkpoints``: the rung it pauses at (or
  ``maxResource``).

A pbt segment therefore looks like::

    start = kt.restore_step()                       # 0 when starting afresh
    state = load(kt.restore_dir()) if kt.restore_dir() else init()
    for step in range(start + 1, kt.end_step() + 1):
        state = train_one_step(state, kt.params())
        save(state, kt.checkpoint_dir())            # before reporting the step it belongs to
        if not kt.report(step=step, score=evaluate(state)):
            break
    kt.report(score=evaluate(state))

Write the checkpoint before reporting the step it belongs to, so the checkpoint a later trial restores is never
behind the score that chose it. kubetune never writes into these directories; ``kubetune run`` deletes the
directories of pbt trials nothing can restore from any more.
"""

from __future__ import annotations

import os

__all__ = ["checkpoint_dir", "restore_dir", "restore_step", "end_step"]


def checkpoint_dir() -> str | None:
    """This trial's checkpoint directory (created if missing), or None without ``spec.checkpoints``."""
    path = os.environ.get("KUBETUNE_CHECKPOINT_DIR")
    if not path:
        return None
    os.makedirs(path, exist_ok=True)
    return path


def restore_dir() -> str | None:
    """The directory of the checkpoint to start from, or None to start afresh."""
    return os.environ.get("KUBETUNE_RESTORE_DIR") or None


def _int_env(name: str) -> int | None:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def restore_step() -> int:
    """The step the checkpoint of :func:`restore_dir` holds (0 when starting afresh)."""
    return _int_env("KUBETUNE_RESTORE_STEP") or 0 if restore_dir() else 0


def end_step() -> int | None:
    """With ``algorithm: pbt``, for a hyperband promotion that resumes, and for every trial of ``asha`` with
    checkpoints (it pauses at a rung), the step this trial trains to; None otherwise (train as long as you
    like)."""
    return _int_env("KUBETUNE_END_STEP")
