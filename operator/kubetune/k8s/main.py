"""The operator's entry point (`kubetune operator`): kopf in standalone mode, handlers from `handlers/`."""

from __future__ import annotations

import asyncio
import logging
import os


def run_operator(
    namespaces: list[str] | None = None,
    all_namespaces: bool = False,
    liveness: str | None = None,
    metrics_port: int = 0,
    verbose: bool = False,
) -> int:
    import kopf

    from . import handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=verbose)  # kopf's log format and levels
    if not verbose:
        # One line per watch event ("Handler ... succeeded") is noise at this rate; failures still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("kubetune").setLevel(logging.DEBUG if verbose else logging.INFO)
    os.environ["KUBETUNE_METRICS_PORT"] = str(metrics_port or 0)
    asyncio.run(kopf.operator(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces or [],
        liveness_endpoint=liveness or None,
    ))
    return 0
