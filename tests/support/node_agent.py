"""A fake kubelet for integration tests: runs pods' first container as a local process.

:class:`NodeAgent` registers a Node, binds unscheduled pods to it (``pods/binding``),
runs the first container's ``command + args`` as a host process and reports pod
status like a kubelet: ``Pending -> Running -> Succeeded/Failed`` with exit code,
reason and termination message.  It honours ``activeDeadlineSeconds``,
``restartPolicy``, graceful deletion (SIGTERM, grace period, SIGKILL, then delete
with grace 0) and keeps a Lease plus the Node's Ready condition fresh.

What a process gets (see :meth:`PodWorker._environment`):

* the test's own environment minus ``KUBECONFIG`` / ``KUBERNETES_*``, with a shim
  directory first on ``PATH`` so ``python``/``python3`` run ``sys.executable``;
* ``HOSTNAME``, ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` (the test
  apiserver), ``PYTHONUNBUFFERED=1``;
* the container's ``envFrom`` and ``env`` (``value``, ``fieldRef``,
  ``configMapKeyRef``, ``secretKeyRef``), with ``$(VAR)`` expansion;
* ``KUBETUNE_SERVICEACCOUNT_DIR``: a directory with ``token`` (a TokenRequest
  token bound to the pod), ``ca.crt`` and ``namespace``;
* ``KUBETUNE_TERMINATION_LOG``: a file standing in for ``terminationMessagePath``.

Like a kubelet it rides out API faults (the API server or etcd restarting, dropped
connections, 5xx/429 answers): every API call (list/watch, bind, status writes, token
requests, config reads, deletes, the node heartbeat) is retried with backoff until it
goes through or the agent stops, and the pod list is re-read after every broken watch
(pods deleted meanwhile have their processes stopped).  So a pod's final status is
always written eventually.  :attr:`NodeAgent.faults` counts the retried calls.

Every process started is recorded in the launch log (:meth:`NodeAgent.launches`, and
``launches.jsonl`` in the work directory): pod uid and name, the owning Job's uid, the
``kubetune.io/trial`` label, pid and time -- so tests count what really ran.

Volumes: a ``persistentVolumeClaim`` volume is a host directory shared by every pod
of the node that mounts the same claim, ``<workdir>/pvc/<namespace>/<claimName>``
(:meth:`NodeAgent.claim_dir`); since the process runs on the host, a container's
``volumeMounts`` of it are honoured by rewriting the mount path to that directory
at the start of the container's env values and arguments (``subPath`` and
read-only mounts are not emulated).

Not emulated: images (the command runs on the host), other volumes, init and other
containers (reported as not run), probes, resource limits, networking (every pod
is 127.0.0.1), scheduling constraints (every pod is bound here), ``kubectl logs``/
``exec`` (read :meth:`NodeAgent.log_path` instead).
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

Obj = dict[str, Any]

#: Like kubelet: the termination message is cut to this many bytes.
MAX_TERMINATION_MESSAGE = 4096
TOKEN_SECONDS = 3600
#: Client-side bound of one API request (connect, read); a watch's read bound is longer.
REQUEST_TIMEOUT = (5.0, 30.0)
#: Backoff of retried API calls: first delay, growth factor, cap (seconds).
BACKOFF = (0.1, 2.0, 2.0)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})

T = TypeVar("T")


from controlplane import die_with_parent as _die_with_parent  # noqa: E402  (same folder)


def now() -> str:
    """RFC 3339 timestamp (seconds), as in object status."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """RFC 3339 timestamp with microseconds (``MicroTime``, used by Leases)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: str) -> float:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def _exit_code(returncode: int) -> int:
    """Container-runtime style exit code: 128 + signal for a killed process."""
    return 128 - returncode if returncode < 0 else returncode


_FIELD_RE = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def resolve_field_ref(pod: Obj, path: str) -> str:
    """Value of a downward-API ``fieldRef.fieldPath`` for *pod* ('' if unset)."""
    meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": status.get("podIP") or "127.0.0.1",
        "status.podIPs": status.get("podIP") or "127.0.0.1",
        "status.hostIP": status.get("hostIP") or "127.0.0.1",
        "status.hostIPs": status.get("hostIP") or "127.0.0.1",
    }
    if path in simple:
        return str(simple[path] or "")
    m = _FIELD_RE.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    raise ValueError(f"unsupported fieldRef {path!r}")


_VAR_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known vars replaced, ``$$`` escapes ``$``."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR_RE.sub(sub, value)


class PodGone(Exception):
    """The pod (this uid) no longer exists."""


class AgentStopping(Exception):
    """The agent is stopping: a retried API call gives up."""


def _remount(value: str, mount_path: str, host: str) -> str:
    """``value`` with a leading ``mount_path`` (the whole value, or followed by ``/``) replaced by ``host``."""
    if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
        return host + value[len(mount_path.rstrip("/")):]
    return value


def is_transient(exc: BaseException) -> bool:
    """An API failure worth retrying: no connection, a cut response, 5xx, 429, timeouts."""
    if isinstance(exc, ApiException):
        return exc.status is None or exc.status == 0 or exc.status in TRANSIENT_STATUS
    return isinstance(exc, (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError))


@dataclass(frozen=True)
class Launch:
    """One process the agent started for a pod's container."""

    namespace: str
    pod: str
    pod_uid: str
    job_uid: str
    trial: str
    pid: int
    time: float


class PodWorker(threading.Thread):
    """Runs one pod's first container and reports its status. One per pod uid."""

    def __init__(self, agent: NodeAgent, pod: Obj) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.pod = pod
        self.dir = agent.workdir / "pods" / f"{self.namespace}_{self.pod_name}_{self.uid[:8]}"
        self.log_path = self.dir / "container.log"
        self.sa_dir = self.dir / "serviceaccount"
        self.termination_log = self.dir / "termination-log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._done = False
        self._kill_grace: float | None = None  # set when deletion was requested
        self._kill_reason = ""
        self._delete_issued = False

    # -- requests from the agent ------------------------------------------

    def request_deletion(self, grace: float) -> None:
        """The pod has a deletionTimestamp: stop the process, then delete the pod."""
        with self._lock:
            if self._kill_grace is None:
                self._kill_grace = grace
                self._kill_reason = "deleted"
            done = self._done
        if done:
            self._delete_now()

    def kill_now(self) -> None:
        """Agent shutdown: kill the process group immediately."""
        with self._lock:
            self._kill_grace = 0
            self._kill_reason = self._kill_reason or "agent-stop"
        self._signal(signal.SIGKILL)

    # -- thread body --------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except (PodGone, AgentStopping):
            pass
        except Exception as exc:
            self.agent.error(f"{self.name}: {exc!r}")
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self._signal(signal.SIGKILL)
            with self._lock:
                self._done = True
                deleting = self._kill_grace is not None and self._kill_reason == "deleted"
            if deleting:
                self._delete_now()

    def _run(self) -> None:
        spec = self.pod["spec"]
        restart_policy = spec.get("restartPolicy", "Always")
        restarts = 0
        last_state: Obj = {}
        self.dir.mkdir(parents=True, exist_ok=True)
        start_time = self._set_running_pending()
        while True:
            if self._kill_grace is not None:
                return  # deleted before the process started
            started = now()
            try:
                self._start_process()
            except (OSError, ValueError, ApiException) as exc:
                self._finish({"exitCode": 128, "reason": "StartError", "message": str(exc)[:1024],
                              "startedAt": started, "finishedAt": now()}, restarts, last_state)
                return
            self._update_status(self._container_status(
                {"running": {"startedAt": started}}, True, restarts, last_state), "Running")
            code, reason = self._wait(start_time)
            if self._kill_reason == "agent-stop":
                return  # the agent (or the pod object) is going away: report nothing
            terminated = {
                "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "message": self._termination_message(), "startedAt": started,
                "finishedAt": now(), "containerID": self._container_id(),
            }
            if not terminated["message"]:
                del terminated["message"]
            again = (restart_policy == "Always" or (restart_policy == "OnFailure" and code != 0))
            if reason or not again or self._kill_grace is not None:
                self._finish(terminated, restarts, last_state, pod_reason=reason)
                return
            restarts += 1
            last_state = {"terminated": terminated}
            delay = min(2 ** restarts, 10)
            self._update_status(self._container_status(
                {"waiting": {"reason": "CrashLoopBackOff",
                             "message": f"back-off {delay}s restarting failed container"}},
                False, restarts, last_state), "Running")
            if self._sleep_unless_killed(delay):
                if self._kill_reason != "agent-stop":
                    self._finish(terminated, restarts, last_state)
                return

    # -- process handling ---------------------------------------------------

    def _start_process(self) -> None:
        container = self.pod["spec"]["containers"][0]
        env = self._environment(container)
        raw = (container.get("command") or []) + (container.get("args") or [])
        argv = [expand(a, env) for a in raw]
        for mount_path, host in self._claim_mounts(container):
            argv = [_remount(a, mount_path, host) for a in argv]
        if not container.get("command"):
            raise ValueError("the test node agent needs an explicit container `command` "
                             "(image entrypoints are not available)")
        exe = shutil.which(argv[0], path=env["PATH"]) if "/" not in argv[0] else argv[0]
        if exe is None:
            raise ValueError(f'exec: "{argv[0]}": executable file not found in $PATH')
        self.termination_log.write_bytes(b"")
        with open(self.log_path, "ab") as log:
            log.write(f"--- {now()} $ {shlex.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [exe, *argv[1:]], cwd=self.dir / "work", env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent)
        self.agent.record_launch(self.pod, self.proc.pid)

    def _wait(self, start_time: float) -> tuple[int, str]:
        """Wait for the process; returns (exit code, pod-level failure reason or '')."""
        assert self.proc is not None
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        token_refresh = time.monotonic() + 0.8 * TOKEN_SECONDS
        while True:
            try:
                rc = self.proc.wait(timeout=0.2)
                return _exit_code(rc), ""
            except subprocess.TimeoutExpired:
                pass
            if self._kill_grace is not None:
                return self._terminate(self._kill_grace), ""
            if deadline is not None and time.time() - start_time > float(deadline):
                grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
                return self._terminate(grace), "DeadlineExceeded"
            if time.monotonic() > token_refresh:
                self._write_token()
                token_refresh = time.monotonic() + 0.8 * TOKEN_SECONDS

    def _terminate(self, grace: float) -> int:
        """SIGTERM the process group, SIGKILL after *grace* seconds; returns exit code."""
        assert self.proc is not None
        self._signal(signal.SIGTERM)
        try:
            return _exit_code(self.proc.wait(timeout=max(grace, 0)))
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            return _exit_code(self.proc.wait())

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def _sleep_unless_killed(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._kill_grace is not None:
                return True
            time.sleep(0.1)
        return False

    def _termination_message(self) -> str:
        try:
            with open(self.termination_log, "rb") as f:
                return f.read(MAX_TERMINATION_MESSAGE).decode(errors="replace")
        except OSError:
            return ""

    def _container_id(self) -> str:
        return f"kubetune-node://{self.proc.pid}" if self.proc is not None else ""

    # -- environment ----------------------------------------------------------

    def _environment(self, container: Obj) -> dict[str, str]:
        (self.dir / "work").mkdir(exist_ok=True)
        agent = self.agent
        env = {k: v for k, v in os.environ.items()
               if k != "KUBECONFIG" and not k.startswith("KUBERNETES_")}
        env.update(
            PATH=f"{agent.shim_dir}{os.pathsep}{env.get('PATH', os.defpath)}",
            HOSTNAME=self.pod_name,
            PYTHONUNBUFFERED="1",
            KUBERNETES_SERVICE_HOST=agent.api_host,
            KUBERNETES_SERVICE_PORT=str(agent.api_port),
            KUBERNETES_SERVICE_PORT_HTTPS=str(agent.api_port),
        )
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self._config_data("configmap", source["configMapRef"])
            else:
                data = self._config_data("secret", source["secretRef"])
            env.update({prefix + k: v for k, v in data.items()})
        for var in container.get("env") or []:
            value = self._env_value(var, env)
            if value is not None:
                env[var["name"]] = value
        for mount_path, host in self._claim_mounts(container):
            for k, v in list(env.items()):
                env[k] = _remount(v, mount_path, host)
        self._write_service_account()
        env["KUBETUNE_SERVICEACCOUNT_DIR"] = str(self.sa_dir)
        env["KUBETUNE_TERMINATION_LOG"] = str(self.termination_log)
        return env

    def _claim_mounts(self, container: Obj) -> list[tuple[str, str]]:
        """(mount path, host directory) of the container's mounts of persistentVolumeClaim volumes."""
        claims = {v.get("name"): v["persistentVolumeClaim"].get("claimName")
                  for v in self.pod["spec"].get("volumes") or [] if v.get("persistentVolumeClaim")}
        out = []
        for m in container.get("volumeMounts") or []:
            claim = claims.get(m.get("name"))
            if claim and m.get("mountPath"):
                out.append((m["mountPath"].rstrip("/") or "/", str(self.agent.claim_dir(self.namespace, claim))))
        return out

    def _env_value(self, var: Obj, env: dict[str, str]) -> str | None:
        if "valueFrom" not in var:
            return expand(var.get("value", ""), env)
        source = var["valueFrom"]
        if "fieldRef" in source:
            return resolve_field_ref(self.pod, source["fieldRef"]["fieldPath"])
        if "configMapKeyRef" in source or "secretKeyRef" in source:
            kind = "configmap" if "configMapKeyRef" in source else "secret"
            ref = source.get("configMapKeyRef") or source["secretKeyRef"]
            data = self._config_data(kind, ref)
            if ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise ValueError(f"{kind} {ref['name']} has no key {ref['key']}")
            return data[ref["key"]]
        raise ValueError(f"unsupported valueFrom for env {var['name']}: {sorted(source)}")

    def _config_data(self, kind: str, ref: Obj) -> dict[str, str]:
        core, call = self.agent.core, self.agent.call
        try:
            if kind == "configmap":
                return dict(call("read configmap", core.read_namespaced_config_map,
                                 ref["name"], self.namespace).data or {})
            import base64
            raw = call("read secret", core.read_namespaced_secret,
                       ref["name"], self.namespace).data or {}
            return {k: base64.b64decode(v).decode() for k, v in raw.items()}
        except ApiException as exc:
            if exc.status == 404 and ref.get("optional"):
                return {}
            raise

    def _write_service_account(self) -> None:
        self.sa_dir.mkdir(exist_ok=True)
        shutil.copyfile(self.agent.ca_file, self.sa_dir / "ca.crt")
        (self.sa_dir / "namespace").write_text(self.namespace)
        if self.pod["spec"].get("automountServiceAccountToken") is not False:
            self._write_token()

    def _write_token(self) -> None:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": TOKEN_SECONDS, "audiences": [],
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                            "name": self.pod_name, "uid": self.uid}}}
        token = self.agent.call_body("token request", self.agent.core.create_namespaced_service_account_token,
                                     sa, self.namespace, body)["status"]["token"]
        tmp = self.sa_dir / ".token.tmp"
        tmp.write_text(token)
        tmp.chmod(0o600)
        os.replace(tmp, self.sa_dir / "token")  # atomic, like kubelet's symlink swap

    # -- status -------------------------------------------------------------

    def _container_status(self, state: Obj, running: bool, restarts: int,
                          last_state: Obj) -> list[Obj]:
        containers = self.pod["spec"]["containers"]
        first = {
            "name": containers[0]["name"], "image": containers[0].get("image", ""),
            "imageID": "", "containerID": self._container_id(), "ready": running,
            "started": running, "restartCount": restarts, "state": state,
            "lastState": last_state,
        }
        others = [{
            "name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
            "started": False, "restartCount": 0, "lastState": {},
            "state": {"terminated": {"exitCode": 0, "reason": "NotRunByTestNode",
                                     "message": "only the first container is run"}},
        } for c in containers[1:]]
        return [first, *others]

    def _set_running_pending(self) -> float:
        """Record startTime/IPs (phase stays Pending); returns the start time (epoch)."""
        start = self.pod.get("status", {}).get("startTime") or now()

        def mutate(status: Obj) -> None:
            status.setdefault("startTime", start)
            status.update(hostIP="127.0.0.1", hostIPs=[{"ip": "127.0.0.1"}],
                          podIP="127.0.0.1", podIPs=[{"ip": "127.0.0.1"}])
            _set_condition(status, "PodReadyToStartContainers", "True")
            _set_condition(status, "Initialized", "True")
        self._mutate_status(mutate)
        return _parse_time(start)

    def _update_status(self, container_statuses: list[Obj], phase: str,
                       pod_reason: str = "", message: str = "") -> None:
        ready = phase == "Running" and bool(container_statuses[0]["ready"])

        def mutate(status: Obj) -> None:
            status["phase"] = phase
            status["containerStatuses"] = container_statuses
            init = self.pod["spec"].get("initContainers") or []
            if init:
                status["initContainerStatuses"] = [{
                    "name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True,
                    "restartCount": 0, "state": {"terminated": {
                        "exitCode": 0, "reason": "NotRunByTestNode"}}} for c in init]
            if pod_reason:
                status["reason"], status["message"] = pod_reason, message
            why = "" if ready else ("PodCompleted" if phase in ("Succeeded", "Failed")
                                    else "ContainersNotReady")
            for cond in ("ContainersReady", "Ready"):
                _set_condition(status, cond, "True" if ready else "False", why)
            if phase in ("Succeeded", "Failed"):
                _set_condition(status, "PodReadyToStartContainers", "False")
        self._mutate_status(mutate)

    def _finish(self, terminated: Obj, restarts: int, last_state: Obj,
                pod_reason: str = "") -> None:
        code = terminated["exitCode"]
        phase = "Succeeded" if code == 0 and not pod_reason else "Failed"
        message = ("Pod was active on the node longer than the specified deadline"
                   if pod_reason == "DeadlineExceeded" else "")
        statuses = self._container_status({"terminated": terminated}, False, restarts, last_state)
        self._update_status(statuses, phase, pod_reason, message)

    def _mutate_status(self, mutate: Callable[[Obj], None]) -> None:
        """Read-modify-write the pod's status subresource until it is written.

        Transient API failures are retried by :meth:`NodeAgent.call`; conflicts
        (others write the pod too) re-read and retry.  Only the pod going away
        (:class:`PodGone`) or the agent stopping ends this without a write.
        """
        core, call = self.agent.core, self.agent.call
        conflicts = 0

        while True:
            try:
                pod = self.agent.call_body("read pod", core.read_namespaced_pod, self.pod_name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    raise PodGone() from exc
                raise
            if pod["metadata"]["uid"] != self.uid:
                raise PodGone()
            status = pod.setdefault("status", {})
            mutate(status)
            try:
                call("write pod status", core.replace_namespaced_pod_status,
                     self.pod_name, self.namespace, pod, _preload_content=False)
                self.pod = pod
                return
            except ApiException as exc:
                if exc.status == 404:
                    raise PodGone() from exc
                if exc.status != 409:
                    raise
            conflicts += 1
            if self.agent.stopping.wait(min(0.01 * conflicts, 0.5)):
                raise AgentStopping("write pod status")

    def _delete_now(self) -> None:
        """Final step of graceful deletion, as a kubelet does: delete with grace 0."""
        with self._lock:
            if self._delete_issued:
                return
            self._delete_issued = True
        self.agent.force_delete(self.namespace, self.pod_name, self.uid)


def _set_condition(status: Obj, ctype: str, value: str, reason: str = "") -> None:
    conditions = status.setdefault("conditions", [])
    for cond in conditions:
        if cond["type"] == ctype:
            if cond.get("status") != value:
                cond["lastTransitionTime"] = now()
            cond["status"] = value
            if reason:
                cond["reason"] = reason
            else:
                cond.pop("reason", None)
            return
    cond = {"type": ctype, "status": value, "lastProbeTime": None, "lastTransitionTime": now()}
    if reason:
        cond["reason"] = reason
    conditions.append(cond)


class NodeAgent:
    """A fake node: registers itself, binds and runs pods. ``start()`` / ``stop()``.

    *kubeconfig* must be privileged enough to register nodes, bind pods, write
    pod status, create service account tokens and read config maps/secrets (the
    control plane's admin kubeconfig is used in tests).
    """

    def __init__(self, kubeconfig: Path | str, node_name: str = "kubetune-test-node",
                 workdir: Path | None = None, cpu: str = "8", memory: str = "16Gi",
                 max_pods: int = 110, heartbeat_seconds: float = 10.0) -> None:
        self.node_name = node_name
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)
        conf = self.api.configuration
        url = urllib.parse.urlsplit(conf.host)
        self.api_host = url.hostname or "127.0.0.1"
        self.api_port = url.port or 443
        self.ca_file = Path(conf.ssl_ca_cert)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kubetune-node-"))
        self.shim_dir = self.workdir / "bin"
        self.capacity = {"cpu": cpu, "memory": memory, "pods": str(max_pods)}
        self.heartbeat_seconds = heartbeat_seconds
        self.errors: list[str] = []
        self.faults: dict[str, int] = {}
        """Retried API calls by what was attempted (connection refused, 5xx, 429, timeouts)."""
        self.relists = 0
        """Times the pod list was read again after a watch ended or broke."""
        self.launch_log = self.workdir / "launches.jsonl"
        self._launches: list[Launch] = []
        self._workers: dict[str, PodWorker] = {}
        self._force_deleted: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: set[watch.Watch] = set()  # open watches, stopped by stop()

    # -- public -------------------------------------------------------------

    @property
    def stopping(self) -> threading.Event:
        """Set once :meth:`stop` was called."""
        return self._stop

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` -- an API call -- retried with backoff while it fails transiently.

        Other errors are raised; :class:`AgentStopping` once the agent stops.
        """
        delay, factor, cap = BACKOFF
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # classified right below
                if not is_transient(exc):
                    raise
                self._fault(what)
            if self._stop.wait(delay):
                raise AgentStopping(what)
            delay = min(delay * factor, cap)

    def call_body(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn``'s response body as JSON, read inside :meth:`call`: a body cut by a restarting API server
        (``IncompleteRead``) is retried like a refused connection."""
        def read(**call_kwargs: Any) -> bytes:  # call() adds the request timeout
            return bytes(fn(*args, _preload_content=False, **kwargs, **call_kwargs).data)

        return json.loads(self.call(what, read))

    def _fault(self, what: str) -> None:
        with self._lock:
            self.faults[what] = self.faults.get(what, 0) + 1

    def record_launch(self, pod: Obj, pid: int) -> None:
        """Append one started process to the launch log."""
        meta = pod["metadata"]
        job_uid = next((o.get("uid", "") for o in meta.get("ownerReferences") or []
                        if o.get("kind") == "Job" and o.get("controller")), "")
        entry = Launch(namespace=meta["namespace"], pod=meta["name"], pod_uid=meta["uid"],
                       job_uid=job_uid, trial=(meta.get("labels") or {}).get("kubetune.io/trial", ""),
                       pid=pid, time=time.time())
        with self._lock:
            self._launches.append(entry)
            with open(self.launch_log, "a") as f:
                f.write(json.dumps(asdict(entry)) + "\n")

    def launches(self, namespace: str | None = None) -> list[Launch]:
        """Every process started so far (in *namespace* if given), oldest first."""
        with self._lock:
            return [x for x in self._launches if namespace is None or x.namespace == namespace]

    def start(self) -> NodeAgent:
        """Register the node and start the watch and heartbeat threads."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._make_shims()
        self._register_node()
        for target, name in ((self._watch_loop, "watch"), (self._heartbeat_loop, "heartbeat")):
            t = threading.Thread(target=target, name=f"node-agent-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Kill all pod processes and stop the threads (the Node object is left)."""
        self._stop.set()
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.kill_now()
        for w in workers:
            w.join(timeout=10)
        deadline = time.monotonic() + 15
        for t in self._threads:
            while t.is_alive() and time.monotonic() < deadline:
                self._close_watches()  # again: a watch may have opened meanwhile
                t.join(timeout=0.1)
        self.api.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_watches(self) -> None:
        """Stop open watches, closing their responses to unblock pending reads."""
        with self._lock:
            watches = list(self._watches)
        for w in watches:
            w.stop()
            resp = getattr(w, "_resp", None)
            if resp is not None:
                with contextlib.suppress(Exception):
                    resp.shutdown() if hasattr(resp, "shutdown") else resp.close()

    def __enter__(self) -> NodeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def worker(self, namespace: str, name: str) -> PodWorker | None:
        """The newest worker that ran pod *namespace/name*, if any."""
        with self._lock:
            found = [w for w in self._workers.values()
                     if w.namespace == namespace and w.pod_name == name]
        return found[-1] if found else None

    def claim_dir(self, namespace: str, claim: str) -> Path:
        """The host directory standing in for PersistentVolumeClaim ``claim`` (shared by all pods mounting it)."""
        path = self.workdir / "pvc" / namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_path(self, namespace: str, name: str) -> Path | None:
        """File with the pod's combined stdout/stderr (None if it never ran here)."""
        w = self.worker(namespace, name)
        return w.log_path if w else None

    def error(self, message: str) -> None:
        """Record an internal error (tests may assert ``agent.errors == []``)."""
        self.errors.append(message)
        print(f"[node-agent] {message}", file=sys.stderr, flush=True)

    def force_delete(self, namespace: str, name: str, uid: str) -> None:
        """Delete a pod with grace period 0 (preconditioned on its uid)."""
        try:
            self.call("delete pod", self.core.delete_namespaced_pod,
                      name, namespace, grace_period_seconds=0,
                      body=client.V1DeleteOptions(grace_period_seconds=0,
                                                  preconditions=client.V1Preconditions(uid=uid)),
                      _preload_content=False)
        except AgentStopping:
            pass
        except ApiException as exc:
            if exc.status not in (404, 409):
                self.error(f"deleting {namespace}/{name}: {exc.status} {exc.reason}")

    # -- node registration and heartbeat -----------------------------------

    def _make_shims(self) -> None:
        self.shim_dir.mkdir(parents=True, exist_ok=True)
        for name in ("python", "python3"):
            shim = self.shim_dir / name
            shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
            shim.chmod(0o755)

    def _node_status(self) -> Obj:
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": r,
             "lastHeartbeatTime": now(), "lastTransitionTime": now()}
            for t, r in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                         ("PIDPressure", "SufficientPID"))
        ]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "kubetune test node agent is ready",
                           "lastHeartbeatTime": now(), "lastTransitionTime": now()})
        return {
            "capacity": self.capacity, "allocatable": self.capacity, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node_name}],
            "nodeInfo": {
                "machineID": "kubetune", "systemUUID": "kubetune", "bootID": "kubetune",
                "kernelVersion": platform.release(), "osImage": "kubetune test node",
                "containerRuntimeVersion": "kubetune-node://0", "kubeletVersion": "v1.35.4",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        }

    def _register_node(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": self.node_name,
            "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "kubetune.io/test-node": "true"}}}
        try:
            self.call("register node", self.core.create_node, body, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise
        # Admission (TaintNodesByCondition) adds a not-ready taint at creation; a
        # kubelet's node-lifecycle controller would remove it. We are Ready now.
        self.call("register node", self.core.patch_node, self.node_name,
                  {"spec": {"taints": None}}, _preload_content=False)
        self.call("register node", self.core.patch_node_status, self.node_name,
                  {"status": self._node_status()}, _preload_content=False)
        self._renew_lease()

    def _renew_lease(self) -> None:
        ns, name = "kube-node-lease", self.node_name
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()}
        try:
            self.call("heartbeat", self.coordination.patch_namespaced_lease, name, ns,
                      {"spec": spec}, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise
            node = self.call("heartbeat", self.core.read_node, name)
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "ownerReferences": [{
                        "apiVersion": "v1", "kind": "Node", "name": name,
                        "uid": node.metadata.uid}]},
                    "spec": spec}
            self.call("heartbeat", self.coordination.create_namespaced_lease, ns, body,
                      _preload_content=False)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._renew_lease()
                conditions = [{"type": c["type"], "lastHeartbeatTime": now()}
                              for c in self._node_status()["conditions"]]
                self.call("heartbeat", self.core.patch_node_status, self.node_name,
                          {"status": {"conditions": conditions}}, _preload_content=False)
            except AgentStopping:
                return
            except Exception as exc:
                if not self._stop.is_set():
                    self.error(f"heartbeat: {exc!r}")

    # -- pods -----------------------------------------------------------------

    def _watch_loop(self) -> None:
        """List + watch all pods forever; relist after 410 Gone, timeouts and broken watches."""
        delay, factor, cap = BACKOFF
        while not self._stop.is_set():
            try:
                self.sync_once()
                delay = BACKOFF[0]
                continue
            except AgentStopping:
                return
            except Exception as exc:
                if self._stop.is_set():
                    return
                if is_transient(exc):
                    self._fault("watch pods")
                else:
                    self.error(f"watch: {exc!r}")
            self._stop.wait(delay)
            delay = min(delay * factor, cap)

    def sync_once(self, resource_version: str | None = None, timeout: int = 30,
                  new_watch: Callable[[], watch.Watch] = watch.Watch) -> str:
        """One list (skipped if *resource_version* is given) and one watch from there.

        Returns ``"expired"`` if the watch hit 410 Gone (the caller relists),
        else ``"timeout"`` / ``"stopped"``.  Other API errors are raised (the
        caller retries transient ones).  The list also stops the processes of
        pods that disappeared while no watch was open (their DELETED event was
        missed).  *new_watch* lets tests inject a watch that fails.
        """
        rv = resource_version
        if rv is None:
            listing = self.call_body("list pods", self.core.list_pod_for_all_namespaces)
            self.relists += 1
            present = {pod["metadata"]["uid"] for pod in listing["items"]}
            with self._lock:
                vanished = [w for uid, w in self._workers.items()
                            if uid not in present and w.is_alive()]
            for w in vanished:
                w.kill_now()
            for pod in listing["items"]:
                self._handle(pod, deleted=False)
            rv = listing["metadata"]["resourceVersion"]
        pods_watch = new_watch()
        with self._lock:
            self._watches.add(pods_watch)
        try:
            for event in pods_watch.stream(
                    self.core.list_pod_for_all_namespaces, resource_version=rv,
                    timeout_seconds=timeout, allow_watch_bookmarks=True,
                    _request_timeout=(REQUEST_TIMEOUT[0], timeout + REQUEST_TIMEOUT[1])):
                if self._stop.is_set():
                    return "stopped"
                kind, pod = event["type"], event["raw_object"]
                if kind == "ERROR":
                    if pod.get("code") == 410:
                        return "expired"
                    raise ApiException(status=pod.get("code"), reason=f"watch error event: {pod}")
                if kind != "BOOKMARK":
                    self._handle(pod, deleted=kind == "DELETED")
        except ApiException as exc:
            if exc.status == 410:
                return "expired"
            raise
        finally:
            with self._lock:
                self._watches.discard(pods_watch)
        return "stopped" if self._stop.is_set() else "timeout"

    def _handle(self, pod: Obj, deleted: bool) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        uid, node = meta["uid"], spec.get("nodeName")
        with self._lock:
            worker = self._workers.get(uid)
        if deleted:
            if worker is not None:
                worker.kill_now()
            return
        if not node:
            if not meta.get("deletionTimestamp"):
                self._bind(meta["namespace"], meta["name"])
            return
        if node != self.node_name:
            return
        if meta.get("deletionTimestamp"):
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = spec.get("terminationGracePeriodSeconds", 30)
            if worker is not None:
                worker.request_deletion(float(grace))
            elif uid not in self._force_deleted:
                self._force_deleted.add(uid)
                self.force_delete(meta["namespace"], meta["name"], uid)
            return
        if worker is None and pod.get("status", {}).get("phase") in (None, "Pending"):
            worker = PodWorker(self, pod)
            with self._lock:
                self._workers[uid] = worker
            worker.start()

    def _bind(self, namespace: str, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name}}
        try:
            self.call("bind pod", self.core.create_namespaced_pod_binding, name, namespace, body,
                      _preload_content=False)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or already bound
                self.error(f"binding {namespace}/{name}: {exc.status} {exc.reason}")
