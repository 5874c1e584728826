"""Leader election with a ``coordination.k8s.io/v1`` Lease, so two operator replicas never reconcile at once.

The same habit as client-go's leaderelection package: every replica tries to acquire or renew the Lease every
``retry_period``; the holder writes its identity and a fresh ``renewTime``. Another replica takes the Lease only
when it has seen the *same* Lease record (same ``resourceVersion``) for longer than ``leaseDurationSeconds`` by its
own monotonic clock (so no clocks need to agree), or when the holder released it (empty ``holderIdentity``).
The holder stops leading when it could not renew for ``renew_deadline`` (< the lease duration), counted from the
start of its last successful renew: it has stopped before any other replica may take over.

All replicas keep watching (the in-memory view stays warm); only the leader runs experiment workers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Protocol

log = logging.getLogger("kubetune.leader")

DEFAULT_LEASE_NAME = "kubetune-operator"


@dataclass(frozen=True)
class Timing:
    lease_duration: float = 10.0
    """How long a Lease not renewed is respected by the other replicas (``leaseDurationSeconds``)."""
    renew_deadline: float = 7.0
    """The holder stops leading when it could not renew for this long; must be below ``lease_duration``."""
    retry_period: float = 2.0
    """How often the leader renews."""
    standby_period: float = 1.0
    """How often a standby looks at the Lease. A standby counts the lease duration from when it first saw the
    current record, so a shorter look-up period shortens the handover (at most lease_duration + 2 x this after the
    last renew) without making it less safe."""

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs 0 < retry_period < renew_deadline < lease_duration")
        if not 0 < self.standby_period <= self.retry_period:
            raise ValueError("leader election needs 0 < standby_period <= retry_period")


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    """holderIdentity; '' when nobody holds the Lease (released)."""
    duration: int
    """leaseDurationSeconds as the holder declared it."""
    transitions: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    resource_version: str = ""


class Conflict(Exception):
    """Someone else wrote the Lease since we read it (HTTP 409), or created it first."""


class LeaseStore(Protocol):
    def get(self) -> LeaseRecord | None: ...
    def create(self, record: LeaseRecord) -> LeaseRecord: ...
    def update(self, record: LeaseRecord) -> LeaseRecord:
        """Replace the Lease if its resourceVersion is still ``record.resource_version``; else :class:`Conflict`."""
        ...


def default_identity() -> str:
    """The pod's name (its hostname) and the process id: unique per replica, readable in `kubectl get lease`."""
    return f"{socket.gethostname()}_{os.getpid()}"


def _micro_time(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """One acquire-or-renew attempt at a time (blocking calls; run it in a thread)."""

    def __init__(self, store: LeaseStore, identity: str, timing: Timing = Timing(),
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.store = store
        self.identity = identity
        self.timing = timing
        self.clock = clock
        self.wall = wall
        self.observed: LeaseRecord | None = None
        self.observed_at = 0.0
        self.renewed_at: float | None = None
        """Monotonic time at which the last successful acquire/renew *started*; None when not holding."""

    @property
    def is_leader(self) -> bool:
        return self.renewed_at is not None and self.clock() - self.renewed_at < self.timing.renew_deadline

    def time_left(self) -> float:
        """Seconds until the renew deadline (0 when not leading)."""
        if self.renewed_at is None:
            return 0.0
        return max(0.0, self.timing.renew_deadline - (self.clock() - self.renewed_at))

    def try_acquire_or_renew(self) -> bool:
        started = self.clock()
        now = _micro_time(self.wall())
        current = self.store.get()
        if current is None:
            mine = LeaseRecord(self.identity, int(self.timing.lease_duration), 0, now, now)
            try:
                self._observe(self.store.create(mine))
            except Conflict:
                return False
            self.renewed_at = started
            return True
        if self.observed is None or current.resource_version != self.observed.resource_version:
            self._observe(current)
        if current.holder and current.holder != self.identity:
            self.renewed_at = None  # someone else holds it: never act as the leader past this point
            if self.clock() - self.observed_at < current.duration:
                return False
        if current.holder == self.identity:
            new = replace(current, duration=int(self.timing.lease_duration), renew_time=now)
        else:  # expired or released: take it over
            new = replace(current, holder=self.identity, duration=int(self.timing.lease_duration),
                          transitions=current.transitions + 1, acquire_time=now, renew_time=now)
        try:
            self._observe(self.store.update(new))
        except Conflict:
            return False
        self.renewed_at = started
        return True

    def release(self) -> bool:
        """Give the Lease up (on a clean shutdown) so a standby takes over at its next try."""
        if self.renewed_at is None or self.observed is None:
            return False
        self.renewed_at = None
        now = _micro_time(self.wall())
        try:
            self._observe(self.store.update(replace(self.observed, holder="", duration=1, renew_time=now)))
        except Conflict:
            return False
        return True

    def _observe(self, record: LeaseRecord) -> None:
        self.observed, self.observed_at = record, self.clock()


class KubernetesLeaseStore:
    """The Lease through the API server (get, create, update with the resourceVersion as precondition)."""

    def __init__(self, api_client: Any, namespace: str, name: str, request_timeout: float = 5.0) -> None:
        from kubernetes import client

        self.coordination = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.timeout = request_timeout

    def get(self) -> LeaseRecord | None:
        from kubernetes.client.exceptions import ApiException

        try:
            resp: Any = self.coordination.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                           _request_timeout=self.timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return self._record(json.loads(resp.data))

    def create(self, record: LeaseRecord) -> LeaseRecord:
        return self._write(record, create=True)

    def update(self, record: LeaseRecord) -> LeaseRecord:
        return self._write(record, create=False)

    def _write(self, record: LeaseRecord, create: bool) -> LeaseRecord:
        from kubernetes.client.exceptions import ApiException

        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                    "labels": {"app.kubernetes.io/part-of": "kubetune"}}
        if not create:
            metadata["resourceVersion"] = record.resource_version
        body: Any = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
                "spec": {"holderIdentity": record.holder or None, "leaseDurationSeconds": record.duration,
                         "leaseTransitions": record.transitions, "acquireTime": record.acquire_time,
                         "renewTime": record.renew_time}}
        try:
            resp: Any
            if create:
                resp = self.coordination.create_namespaced_lease(self.namespace, body, _preload_content=False,
                                                                 _request_timeout=self.timeout)
            else:
                resp = self.coordination.replace_namespaced_lease(self.name, self.namespace, body,
                                                                  _preload_content=False,
                                                                  _request_timeout=self.timeout)
        except ApiException as e:
            if e.status == 409:
                raise Conflict(str(e.reason)) from None
            raise
        return self._record(json.loads(resp.data))

    @staticmethod
    def _record(lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return LeaseRecord(
            holder=str(spec.get("holderIdentity") or ""),
            duration=int(spec.get("leaseDurationSeconds") or 1),
            transitions=int(spec.get("leaseTransitions") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            resource_version=str(lease["metadata"].get("resourceVersion") or ""),
        )


Callback = Callable[[], Awaitable[None]]


class LeaderElection:
    """Runs the elector in the event loop and calls ``on_started``/``on_stopped`` when leadership changes."""

    def __init__(self, elector: LeaderElector, on_started: Callback, on_stopped: Callback) -> None:
        self.elector = elector
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.leading = False
        self._pending: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kubetune:leader-election")

    async def _run(self) -> None:
        timing = self.elector.timing
        while True:
            # One attempt in flight at most: a slow API call is waited for, never duplicated.
            if self._pending is None or self._pending.done():
                self._pending = asyncio.ensure_future(asyncio.to_thread(self.elector.try_acquire_or_renew))
            limit = self.elector.time_left() if self.leading else timing.renew_deadline
            try:
                await asyncio.wait_for(asyncio.shield(self._pending), max(limit, 0.05))
            except asyncio.TimeoutError:
                pass
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the API server is unreachable or refused: retry
                log.warning("leader election: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
            await self._follow()
            pause = timing.standby_period
            if self.leading:
                pause = min(timing.retry_period, max(self.elector.time_left(), 0.05))
            await asyncio.sleep(pause)

    async def _follow(self) -> None:
        leading = self.elector.is_leader
        if leading and not self.leading:
            self.leading = True
            log.info("leading as %s (lease %s/%s)", self.elector.identity, *self._lease())
            await self.on_started()
        elif not leading and self.leading:
            self.leading = False
            log.warning("stopped leading as %s: the lease was not renewed in time or was taken",
                        self.elector.identity)
            await self.on_stopped()

    def _lease(self) -> tuple[str, str]:
        store = self.elector.store
        return getattr(store, "namespace", "?"), getattr(store, "name", "?")

    async def close(self, release: bool = True) -> None:
        """Stop trying; stop leading (``on_stopped``); release the Lease so a standby takes over at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pending is not None and not self._pending.done():
            await asyncio.gather(self._pending, return_exceptions=True)
        if self.leading:
            self.leading = False
            await self.on_stopped()
        if release:
            try:
                if await asyncio.to_thread(self.elector.release):
                    log.info("released the lease as %s", self.elector.identity)
            except Exception as e:
                log.warning("could not release the lease: %s", str(e).splitlines()[0] if str(e) else e)
