"""The operator's entry point (`kubetune operator`): kopf in standalone mode, handlers from `handlers/`.

kopf's own peering is not used: it needs its own CRDs and pauses every operator of the same priority. Replicas
coordinate through a Lease instead (:mod:`kubetune.k8s.leader`, ``--leader-election``).
"""

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
    leader_election: bool = False,
    lease_name: str = "",
    lease_namespace: str = "",
) -> int:
    import kopf

    from . import handlers  # noqa: F401  (registers the handlers)
    from .leader import DEFAULT_LEASE_NAME

    kopf.configure(verbose=verbose)  # kopf's log format and levels
    if not verbose:
        # One line per watch event ("Handler ... succeeded") is noise at this rate; failures still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("kubetune").setLevel(logging.DEBUG if verbose else logging.INFO)
    os.environ["KUBETUNE_METRICS_PORT"] = str(metrics_port or 0)
    memo = kopf.Memo()
    if leader_election:
        memo.leader_election = (lease_namespace or os.environ.get("POD_NAMESPACE") or "default",
                                lease_name or DEFAULT_LEASE_NAME)
    asyncio.run(kopf.operator(
        memo=memo,
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces or [],
        liveness_endpoint=liveness or None,
    ))
    return 0
