"""Warm-start sources of ``kubetune run``: earlier runs' results directories (see :mod:`kubetune.warmstart`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..spec import ExperimentSpec
from ..warmstart import WarmStartResult, take_in
from .local import LocalDirectory
from .model import ResultsError


def source_directories(spec: ExperimentSpec, out_dir: Path, extra: Sequence[Path] = ()) -> list[Path]:
    """The results directories a run in ``out_dir`` warm-starts from: ``warmStart.experiments`` next to
    ``out_dir`` (``kubetune-runs/NAME`` for the default output directory), then ``extra`` (``--warm-start``)."""
    names = spec.warm_start.experiments if spec.warm_start is not None else []
    out: list[Path] = []
    for path in [out_dir.parent / name for name in names] + list(extra):
        if path not in out:
            out.append(path)
    return out


def load_local(spec: ExperimentSpec, directories: Sequence[Path]) -> WarmStartResult:
    """Read each results directory and take in its trials; :class:`ResultsError` names a directory that is missing
    or holds no readable run (what a run still being written has recorded so far is read as it is)."""
    sources = []
    for path in directories:
        try:
            results = LocalDirectory(path).load()
        except ResultsError as e:
            raise ResultsError(f"warm start: {e}") from None
        sources.append((str(path), [r.trial for r in results.trials]))
    return take_in(spec, sources)
