"""Kubernetes Events on the experiment, for `kubectl describe` (trial created, failed, pruned, best improved).

Events are best effort: a failed post is retried once (see :data:`kubetune.k8s.api.EVENT_POLICY`), then logged and
dropped; it never fails the reconcile that posts it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..spec import API_VERSION, KIND
from .api import Api, ApiException
from .status import now

log = logging.getLogger(__name__)


def post(api: Api, experiment: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
    meta = experiment["metadata"]
    ts = now()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": "kubetune"},
        "reportingComponent": "kubetune.io/operator",
        "reportingInstance": "kubetune",
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    }
    try:
        api.create_event(meta["namespace"], body)
    except Exception as e:
        log.warning("cannot post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"],
                    f"{e.status} {e.reason}" if isinstance(e, ApiException) else repr(e)[:300])
