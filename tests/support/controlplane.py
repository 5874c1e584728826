"""A real, local Kubernetes control plane for kubetune's integration tests.

Two parts:

* :func:`ensure_binaries` returns a directory holding ``kube-apiserver``,
  ``kube-controller-manager``, ``kubectl``, ``etcd`` and ``helm``.  They come
  from ``$KUBETUNE_K8S_BIN_DIR`` if set, else from a per-version cache which is
  filled on first use by building the upstream Go modules (fetched through the
  Go module proxy) with the local Go toolchain.
* :class:`ControlPlane` starts etcd, kube-apiserver and kube-controller-manager
  on loopback ports with freshly generated certificates, and tears them down
  on exit.

There is no kubelet: pods are run by ``tests/support/node_agent.py``.

CLI::

    python tests/support/controlplane.py build   # build or reuse, print bin dir
    python tests/support/controlplane.py up      # start a cluster until Ctrl-C
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import yaml

# --------------------------------------------------------------------------
# Versions and build recipe
# --------------------------------------------------------------------------

K8S_VERSION = "v1.35.4"
#: Published version of the k8s.io/* staging modules matching K8S_VERSION.
K8S_STAGING_VERSION = "v0.35.4"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.22.0"
#: Bump when the build recipe (flags, wrapper modules) changes: new cache key.
RECIPE_REVISION = "2"

BINARIES = ("kube-apiserver", "kube-controller-manager", "kubectl", "etcd", "helm")
BIN_DIR_ENV = "KUBETUNE_K8S_BIN_DIR"


_PR_SET_PDEATHSIG = 1
_PRCTL: Callable[..., int] | None
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork
except (OSError, AttributeError):  # not Linux/glibc: children may outlive a killed parent
    _PRCTL = None


def die_with_parent() -> None:
    """``preexec_fn``: Linux SIGKILLs the child when the thread that spawned it dies.

    So a killed test run (SIGTERM/SIGKILL to pytest) leaks no processes.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _log(msg: str) -> None:
    print(f"[controlplane] {msg}", file=sys.stderr, flush=True)


def _go_version() -> str | None:
    """The local Go toolchain version (e.g. ``go1.26.8``), or None without Go."""
    go = shutil.which("go")
    if go is None:
        return None
    out = subprocess.run([go, "env", "GOVERSION"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def cache_key(go_version: str) -> str:
    """The cache directory name: encodes every version that affects the binaries."""
    return (
        f"k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}_helm-{HELM_VERSION}"
        f"_{go_version}_r{RECIPE_REVISION}"
    )


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubetune" / "controlplane"


def _missing(bin_dir: Path) -> list[str]:
    return [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]


def ensure_binaries() -> Path:
    """Return a directory with all of :data:`BINARIES`, building them if needed.

    Raises ``RuntimeError`` with an explanation when they cannot be had.
    """
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        bin_dir = Path(override).expanduser().resolve()
        missing = _missing(bin_dir)
        if missing:
            raise RuntimeError(
                f"{BIN_DIR_ENV}={override} lacks executable(s): {', '.join(missing)} "
                f"(needed: {', '.join(BINARIES)})"
            )
        return bin_dir

    root = cache_root()
    go_version = _go_version()
    if go_version is None:  # no Go: any complete cache entry of these versions will do
        for cached in sorted(root.glob(cache_key("go*") + "/bin"), reverse=True):
            if not _missing(cached):
                return cached
        raise RuntimeError(
            f"Go is not installed and {root} holds no prebuilt binaries: install Go (>= 1.25) "
            f"or set {BIN_DIR_ENV} to a directory containing: {', '.join(BINARIES)}")
    root.mkdir(parents=True, exist_ok=True)
    final = root / cache_key(go_version)
    bin_dir = final / "bin"
    if not _missing(bin_dir):
        return bin_dir
    # Serialise concurrent builders (parallel pytest sessions, CI + developer).
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _missing(bin_dir):
            return bin_dir
        for stale in [final, *root.glob(".tmp-*")]:  # left by killed builds; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
        try:
            _build_all(staging / "bin")
            os.rename(staging, final)  # atomic: the cache is either whole or absent
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    missing = _missing(bin_dir)
    if missing:
        raise RuntimeError(f"build finished but {', '.join(missing)} missing in {bin_dir}")
    return bin_dir


# --------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    flags = env.get("GOFLAGS", "").split()
    flags = [f for f in flags if not f.startswith("-mod=")] + ["-mod=mod"]
    env.update(
        GOFLAGS=" ".join(flags),
        CGO_ENABLED="0",
        GOTOOLCHAIN="local",  # never fetch another toolchain behind our back
        GOWORK="off",
    )
    return env


def _run_go(args: Sequence[str], cwd: Path, what: str, log: Path) -> None:
    """Run a go command, logging to *log*, with a progress heartbeat on stderr."""
    start = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(60):
            _log(f"  … still {what} ({(time.monotonic() - start) / 60:.0f} min)")

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        with open(log, "a") as out:
            out.write(f"\n$ go {' '.join(args)}\n")
            out.flush()
            proc = subprocess.run(
                ["go", *args], cwd=cwd, env=_go_env(), stdout=out, stderr=subprocess.STDOUT
            )
    finally:
        done.set()
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); log {log}:\n{tail}")
    _log(f"  {what}: done in {time.monotonic() - start:.0f} s")


def _write_module(d: Path, name: str, requires: dict[str, str], replaces: dict[str, str]) -> None:
    d.mkdir(parents=True)
    lines = [f"module kubetune.test/{name}", "", "go 1.25", "", "require ("]
    lines += [f"\t{mod} {ver}" for mod, ver in requires.items()]
    lines.append(")")
    if replaces:
        lines += ["", "replace ("]
        lines += [f"\t{mod} => {mod} {ver}" for mod, ver in sorted(replaces.items())]
        lines.append(")")
    (d / "go.mod").write_text("\n".join(lines) + "\n")


def _staging_modules(work: Path) -> list[str]:
    """The k8s.io/* modules k8s.io/kubernetes replaces with ./staging/... in its go.mod."""
    probe = work / "probe"
    probe.mkdir()
    (probe / "go.mod").write_text("module kubetune.test/probe\n\ngo 1.25\n")
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"],
        cwd=probe, env=_go_env(), capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cannot fetch k8s.io/kubernetes@{K8S_VERSION}: {proc.stderr}")
    gomod = Path(json.loads(proc.stdout)["GoMod"]).read_text()
    mods = re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s*=>\s*\./staging/", gomod, re.M)
    if not mods:
        raise RuntimeError("found no staging replaces in k8s.io/kubernetes go.mod")
    return sorted(set(mods))


def _version_ldflags(pkgs: Sequence[str], values: dict[str, str]) -> list[str]:
    return [f"-X {pkg}.{key}={val}" for pkg in pkgs for key, val in values.items()]


def _build_kubernetes(work: Path, out: Path, log: Path) -> None:
    staging = _staging_modules(work)
    mod = work / "k8s"
    _write_module(
        mod, "k8s", {"k8s.io/kubernetes": K8S_VERSION},
        {m: K8S_STAGING_VERSION for m in staging},
    )
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    # Same variables hack/lib/version.sh sets: kubectl, the apiserver's /version
    # (which helm's kubeVersion checks read) and compatibility versions use them.
    ldflags = ["-s", "-w"] + _version_ldflags(
        ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"],
        {
            "gitVersion": K8S_VERSION, "gitMajor": major, "gitMinor": minor,
            "gitTreeState": "clean", "gitCommit": "0000000000000000000000000000000000000000",
            "buildDate": "1970-01-01T00:00:00Z",
        },
    )
    _log(f"building kube-apiserver, kube-controller-manager, kubectl {K8S_VERSION} "
         "(first time only, ~8-15 min on 2 cores)…")
    _run_go(
        ["build", "-trimpath", "-ldflags", " ".join(ldflags), "-o", str(out) + "/",
         "k8s.io/kubernetes/cmd/kube-apiserver",
         "k8s.io/kubernetes/cmd/kube-controller-manager",
         "k8s.io/kubernetes/cmd/kubectl"],
        mod, "building kubernetes binaries", log,
    )


def _build_etcd(work: Path, out: Path, log: Path) -> None:
    mod = work / "etcd"
    _write_module(mod, "etcd", {"go.etcd.io/etcd/server/v3": ETCD_VERSION}, {})
    _log(f"building etcd {ETCD_VERSION} (first time only, ~1-2 min)…")
    _run_go(
        ["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"),
         "go.etcd.io/etcd/server/v3"],
        mod, "building etcd", log,
    )


def _build_helm(work: Path, out: Path, log: Path) -> None:
    mod = work / "helm"
    _write_module(mod, "helm", {"helm.sh/helm/v3": HELM_VERSION}, {})
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    ldflags = [
        "-s", "-w",
        f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    ]
    # Upstream sets these to its client-go version; we use the tested cluster's
    # version so `helm template`/`helm lint` (no cluster) assume the same k8s.
    for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        ldflags += [f"-X {pkg}.k8sVersionMajor={major}", f"-X {pkg}.k8sVersionMinor={minor}"]
    _log(f"building helm {HELM_VERSION} (first time only, ~1-3 min)…")
    _run_go(
        ["build", "-trimpath", "-ldflags", " ".join(ldflags), "-o", str(out / "helm"),
         "helm.sh/helm/v3/cmd/helm"],
        mod, "building helm", log,
    )


def _build_all(out: Path) -> None:
    out.mkdir(parents=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kubetune-gobuild-") as tmp:
        work = Path(tmp)
        log = out.parent / "build.log"
        _log(f"building control-plane binaries into the cache (log: {log})")
        _build_etcd(work, out, log)
        _build_helm(work, out, log)
        _build_kubernetes(work, out, log)
    _log(f"all binaries built in {(time.monotonic() - start) / 60:.1f} min")


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------

#: Issuer and audience of service account tokens (like a real cluster's default).
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service's ClusterIP (first of SERVICE_CIDR)
#: kube-controller-manager controllers we run.  Not node-lifecycle / taint-eviction:
#: the test node is fake, its pods must not be evicted.
CONTROLLERS = (
    "job-controller", "cronjob-controller", "garbage-collector-controller",
    "ttl-after-finished-controller", "serviceaccount-controller",
    "serviceaccount-token-controller", "namespace-controller",
    "root-ca-certificate-publisher-controller", "clusterrole-aggregation-controller",
    "validatingadmissionpolicy-status-controller", "deployment-controller",
    "replicaset-controller",
)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Pki:
    """A throw-away CA plus leaf certificates, made with the ``openssl`` CLI (EC P-256)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        if shutil.which("openssl") is None:
            raise RuntimeError("the `openssl` CLI is needed for the test cluster's certificates")
        self.ca_cert = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"
        self._openssl(
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", self.ca_key, "-out", self.ca_cert, "-days", "3650",
            "-subj", "/CN=kubetune-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )

    def _openssl(self, *args: object) -> None:
        proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")

    def key_pair(self, name: str) -> tuple[Path, Path]:
        """An EC private key and its public key (for service account token signing)."""
        key, pub = self.dir / f"{name}.key", self.dir / f"{name}.pub"
        self._openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        self._openssl("ec", "-in", key, "-pubout", "-out", pub)
        return key, pub

    def leaf(self, name: str, cn: str, orgs: Sequence[str] = (), *, server: bool = False,
             sans: Sequence[str] = ()) -> tuple[Path, Path]:
        """Issue a client (or server) certificate; returns (cert, key)."""
        cert, key, ext = (self.dir / f"{name}.{suffix}" for suffix in ("crt", "key", "ext"))
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={'serverAuth' if server else 'clientAuth'}",
        ]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        subj = "".join(f"/O={o}" for o in orgs) + f"/CN={cn}"
        csr = self.dir / f"{name}.csr"
        self._openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", csr, "-subj", subj,
        )
        self._openssl(
            "x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
            "-CAcreateserial", "-out", cert, "-days", "365", "-extfile", ext,
        )
        return cert, key


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, *,
                     cert: Path | None = None, key: Path | None = None,
                     token: str | None = None, namespace: str = "default") -> Path:
    """Write a one-context kubeconfig using a client certificate or a bearer token."""
    creds: dict[str, str] = {}
    if cert is not None and key is not None:
        creds = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        creds["token"] = token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubetune-test",
                      "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": user, "context": {"cluster": "kubetune-test", "user": user,
                                                "namespace": namespace}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, as a context manager.

    Attributes (valid inside ``with``): ``server`` (https URL), ``ca_file``,
    ``kubeconfig`` (admin, ``system:masters``), ``bin_dir``, ``logs_dir``,
    ``sa_issuer``.
    """

    def __init__(self, bin_dir: Path | None = None, workdir: Path | None = None,
                 keep_workdir: bool | None = None) -> None:
        self.bin_dir = bin_dir or ensure_binaries()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kubetune-cp-"))
        if keep_workdir is None:
            keep_workdir = bool(os.environ.get("KUBETUNE_KEEP_CONTROLPLANE"))
        self.keep_workdir = keep_workdir
        self.logs_dir = self.workdir / "logs"
        self.sa_issuer = SA_ISSUER
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._args: dict[str, list[str]] = {}  # each component's arguments, for restart()
        self._log_files: list[IO[bytes]] = []
        self.port = 0
        self.server = ""
        self.ca_file = Path()
        self.kubeconfig = Path()
        self._admin_cert = self._admin_key = Path()
        self._pki: _Pki | None = None
        self._n_kubeconfigs = 0
        self.startup_seconds = 0.0

    # -- lifecycle -------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start all components and wait until the cluster is usable."""
        t0 = time.monotonic()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        pki = self._pki = _Pki(self.workdir / "pki")
        self.ca_file = pki.ca_cert
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        serving = pki.leaf(
            "apiserver", "kube-apiserver", server=True,
            sans=["IP:127.0.0.1", f"IP:{SERVICE_IP}", "DNS:localhost", "DNS:kubernetes",
                  "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                  "DNS:kubernetes.default.svc.cluster.local"],
        )
        self._admin_cert, self._admin_key = pki.leaf("admin", "kubetune-admin", ["system:masters"])
        kcm_cert, kcm_key = pki.leaf("kcm", "system:kube-controller-manager")
        sa_key, sa_pub = pki.key_pair("sa")
        self.kubeconfig = write_kubeconfig(
            self.workdir / "admin.kubeconfig", self.server, self.ca_file, "admin",
            cert=self._admin_cert, key=self._admin_key)
        kcm_kubeconfig = write_kubeconfig(
            self.workdir / "kcm.kubeconfig", self.server, self.ca_file,
            "system:kube-controller-manager", cert=kcm_cert, key=kcm_key)

        etcd_port, etcd_peer = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd = self._spawn("etcd", [
            "--name=default", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._wait("etcd", etcd, lambda: self._http_ok(f"{etcd_url}/health"), 30)

        apiserver = self._spawn("kube-apiserver", [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--tls-cert-file={serving[0]}", f"--tls-private-key-file={serving[1]}",
            f"--client-ca-file={self.ca_file}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Defaults include ServiceAccount, ValidatingAdmissionPolicy, webhooks.
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,"
            "ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,MutatingAdmissionWebhook",
            "--allow-privileged=true", "--profiling=false", "--v=1",
        ])
        self._wait("kube-apiserver", apiserver, lambda: self._api_ok("/readyz"), 90)

        kcm = self._spawn("kube-controller-manager", [
            f"--kubeconfig={kcm_kubeconfig}",
            "--controllers=" + ",".join(CONTROLLERS),
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={self.ca_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cert-dir={self.workdir / 'kcm-certs'}", "--profiling=false", "--v=1",
        ])
        self._wait("kube-controller-manager", kcm,
                   lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"), 90)
        self.startup_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Stop all components (newest first) and remove the work directory."""
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self._procs.clear()
        for f in self._log_files:
            f.close()
        self._log_files.clear()
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------

    def _spawn(self, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs_dir / f"{name}.log", "ab")
        self._log_files.append(log)
        proc = subprocess.Popen(
            [str(self.bin_dir / name), *args], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.workdir,
            preexec_fn=die_with_parent,
        )
        self._procs.append((name, proc))
        self._args[name] = list(args)
        return proc

    # -- faults ------------------------------------------------------------

    def process(self, name: str) -> subprocess.Popen[bytes]:
        """The running process of component *name* (``etcd``, ``kube-apiserver``, ...)."""
        return next(proc for n, proc in self._procs if n == name)

    def restart(self, name: str, down_seconds: float = 3.0, sig: int = signal.SIGKILL) -> float:
        """Stop component *name* with *sig*, keep it down *down_seconds*, start it again.

        It comes back with the same arguments: the same port, certificates and
        etcd data directory, so clients reconnect to the same cluster.  Returns
        once it is ready again (etcd healthy, the API server's ``/readyz`` ok);
        the result is the time it was unavailable, in seconds.
        """
        old = self.process(name)
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(old.pid, sig)
        try:
            old.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(old.pid, signal.SIGKILL)
            old.wait()
        index = next(i for i, (_n, p) in enumerate(self._procs) if p is old)
        del self._procs[index]
        time.sleep(down_seconds)
        proc = self._spawn(name, self._args[name])
        self._procs.insert(index, self._procs.pop())  # keep the stop order: newest component first
        if name == "etcd":
            url = next(a.split("=", 1)[1] for a in self._args[name]
                       if a.startswith("--listen-client-urls="))
            self._wait(name, proc, lambda: self._http_ok(f"{url}/health"), 60)
        elif name == "kube-apiserver":
            self._wait(name, proc, lambda: self._api_ok("/readyz"), 120)
        else:
            self._wait(name, proc, lambda: True, 10)
        return time.monotonic() - t0

    def _wait(self, name: str, proc: subprocess.Popen[bytes], ready: Callable[[], bool],
              timeout: float) -> None:
        deadline = time.monotonic() + timeout
        log = self.logs_dir / f"{name}.log"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; log tail ({log}):\n{_tail(log)}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"{name} not ready after {timeout:.0f} s; log tail ({log}):\n{_tail(log)}")

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self._admin_cert), str(self._admin_key))
        return ctx

    def request(self, method: str, path: str, body: object | None = None) -> object:
        """Call the API as admin; returns the decoded JSON response."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.server + path, data=data, method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=30, context=self._ssl_context()) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.startswith(b"{") else raw.decode()

    def _api_ok(self, path: str) -> bool:
        try:
            self.request("GET", path)
            return True
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG (admin) and the binaries first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(self, *args: str, kubeconfig: Path | None = None,
                check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (admin unless *kubeconfig* given)."""
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            check=check, capture_output=True, text=True, input=input)

    def _next_kubeconfig_path(self, stem: str) -> Path:
        self._n_kubeconfigs += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", stem)
        return self.workdir / f"{self._n_kubeconfigs:03d}-{safe}.kubeconfig"

    def make_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating as *user* in *groups* via a client certificate."""
        assert self._pki is not None, "control plane not started"
        path = self._next_kubeconfig_path(user)
        cert, key = self._pki.leaf(path.stem, user, list(groups))
        return write_kubeconfig(path, self.server, self.ca_file, user, cert=cert, key=key)

    def token_request(self, namespace: str, service_account: str, *,
                      expiration_seconds: int = 3600, audiences: Sequence[str] = (),
                      bound_pod: tuple[str, str] | None = None) -> str:
        """A bound token for a ServiceAccount via the TokenRequest API.

        ``bound_pod=(name, uid)`` binds it to a pod, so the token's extra carries
        ``authentication.kubernetes.io/pod-name`` (as for a kubelet-projected token).
        """
        spec: dict[str, object] = {"expirationSeconds": expiration_seconds,
                                   "audiences": list(audiences)}
        if bound_pod is not None:
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1",
                                      "name": bound_pod[0], "uid": bound_pod[1]}
        resp = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        assert isinstance(resp, dict)
        return str(resp["status"]["token"])

    def service_account_kubeconfig(self, namespace: str, service_account: str,
                                   expiration_seconds: int = 3600) -> Path:
        """A kubeconfig authenticating as ``system:serviceaccount:<ns>:<name>``."""
        token = self.token_request(namespace, service_account,
                                   expiration_seconds=expiration_seconds)
        path = self._next_kubeconfig_path(f"sa-{namespace}-{service_account}")
        return write_kubeconfig(path, self.server, self.ca_file,
                                f"system:serviceaccount:{namespace}:{service_account}",
                                token=token, namespace=namespace)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build (or reuse) the binaries and print their directory")
    up = sub.add_parser("up", help="start a cluster, print its kubeconfig, run until Ctrl-C")
    up.add_argument("--no-node", action="store_true", help="do not run the test node agent")
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    try:
        bin_dir = ensure_binaries()
    except RuntimeError as exc:
        _log(str(exc))
        return 1
    if args.cmd == "build":
        _log(f"binaries ready in {time.monotonic() - t0:.1f} s")
        print(bin_dir)
        return 0

    with ControlPlane(bin_dir) as cp:
        agent = None
        if not args.no_node:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from node_agent import NodeAgent

            agent = NodeAgent(cp.kubeconfig).start()
        _log(f"control plane up in {cp.startup_seconds:.1f} s; logs in {cp.logs_dir}")
        _log(f"  export KUBECONFIG={cp.kubeconfig} PATH={bin_dir}:$PATH")
        print(cp.kubeconfig, flush=True)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            if agent is not None:
                agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
