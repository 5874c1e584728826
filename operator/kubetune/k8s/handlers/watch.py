"""Watch experiments and the labelled trial Jobs and Pods; feed the reconciler's view and wake its workers.

Only ``on.event`` handlers: they store nothing on the objects (no progress annotations, no finalizers).
"""

from __future__ import annotations

from typing import Any

import kopf

from ...spec import GROUP, PLURAL, VERSION
from .. import labels as L
from ..observe import summarize_job, summarize_pod
from .state import reconciler

OWNED: dict[str, Any] = {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.EXPERIMENT: kopf.PRESENT}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def experiment_event(type: str, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
    if type == "DELETED":
        reconciler().experiment_changed((namespace or "", name), None)
    else:
        reconciler().experiment_changed((namespace or "", name), _plain(body))


@kopf.on.event("batch", "v1", "jobs", labels=OWNED)
async def job_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, labels: kopf.Labels, **_: Any
) -> None:
    key = (namespace or "", labels[L.EXPERIMENT])
    reconciler().job_changed(key, name, None if type == "DELETED" else summarize_job(body))


@kopf.on.event("", "v1", "pods", labels=OWNED)
async def pod_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, labels: kopf.Labels, **_: Any
) -> None:
    key = (namespace or "", labels[L.EXPERIMENT])
    reconciler().pod_changed(key, name, None if type == "DELETED" else summarize_pod(body))


def _plain(body: kopf.Body) -> dict[str, Any]:
    """A plain-dict snapshot of the body (kopf's Body is a live view over the event's freshly decoded object, which
    nothing changes afterwards): its top level and metadata copied, which is all the reconciler ever replaces."""
    plain = dict(body)
    plain["metadata"] = dict(body.get("metadata") or {})
    return plain
