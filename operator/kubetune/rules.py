"""Cross-field validation rules, written once and applied twice.

Each :class:`Rule` carries a CEL expression (emitted into the CRD as ``x-kubernetes-validations``, so the API server
enforces it at admission) and a Python predicate with the same meaning (applied by ``kubetune validate`` and the
local runner). Both report the same ``message``; a test runs every rule through the real API server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    cel: str
    message: str
    check: Callable[[Any], bool]
    """Python predicate over the validated model instance; True when the rule holds."""
    field: str | None = None
    """Optional field the failure is reported on (CEL ``fieldPath`` is ``.<field>``)."""

    def to_crd(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field:
            out["fieldPath"] = f".{self.field}"
        return out
