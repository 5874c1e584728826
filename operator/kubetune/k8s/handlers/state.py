"""The operator-wide reconciler instance shared by the handler modules."""

from __future__ import annotations

from ..reconciler import Reconciler

_reconciler: Reconciler | None = None


def reconciler() -> Reconciler:
    global _reconciler
    if _reconciler is None:
        _reconciler = Reconciler()
    return _reconciler
