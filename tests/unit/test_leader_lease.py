"""Lease-based leader election (kubetune.k8s.leader) against an in-memory Lease and fake clocks.

The real API server is exercised by tests/integration/test_leader.py; here the rules themselves: at most one
leader at any instant (hypothesis over random interleavings of attempts, crashes, releases and time), a crashed
leader is replaced once its lease expired and not before, a released lease is taken at the next attempt.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetune.k8s.leader import Conflict, LeaderElection, LeaderElector, LeaseRecord, Timing

TIMING = Timing(lease_duration=10.0, renew_deadline=7.0, retry_period=2.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryLease:
    """A Lease with the API server's optimistic concurrency: every write bumps resourceVersion."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.writes = 0

    def get(self) -> LeaseRecord | None:
        return self.record

    def create(self, record: LeaseRecord) -> LeaseRecord:
        if self.record is not None:
            raise Conflict("exists")
        return self._store(record)

    def update(self, record: LeaseRecord) -> LeaseRecord:
        if self.record is None or record.resource_version != self.record.resource_version:
            raise Conflict("stale")
        return self._store(record)

    def _store(self, record: LeaseRecord) -> LeaseRecord:
        self.version += 1
        self.writes += 1
        self.record = replace(record, resource_version=str(self.version))
        return self.record


def wall() -> datetime:
    return datetime(2026, 1, 1, tzinfo=timezone.utc)


def electors(n: int, clock: Clock, store: MemoryLease) -> list[LeaderElector]:
    return [LeaderElector(store, f"replica-{i}", TIMING, clock=clock, wall=wall) for i in range(n)]


def test_first_replica_acquires_and_renews() -> None:
    clock, store = Clock(), MemoryLease()
    a, b = electors(2, clock, store)
    assert a.try_acquire_or_renew() and a.is_leader
    assert store.record is not None and store.record.holder == "replica-0" and store.record.duration == 10
    assert not b.try_acquire_or_renew() and not b.is_leader
    for _ in range(20):  # a keeps renewing every retry period; b never gets it
        clock.now += TIMING.retry_period
        assert a.try_acquire_or_renew() and a.is_leader
        assert not b.try_acquire_or_renew() and not b.is_leader
    assert store.record.holder == "replica-0" and store.record.transitions == 0


def test_crashed_leader_is_replaced_after_the_lease_duration_and_not_before() -> None:
    clock, store = Clock(), MemoryLease()
    a, b = electors(2, clock, store)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b observes a's record now
    crashed_at = clock.now  # a renews no more
    while clock.now - crashed_at < TIMING.lease_duration - 0.5:
        clock.now += 0.5
        assert not b.try_acquire_or_renew(), f"taken over {clock.now - crashed_at}s after the last renew"
        if clock.now - crashed_at >= TIMING.renew_deadline:
            assert not a.is_leader, "the old leader must have stopped before anyone may take over"
    clock.now = crashed_at + TIMING.lease_duration + 0.01
    assert b.try_acquire_or_renew() and b.is_leader
    assert store.record is not None and store.record.holder == "replica-1" and store.record.transitions == 1
    # the old leader comes back: it sees another holder and stays a follower
    assert not a.try_acquire_or_renew() and not a.is_leader


@pytest.mark.parametrize("phase", [i / 10 for i in range(10)])
def test_standby_takes_over_between_lease_duration_and_two_standby_periods_later(phase: float) -> None:
    """A standby looks every standby_period (1 s), the leader renews every retry_period (2 s) until it dies: the
    standby leads no sooner than lease_duration and no later than lease_duration + 2 standby periods after the
    leader's last renew, whatever the phase between the two."""
    clock, store = Clock(), MemoryLease()
    a, b = electors(2, clock, store)
    start = clock.now
    events = [(start + k * TIMING.retry_period, a) for k in range(5)]  # a renews 5 times, then dies
    events += [(start + phase + k * TIMING.standby_period, b) for k in range(40)]
    last_renew = took_over = 0.0
    for when, who in sorted(events, key=lambda e: (e[0], e[1] is b)):
        clock.now = when
        ok = who.try_acquire_or_renew()
        if who is a:
            assert ok
            last_renew = when
        elif ok:
            took_over = when
            break
    assert took_over, "the standby never took over"
    assert TIMING.lease_duration <= took_over - last_renew <= TIMING.lease_duration + 2 * TIMING.standby_period


def test_leader_that_cannot_renew_stops_at_the_renew_deadline() -> None:
    clock, store = Clock(), MemoryLease()
    (a,) = electors(1, clock, store)
    assert a.try_acquire_or_renew()
    clock.now += TIMING.renew_deadline - 0.01
    assert a.is_leader
    clock.now += 0.02
    assert not a.is_leader and a.time_left() == 0.0


def test_release_hands_over_at_the_next_attempt() -> None:
    clock, store = Clock(), MemoryLease()
    a, b = electors(2, clock, store)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release() and not a.is_leader
    assert store.record is not None and store.record.holder == ""
    clock.now += 0.1
    assert b.try_acquire_or_renew() and b.is_leader
    assert store.record.holder == "replica-1"


def test_leader_whose_lease_was_taken_steps_down_at_once() -> None:
    clock, store = Clock(), MemoryLease()
    (a,) = electors(1, clock, store)
    assert a.try_acquire_or_renew()
    assert store.record is not None
    store._store(replace(store.record, holder="intruder"))  # e.g. an administrator edited the Lease
    assert not a.try_acquire_or_renew()
    assert not a.is_leader, "another holder: stop leading now, not at the renew deadline"


def test_lost_race_on_update_is_not_leadership() -> None:
    clock, store = Clock(), MemoryLease()
    a, b = electors(2, clock, store)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += TIMING.lease_duration + 1  # a's lease expired for b ...
    real_update = store.update

    def racing_update(record: LeaseRecord) -> LeaseRecord:  # ... but a renews between b's read and write
        assert store.record is not None
        store._store(replace(store.record, renew_time="later"))
        return real_update(record)

    store.update = racing_update  # type: ignore[method-assign]
    assert not b.try_acquire_or_renew() and not b.is_leader


def test_timing_must_keep_the_renew_deadline_below_the_lease() -> None:
    with pytest.raises(ValueError):
        Timing(lease_duration=10, renew_deadline=10, retry_period=2)
    with pytest.raises(ValueError):
        Timing(lease_duration=10, renew_deadline=5, retry_period=6)
    with pytest.raises(ValueError):
        Timing(lease_duration=10, renew_deadline=7, retry_period=2, standby_period=3)


Step = tuple[str, int, float]
steps = st.lists(st.tuples(st.sampled_from(["try", "try", "try", "release", "crash", "revive"]),
                           st.integers(0, 2), st.floats(0.0, 4.0)), min_size=1, max_size=120)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_never_two_leaders(plan: list[Step]) -> None:
    """Random interleavings of attempts, releases, crashes and time: at no instant do two replicas lead, and a
    live replica that keeps trying leads again within a bounded time after a leader died."""
    clock, store = Clock(), MemoryLease()
    reps = electors(3, clock, store)
    alive = [True, True, True]
    for action, i, dt in plan:
        clock.now += dt
        if action == "crash":
            alive[i] = False
            reps[i].renewed_at = None  # a dead process leads nothing (its lease stays in the store)
        elif action == "revive" and not alive[i]:
            alive[i] = True
            reps[i] = LeaderElector(store, f"replica-{i}-again", TIMING, clock=clock, wall=wall)
        elif alive[i]:
            if action == "try":
                reps[i].try_acquire_or_renew()
            else:
                reps[i].release()
        leaders = [r.identity for r, up in zip(reps, alive, strict=True) if up and r.is_leader]
        assert len(leaders) <= 1, f"two leaders at {clock.now}: {leaders}"
    # liveness: the survivors keep trying every retry period; someone leads within lease + 2 retries
    if any(alive):
        start = clock.now
        while not any(r.is_leader for r, up in zip(reps, alive, strict=True) if up):
            assert clock.now - start <= TIMING.lease_duration + 2 * TIMING.retry_period, "nobody took over"
            clock.now += TIMING.retry_period
            for r, up in zip(reps, alive, strict=True):
                if up:
                    r.try_acquire_or_renew()


def test_election_loop_stops_the_workers_when_renewing_hangs() -> None:
    """The API server stops answering: the loop calls on_stopped by the renew deadline, without waiting for the
    hung call; it then releases nothing (it is no longer the holder)."""
    store = MemoryLease()
    hang = threading.Event()
    release_hang = threading.Event()
    real_get = store.get

    def get() -> LeaseRecord | None:
        if hang.is_set():
            release_hang.wait(30)
        return real_get()

    store.get = get  # type: ignore[method-assign]
    timing = Timing(lease_duration=1.0, renew_deadline=0.6, retry_period=0.1, standby_period=0.1)
    elector = LeaderElector(store, "replica-0", timing)
    calls: list[str] = []

    async def started() -> None:
        calls.append("started")

    async def stopped() -> None:
        calls.append("stopped")

    async def scenario() -> None:
        election = LeaderElection(elector, started, stopped)
        election.start()
        for _ in range(200):
            if calls == ["started"]:
                break
            await asyncio.sleep(0.02)
        assert calls == ["started"]
        hang.set()
        for _ in range(500):  # generous: only guards against a hang
            if "stopped" in calls:
                break
            await asyncio.sleep(0.02)
        assert calls == ["started", "stopped"]
        release_hang.set()
        await election.close()
        assert calls == ["started", "stopped"]  # close() does not stop twice

    asyncio.run(scenario())


class FakeBatch:
    def __init__(self, failures: int, on_call: object = None) -> None:
        self.calls = 0
        self.failures = failures
        self.on_call = on_call

    def create_namespaced_job(self, namespace: str, body: dict, **_: object) -> dict:
        from kubernetes.client.exceptions import ApiException

        self.calls += 1
        if callable(self.on_call):
            self.on_call()
        if self.calls <= self.failures:
            raise ApiException(status=500, reason="Internal Server Error")
        return body


def test_no_api_call_starts_or_is_retried_once_the_replica_stopped_leading() -> None:
    from kubetune.k8s.api import Api
    from kubetune.k8s.handlers.lifecycle import NotLeading, fence_api_calls

    job = {"metadata": {"name": "exp-0000", "ownerReferences": [{"uid": "u"}]}}
    leading = [True]
    lose_lease_on_first_call = FakeBatch(failures=1, on_call=lambda: leading.__setitem__(0, False))
    client = Api(core=object(), batch=lose_lease_on_first_call, custom=object())
    client.policy = replace(client.policy, sleep=lambda s: None)
    fence_api_calls(client, lambda: leading[0])
    with pytest.raises(NotLeading):  # the first attempt failed with a 500 after the lease was lost: no retry
        client.create_job("ns", job)
    assert lose_lease_on_first_call.calls == 1
    with pytest.raises(NotLeading):  # no new call starts at all
        client.create_job("ns", job)
    assert lose_lease_on_first_call.calls == 1

    leading[0] = True  # leading again: calls and retries go through as before
    flaky = FakeBatch(failures=1)
    client.batch = flaky
    assert client.create_job("ns", job) is True and flaky.calls == 2
