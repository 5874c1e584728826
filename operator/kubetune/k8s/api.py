"""The Kubernetes API client, configured once (in-cluster, else the kubeconfig), and small helpers over it.

Every call here is blocking; the reconciler runs them on the threads of :func:`executor` (see :func:`blocking`), a
pool of its own sized for many concurrent requests (``asyncio.to_thread``'s default pool has ``CPUs + 4`` threads,
shared with everything else), so the event loop never waits on them. The client's connection pool is as large, so
no thread opens a connection that is thrown away after one request.

Requests are retried the way kopf retries its own: server errors (500, 502, 503, 504), throttling (429, waiting at
least the server's ``Retry-After``, capped) and transport failures (connection refused or reset, timeouts) are
retried with jittered exponential backoff, for a bounded number of attempts and a bounded total time; other client
errors (4xx) are not. Every attempt has a connect and a read timeout, so a hung connection cannot hold a worker
thread. Each helper is safe to repeat after a lost response: a create that finds its own object (409, same owner
uid) is done, a delete that finds nothing (404) is done, merge patches are idempotent.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..spec import GROUP, PLURAL, VERSION
from . import prometheus

__all__ = ["Api", "ApiException", "ForeignObject", "RetryPolicy", "api", "blocking", "error_code", "executor",
           "retryable"]

log = logging.getLogger("kubetune.api")
T = TypeVar("T")

API_THREADS = 32
"""Threads of :func:`executor`: API requests (and planning) of all experiments in flight at once."""
CONNECTIONS = API_THREADS + 8
"""The client's connection pool: one connection per API thread, and some for the Event threads."""

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def executor() -> ThreadPoolExecutor:
    """The operator's pool of threads for blocking work (made on first use)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(API_THREADS, thread_name_prefix="kubetune-api")
        return _executor


async def blocking(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on a thread of :func:`executor`, awaited without blocking the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor(), functools.partial(fn, *args, **kwargs))


RETRYABLE_STATUS = frozenset({0, 429, 500, 502, 503, 504})
"""HTTP statuses worth another attempt (0: the client got no HTTP response, e.g. a TLS failure)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How one request is attempted: attempts, backoff, Retry-After cap, total time and per-attempt timeouts."""

    attempts: int = 6
    backoff: float = 0.5
    """The first wait; it doubles per attempt up to :attr:`backoff_max`."""
    backoff_max: float = 16.0
    jitter: float = 0.5
    """Each wait is shortened by a random fraction up to this, so workers that failed together retry apart."""
    retry_after_max: float = 30.0
    deadline: float = 90.0
    """No new attempt starts when its wait would end later than this after the first attempt started."""
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    random: Callable[[], float] = random.random

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait after failed attempt ``attempt`` (1-based): jittered exponential backoff, and at least the
        server's ``Retry-After`` (capped at :attr:`retry_after_max`)."""
        wait = min(self.backoff * 2 ** (attempt - 1), self.backoff_max) * (1.0 - self.jitter * self.random())
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry_after_max))
        return float(wait)


DEFAULT_POLICY = RetryPolicy()
EVENT_POLICY = RetryPolicy(attempts=2, backoff=0.2, deadline=5.0, read_timeout=10.0)
"""Events are best effort: one quick retry, then they are dropped."""


class ForeignObject(Exception):
    """An object of the name the operator needs exists but belongs to another owner (e.g. an earlier experiment
    of the same name that is being garbage-collected). It is never adopted; the caller retries later."""

    def __init__(self, kind: str, name: str, owners: list[str]) -> None:
        super().__init__(f"{kind} {name} exists and is owned by {', '.join(owners) or 'nobody'}, not by this "
                         "experiment")
        self.kind, self.name, self.owners = kind, name, owners


def error_code(e: BaseException) -> int | None:
    """The HTTP status of a failed request, 0 when no response arrived, None when ``e`` is no API failure."""
    if isinstance(e, ApiException):
        return int(e.status or 0)
    if isinstance(e, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return 0
    return None


def retryable(e: BaseException) -> bool:
    code = error_code(e)
    return code is not None and code in RETRYABLE_STATUS


def retry_after(e: BaseException) -> float | None:
    """The server's ``Retry-After`` in seconds (the header, else the Status details), when it sent one."""
    if not isinstance(e, ApiException):
        return None
    value: Any = (e.headers or {}).get("Retry-After")
    if value is None and e.body:
        try:
            value = (json.loads(e.body).get("details") or {}).get("retryAfterSeconds")
        except (ValueError, TypeError, AttributeError):
            value = None
    try:
        seconds = float(value)
    except (TypeError, ValueError):  # absent, or an HTTP date: the backoff applies
        return None
    return seconds if seconds >= 0 else None


def _owner_uids(obj: Any) -> list[str]:
    return [o.uid for o in (obj.metadata.owner_references or [])]


class Api:
    """The few calls the operator makes, each retried by :attr:`policy` (events by :attr:`event_policy`).

    ``core``, ``batch`` and ``custom`` are the generated ``CoreV1Api``, ``BatchV1Api`` and ``CustomObjectsApi``
    (or anything with the same methods); without them the client is configured from the cluster or kubeconfig.
    """

    def __init__(self, core: Any = None, batch: Any = None, custom: Any = None, *,
                 policy: RetryPolicy = DEFAULT_POLICY, event_policy: RetryPolicy = EVENT_POLICY) -> None:
        self.client: Any = None
        if core is None or batch is None or custom is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, CONNECTIONS)
            self.client = client.ApiClient(configuration)
            core = core or client.CoreV1Api(self.client)
            batch = batch or client.BatchV1Api(self.client)
            custom = custom or client.CustomObjectsApi(self.client)
        self.core, self.batch, self.custom = core, batch, custom
        self.policy, self.event_policy = policy, event_policy

    def call(self, verb: str, fn: Callable[..., T], *args: Any, policy: RetryPolicy | None = None,
             **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with a timeout, retried while the failure is retryable and the policy allows.

        Every failed attempt is counted in ``kubetune_api_errors_total{verb, code}``. The last failure is raised
        with ``attempts`` (how many were made) set on it.
        """
        p = policy or self.policy
        started = p.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(*args, _request_timeout=p.timeout, **kwargs)
            except Exception as e:
                code = error_code(e)
                if code is None:
                    raise
                prometheus.count_api_error(verb, code)
                e.attempts = attempt  # type: ignore[attr-defined]
                if not retryable(e) or attempt >= p.attempts:
                    raise
                wait = p.delay(attempt, retry_after(e))
                if p.clock() - started + wait > p.deadline:
                    raise
                log.warning("%s failed (%s), attempt %d of %d; retrying in %.1fs", verb, _describe(e), attempt,
                            p.attempts, wait)
                p.sleep(wait)

    # -- Jobs ---------------------------------------------------------------------------------------------------

    def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a trial Job. True when it was created by this call (including by an attempt whose response was
        lost); False when this experiment's Job of that name already existed. Raises :class:`ForeignObject` when
        a Job of that name belongs to another owner: it is never adopted."""
        name = body["metadata"]["name"]
        ours = {o["uid"] for o in body["metadata"].get("ownerReferences") or []}
        for _ in range(2):
            try:
                self.call("create_job", _unread(self.batch.create_namespaced_job), namespace, body)
                return True
            except ApiException as e:
                if e.status != 409:
                    raise
                retried = getattr(e, "attempts", 1) > 1
            try:
                existing = self.call("get_job", self.batch.read_namespaced_job, name, namespace)
            except ApiException as e:
                if e.status == 404:  # it went away in between: create again
                    continue
                raise
            owners = _owner_uids(existing)
            if not ours or ours & set(owners):
                return retried  # an earlier attempt of this call made it, or it was made before
            raise ForeignObject("Job", name, owners)
        raise ApiException(status=409, reason=f"Job {name} keeps conflicting")

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; nothing to do when it is already gone."""
        try:
            self.call("delete_job", _unread(self.batch.delete_namespaced_job), name, namespace,
                      propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise

    def job_exists(self, namespace: str, name: str, owner_uid: str) -> bool:
        """Whether the Job of that name exists and belongs to ``owner_uid`` (a Job of another owner does not)."""
        try:
            job = self.call("get_job", self.batch.read_namespaced_job, name, namespace)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        owners = _owner_uids(job)
        return not owners or owner_uid in owners

    def job_has_pods(self, namespace: str, job_name: str, job_uid: str) -> bool:
        """Whether any pod of the Job with that uid exists (pods of an earlier Job of the same name do not count)."""
        pods = self.call("list_pods", self.core.list_namespaced_pod, namespace,
                         label_selector=f"job-name={job_name}").items
        return any(not job_uid or job_uid in _owner_uids(p) for p in pods)

    def list_pods(self, namespace: str, selector: str) -> list[Any]:
        """The pods that carry the labels of ``selector``."""
        return list(self.call("list_pods", self.core.list_namespaced_pod, namespace, label_selector=selector).items)

    # -- the experiment -----------------------------------------------------------------------------------------

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge ``status`` into the experiment's status; False when the experiment is gone (404)."""
        try:
            self.call("patch_status", _unread(self.custom.patch_namespaced_custom_object_status),
                      GROUP, VERSION, namespace, PLURAL, name, {"status": status})
        except ApiException as e:
            if e.status != 404:
                raise
            return False
        return True

    # -- ConfigMaps ---------------------------------------------------------------------------------------------

    def list_configmaps(self, namespace: str, selector: str) -> list[Any]:
        return list(self.call("list_configmaps", self.core.list_namespaced_config_map, namespace,
                              label_selector=selector).items)

    def upsert_configmap_data(self, namespace: str, body: dict[str, Any], exists: bool = True) -> None:
        """Merge ``body['data']`` into the ConfigMap, creating it when missing (``exists=False``: it probably is,
        so the create is tried first). Raises :class:`ForeignObject` when a ConfigMap of that name belongs to
        another owner (its data would go with that owner)."""
        name = body["metadata"]["name"]
        ours = {o["uid"] for o in body["metadata"].get("ownerReferences") or []}
        patch = {"data": body["data"]}
        steps: list[tuple[str, Callable[..., Any], tuple[Any, ...], int]] = [
            ("patch_configmap", self.core.patch_namespaced_config_map, (name, namespace, patch), 404),
            ("create_configmap", self.core.create_namespaced_config_map, (namespace, body), 409),
        ]
        if not exists:
            steps.reverse()
        current: Any = None
        for attempt in range(4):  # a create that conflicts patches; a patch that finds nothing creates
            verb, fn, args, absent = steps[attempt % 2]
            try:
                current = self.call(verb, fn, *args)
                break
            except ApiException as e:
                if e.status != absent:
                    raise
        else:
            raise ApiException(status=409, reason=f"ConfigMap {name} keeps conflicting")
        owners = _owner_uids(current)
        if ours and owners and not ours & set(owners):
            raise ForeignObject("ConfigMap", name, owners)

    # -- Events -------------------------------------------------------------------------------------------------

    def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.call("create_event", _unread(self.core.create_namespaced_event), namespace, body,
                  policy=self.event_policy)


def _unread(fn: Callable[..., Any]) -> Callable[..., None]:
    """``fn`` for a request whose answer is not needed: the client is asked for the raw response
    (``_preload_content=False``), so it does not build its model objects (a Job's takes milliseconds of CPU), and
    the body is read and the connection given back to the pool within the attempt (so a failure reading it is
    retried like any other). Error answers still raise :class:`ApiException`."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> None:
        response = fn(*args, _preload_content=False, **kwargs)
        if isinstance(response, urllib3.response.BaseHTTPResponse):
            try:
                response.read()
            finally:
                response.release_conn()

    return call


def _describe(e: BaseException) -> str:
    if isinstance(e, ApiException):
        return f"{e.status} {e.reason}"
    return f"{type(e).__name__}: {e}"[:300]


@lru_cache(maxsize=1)
def api() -> Api:
    return Api()
