"""Operator start-up and shutdown: kopf settings, the metrics endpoint, leader election, stopping the workers."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, cast

import kopf

from .. import events, prometheus
from .. import labels as L
from ..leader import KubernetesLeaseStore, LeaderElection, LeaderElector, default_identity
from .state import reconciler

log = logging.getLogger("kubetune.operator")


class NoDiffBase(kopf.DiffBaseStorage):
    """The operator has only ``on.event`` handlers, which need no diff: kopf's default would deep-copy every
    watched body (each pod and Job update) into an essence and parse the last one from an annotation, for nothing.
    Change-detecting handlers (``on.create``, ``on.update``, ...) would need a real storage instead."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Nothing of kopf's own bookkeeping is written outside the project's domain.
    settings.persistence.finalizer = L.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=L.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    port = int(os.environ.get("KUBETUNE_METRICS_PORT", "0") or 0)
    if port:
        memo.metrics_runner = await prometheus.serve(port)
        log.info("serving Prometheus metrics on :%d/metrics", port)
    lease = getattr(memo, "leader_election", None)  # (namespace, name), set by `kubetune operator --leader-election`
    if lease:
        memo.election = start_leader_election(*lease)
    else:
        await warm_up()


async def warm_up() -> None:
    """Make the API client before the watches start: loading its generated API classes takes about a second of
    CPU, which would otherwise delay the first experiment's first reconcile."""
    from ..api import api, blocking

    try:
        await blocking(api)
    except Exception as e:  # no configuration yet: the first reconcile says so again, and retries
        log.warning("cannot make the Kubernetes API client yet: %s", repr(e)[:300])


def start_leader_election(namespace: str, name: str) -> LeaderElection:
    """Workers run only while this replica holds the Lease; the watches keep every replica's view warm."""
    from ... import __version__
    from ..api import api

    identity = default_identity()
    client = api().client
    # The field manager of everything this replica writes (managedFields) names the replica.
    client.user_agent = f"kubetune@{identity}/{__version__}"
    rec = reconciler()
    rec.leading = False

    async def started() -> None:
        rec.leading = True
        for key in list(rec.state.experiments):
            rec.wake(key)

    async def stopped() -> None:
        rec.leading = False
        await rec.stop()

    elector = LeaderElector(KubernetesLeaseStore(client, namespace, name), identity)
    fence_api_calls(api(), lambda: rec.leading and elector.is_leader)
    election = LeaderElection(elector, started, stopped)
    log.info("leader election on lease %s/%s as %s", namespace, name, identity)
    election.start()
    return election


class NotLeading(RuntimeError):
    """An API call of a worker was about to start (or retry) after this replica stopped leading."""


def fence_api_calls(client: Any, leading: Callable[[], bool]) -> None:
    """No operator API call starts, and none is retried, once this replica is not the leader.

    Cancelling a worker cannot stop an API call already running in a thread, and the client retries failed calls
    for up to a minute or more; without this, a replica that lost the Lease could still write after another one
    took over. The retry policies' clock is read when a call starts and before every retry, so it is the fence.
    """
    from dataclasses import replace

    def fenced(policy: Any) -> Any:
        clock = policy.clock

        def fenced_clock() -> float:
            if not leading():
                raise NotLeading("this replica does not hold the leader Lease")
            return float(clock())

        return replace(policy, clock=fenced_clock)

    client.policy = fenced(client.policy)
    client.event_policy = fenced(client.event_policy)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    election = getattr(memo, "election", None)
    if election is not None:
        await election.close()  # stops the workers, then releases the Lease
    await reconciler().stop()
    events.sink.close()  # Events still waiting are not worth holding up the exit
    runner = getattr(memo, "metrics_runner", None)
    if runner is not None:
        await runner.cleanup()


@kopf.on.probe(id="experiments")
def experiments_probe(**_: Any) -> int:
    return len(reconciler().state.experiments)


@kopf.on.probe(id="leading")
def leading_probe(**_: Any) -> bool:
    return reconciler().leading
