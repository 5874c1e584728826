"""Operator start-up and shutdown: kopf settings, the metrics endpoint, stopping the workers."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from .. import labels as L
from .. import prometheus
from .state import reconciler

log = logging.getLogger("kubetune.operator")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Nothing of kopf's own bookkeeping is written outside the project's domain.
    settings.persistence.finalizer = L.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=L.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=L.ANNOTATION_PREFIX)
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    port = int(os.environ.get("KUBETUNE_METRICS_PORT", "0") or 0)
    if port:
        memo.metrics_runner = await prometheus.serve(port)
        log.info("serving Prometheus metrics on :%d/metrics", port)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    await reconciler().stop()
    runner = getattr(memo, "metrics_runner", None)
    if runner is not None:
        await runner.cleanup()


@kopf.on.probe(id="experiments")
def experiments_probe(**_: Any) -> int:
    return len(reconciler().state.experiments)
