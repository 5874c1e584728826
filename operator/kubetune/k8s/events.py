"""Kubernetes Events on the experiment, for `kubectl describe` (trial created, failed, pruned, best improved).

Events are best effort and never hold up a reconcile: :func:`emit` hands the Event to a few threads of their own
(:class:`EventSink`) and returns at once. A failed post is retried once (see
:data:`kubetune.k8s.api.EVENT_POLICY`), then logged and dropped. At most ``limit`` Events wait to be posted; when
the API server cannot keep up, further ones are dropped and counted in ``kubetune_events_dropped_total``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..spec import API_VERSION, KIND
from . import prometheus
from .api import Api, ApiException
from .status import now

log = logging.getLogger(__name__)

EVENT_THREADS = 4
MAX_PENDING_EVENTS = 1000


def event_body(experiment: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> dict[str, Any]:
    meta = experiment["metadata"]
    ts = now()
    return {
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


def _create(api: Api, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    try:
        api.create_event(meta["namespace"], body)
    except Exception as e:
        log.warning("cannot post event %s on %s/%s: %s", body["reason"], meta["namespace"],
                    body["involvedObject"]["name"],
                    f"{e.status} {e.reason}" if isinstance(e, ApiException) else repr(e)[:300])


def post(api: Api, experiment: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
    """Post one Event now (blocking); a failure is logged, never raised."""
    _create(api, event_body(experiment, reason, message, warning))


class EventSink:
    """Posts Events on ``threads`` threads of its own; at most ``limit`` are accepted and not yet posted."""

    def __init__(self, threads: int = EVENT_THREADS, limit: int = MAX_PENDING_EVENTS) -> None:
        self.threads, self.limit = threads, limit
        self.pending = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._executor: ThreadPoolExecutor | None = None

    def emit(self, api: Api, experiment: Mapping[str, Any], reason: str, message: str,
             warning: bool = False) -> bool:
        """Queue the Event (built now, with the time of now); False when it was dropped because ``limit`` Events
        are waiting."""
        body = event_body(experiment, reason, message, warning)
        with self._lock:
            if self.pending >= self.limit:
                self.dropped += 1
                drop = True
            else:
                self.pending += 1
                drop = False
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="kubetune-events")
                executor = self._executor
        if drop:
            prometheus.EVENTS_DROPPED.inc()
            log.debug("dropped event %s on %s: %d events wait to be posted", reason,
                      experiment["metadata"]["name"], self.limit)
            return False
        try:
            executor.submit(_create, api, body).add_done_callback(self._done)
        except RuntimeError:  # the pool was shut down (the process is ending)
            self._done(None)
            return False
        return True

    def _done(self, _: Future[None] | None) -> None:
        with self._lock:
            self.pending -= 1
            if self.pending == 0:
                self._idle.notify_all()

    def close(self) -> None:
        """Drop the Events not yet being posted (the operator is stopping); later ones are dropped too."""
        with self._lock:
            executor, self._executor = self._executor, None
            self.limit = 0
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every accepted Event was posted (or given up); False when ``timeout`` passed first."""
        with self._lock:
            return self._idle.wait_for(lambda: self.pending == 0, timeout)


sink = EventSink()
"""The operator's Event sink."""


def emit(api: Api, experiment: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> bool:
    """Queue an Event on the operator's sink without waiting for it (see :class:`EventSink`)."""
    return sink.emit(api, experiment, reason, message, warning)
