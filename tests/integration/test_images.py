"""kubetune's container images, built without a Docker engine and checked, and the operator image run on the real
control plane.

``hack/build-images.sh`` makes a Debian base with mmdebstrap (Debian's packages only), builds operator/Dockerfile
and trial_image/Dockerfile on it with buildah, and writes a CycloneDX SBOM of each image with syft; everything is
cached under ``~/.cache/kubetune/images/`` by a hash of the inputs, so a second run only checks.

The operator image then runs under podman, with the Helm chart's security context (read-only root filesystem with
a tmpfs at /tmp, every capability dropped, no privilege escalation, podman's default seccomp profile as
RuntimeDefault, uid/gid 65532), against the test control plane, and takes an experiment to its end. podman runs it
with runc and cgroupfs: crun from Debian bookworm refuses this machine's hybrid cgroup layout ("cgroups in hybrid
mode not supported"), and podman's default limits (open files 1048576; processes as many as the host allows) are
refused by setrlimit here, so smaller ones are given.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from operator_process import Experiments, wait_for

from kubetune.template import substitute, trial_env

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "hack" / "build-images.sh"
OBJECTIVE = Path(__file__).resolve().parent / "trials" / "objective.py"
SEC_UID = "65532"
SECCOMP_PROFILE = Path("/usr/share/containers/seccomp.json")  # podman's default, what RuntimeDefault means there


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """Build (or find in the cache) both images; the script's KEY=value lines."""
    proc = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, f"hack/build-images.sh failed:\n{proc.stderr[-8000:]}"
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    for key in ("CONTAINERS_STORAGE_CONF", "OPERATOR_IMAGE", "TRIAL_IMAGE", "OPERATOR_SBOM", "TRIAL_SBOM"):
        assert out.get(key), f"no {key} in the script's output:\n{proc.stdout}"
    return out


def _env(images: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_STORAGE_CONF": images["CONTAINERS_STORAGE_CONF"], "BUILDAH_ISOLATION": "chroot"}


def _tool(images: dict[str, str], *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), env=_env(images), capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{shlex.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _config(images: dict[str, str], image: str) -> dict[str, Any]:
    """The image's OCI config (User, Entrypoint, Cmd, Env, ...)."""
    info = json.loads(_tool(images, "buildah", "inspect", "--type", "image", image).stdout)
    config: dict[str, Any] = info["OCIv1"]["config"]
    return config


@pytest.fixture
def container(images: dict[str, str]) -> Iterator[Any]:
    """``container(image)`` makes a buildah working container of *image*; all are removed afterwards."""
    made: list[str] = []

    def make(image: str) -> str:
        name = _tool(images, "buildah", "from", "--pull=never", image).stdout.strip()
        made.append(name)
        return name

    yield make
    for name in made:
        _tool(images, "buildah", "rm", name, check=False)


def _run(images: dict[str, str], ctr: str, *command: str, user: str | None = None, env: dict[str, str] | None = None,
         volumes: tuple[str, ...] = (), check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run *command* in a working container, as the image's user unless *user* is given, without a shell."""
    args = ["buildah", "run"]
    if user is not None:
        args += ["--user", user]
    for k, v in (env or {}).items():
        args += ["--env", f"{k}={v}"]
    for v in volumes:
        args += ["--volume", v]
    return _tool(images, *args, ctr, "--", *command, check=check)


@pytest.mark.parametrize("which", ["OPERATOR_IMAGE", "TRIAL_IMAGE"])
def test_image_runs_as_a_non_root_numeric_user(images: dict[str, str], container: Any, which: str) -> None:
    image = images[which]
    config = _config(images, image)
    # numeric, so the kubelet can verify runAsNonRoot without reading the image's /etc/passwd
    assert config.get("User") == f"{SEC_UID}:{SEC_UID}", config.get("User")
    ctr = container(image)
    ids = _run(images, ctr, "python", "-c", "import os; print(os.getuid(), os.getgid(), os.getcwd())").stdout.split()
    assert ids == [SEC_UID, SEC_UID, "/tmp"]


def test_operator_entrypoint_works_without_a_shell(images: dict[str, str], container: Any) -> None:
    config = _config(images, images["OPERATOR_IMAGE"])
    entrypoint = config.get("Entrypoint")
    assert entrypoint == ["kubetune", "operator"], entrypoint  # exec form: no /bin/sh -c
    ctr = container(images["OPERATOR_IMAGE"])
    # every shell out of this container's filesystem (it is a copy: the image stays as it is)
    shells = _run(images, ctr, "python", "-c",
                  "import os; print(*sorted({os.path.realpath(p) for p in open('/etc/shells').read().split() "
                  "if p.startswith('/') and os.path.exists(p)} | {os.path.realpath('/bin/sh')}))",
                  user="0:0").stdout.split()
    assert "/usr/bin/dash" in shells, shells
    _run(images, ctr, "rm", "-f", "/bin/sh", "/usr/bin/sh", *shells, user="0:0")
    gone = _run(images, ctr, "python", "-c", "import os; print(os.path.lexists('/bin/sh'))").stdout.strip()
    assert gone == "False"
    helped = _run(images, ctr, *entrypoint, "--help")
    assert "--leader-election" in helped.stdout and "--all-namespaces" in helped.stdout, helped.stdout
    # and the operator's whole import graph loads (kopf, kubernetes, the engines), not only the argument parser
    _run(images, ctr, "python", "-c", "import kubetune.k8s.main, kubetune.engine, kopf, kubernetes, scipy, sklearn")


def test_trial_image_imports_the_sdk_and_runs_the_example_trial(images: dict[str, str], container: Any,
                                                                 tmp_path: Path) -> None:
    ctr = container(images["TRIAL_IMAGE"])
    where = _run(images, ctr, "python", "-c", "import kubetune_trial, sklearn; print(kubetune_trial.__file__)")
    assert "/site-packages/kubetune_trial/" in where.stdout, where.stdout  # installed, not left in a source tree
    # examples/digits-svm.yaml's trial command, rendered the way the operator renders it
    spec = yaml.safe_load((ROOT / "examples" / "digits-svm.yaml").read_text())["spec"]
    trial = spec["trialTemplate"]["spec"]["template"]["spec"]["containers"][0]
    params: dict[str, Any] = {"C": 10.0, "gamma": 0.05, "kernel": "rbf", "degree": 3}
    assert {p["name"] for p in spec["parameters"]} == set(params)
    command = [substitute(str(a), params) for a in [*trial.get("command", []), *trial.get("args", [])]]
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # written by the image's user
    env = {**trial_env("digits-svm", 0, params), "KUBETUNE_TERMINATION_LOG": "/out/termination-log"}
    _run(images, ctr, *command, env=env, volumes=(f"{out}:/out",))
    lines = (out / "termination-log").read_text().splitlines()
    metrics = json.loads(lines[-1])
    # an RBF SVM with these settings scores about 0.98 on the digits; a broken install cannot get near it
    assert 0.9 < metrics["accuracy"] <= 1.0, metrics
    assert metrics["fit_seconds"] > 0, metrics


def _purl_names(sbom: dict[str, Any], kind: str) -> set[str]:
    names = set()
    for c in sbom.get("components", []):
        purl = c.get("purl", "")
        if purl.startswith(f"pkg:{kind}/"):
            names.add(c["name"])
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("which", ["OPERATOR", "TRIAL"])
def test_sbom_lists_every_debian_and_python_package(images: dict[str, str], container: Any, which: str) -> None:
    sbom = json.loads(Path(images[f"{which}_SBOM"]).read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    ctr = container(images[f"{which}_IMAGE"])
    # what the image's own package managers say is installed, read inside it
    dpkg = set(_run(images, ctr, "dpkg-query", "-W", "-f", "${db:Status-Status} ${Package}\n").stdout.splitlines())
    installed = {line.split()[1] for line in dpkg if line.startswith("installed ")}
    pip = json.loads(_run(images, ctr, "python", "-c", "import importlib.metadata as m, json; print(json.dumps("
                          "[{'name': d.metadata['Name'], 'version': d.version} for d in m.distributions()]))").stdout)
    assert {"python3.11", "libc6", "ca-certificates"} <= installed
    assert installed == _purl_names(sbom, "deb"), "the SBOM's Debian packages differ from dpkg's"
    assert {_norm(p["name"]) for p in pip} <= {_norm(n) for n in _purl_names(sbom, "pypi")}
    expected = {"kubetune", "kopf", "kubernetes", "numpy", "scipy"} if which == "OPERATOR" else {"scikit-learn"}
    assert expected <= {_norm(p["name"]) for p in pip}
    versions = {_norm(c["name"]): c.get("version") for c in sbom["components"]
                if c.get("purl", "").startswith("pkg:pypi/")}
    for p in pip:
        assert versions[_norm(p["name"])] == p["version"], p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status_field(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _limit(name: str, bound: int) -> int:
    """A limit podman can set here: within this process's own and *bound*."""
    soft, hard = resource.getrlimit(getattr(resource, name))
    return min(x for x in (soft, hard, bound) if x != resource.RLIM_INFINITY)


def test_operator_image_runs_an_experiment_on_the_control_plane(
        images: dict[str, str], control_plane: Any, node_agent: Any, trial_namespace: str,
        kube_api: client.ApiClient, tmp_path: Path) -> None:
    # a kubeconfig with the certificates inline, readable by the operator's uid, mounted read-only
    kubeconfig_dir = tmp_path / "kube"
    kubeconfig_dir.mkdir()
    flat = control_plane.kubectl("config", "view", "--flatten", "--minify").stdout
    (kubeconfig_dir / "config").write_text(flat)
    kubeconfig_dir.chmod(0o755)
    (kubeconfig_dir / "config").chmod(0o644)
    health = _free_port()
    name = f"kubetune-operator-{uuid.uuid4().hex[:8]}"
    podman = ["podman", "--cgroup-manager=cgroupfs", "--runtime=runc", "--events-backend=file"]
    run = [
        *podman, "run", "--detach", "--name", name, "--pull=never", "--network=host",
        # the chart's securityContext and podSecurityContext
        "--read-only", "--read-only-tmpfs=false", "--tmpfs=/tmp:rw,nosuid,nodev,mode=1777",
        "--cap-drop=ALL", "--security-opt=no-new-privileges", f"--security-opt=seccomp={SECCOMP_PROFILE}",
        f"--user={SEC_UID}:{SEC_UID}",
        # podman's defaults (open files 1048576, processes as the host's) are refused here: setrlimit fails
        f"--ulimit=nofile={_limit('RLIMIT_NOFILE', 65536)}", f"--ulimit=nproc={_limit('RLIMIT_NPROC', 32768)}",
        # the chart's env
        "--env=HOME=/tmp", "--env=PYTHONDONTWRITEBYTECODE=1", "--env=PYTHONUNBUFFERED=1",
        f"--env=POD_NAMESPACE={trial_namespace}", "--env=KUBECONFIG=/etc/kubetune/config",
        f"--volume={kubeconfig_dir}:/etc/kubetune:ro",
        images["OPERATOR_IMAGE"],
        # the image's entrypoint with the chart's arguments, scoped to this test's namespace
        f"--namespace={trial_namespace}", f"--liveness=http://0.0.0.0:{health}/healthz", "--metrics-port=0",
    ]
    _tool(images, *run, timeout=900)
    try:
        state = json.loads(_tool(images, *podman, "inspect", name).stdout)[0]
        pid = int(state["State"]["Pid"])
        assert pid > 0 and state["State"]["Running"], state["State"]
        # what the kernel says about the container's first process: the operator itself, confined
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert any(part.endswith(b"/kubetune") for part in cmdline), cmdline
        assert _status_field(pid, "Uid").split()[0] == SEC_UID
        assert _status_field(pid, "CapEff") == "0000000000000000"
        assert _status_field(pid, "CapBnd") == "0000000000000000"
        assert _status_field(pid, "NoNewPrivs") == "1"
        assert _status_field(pid, "Seccomp") == "2"  # a filter is installed
        mounts = Path(f"/proc/{pid}/mounts").read_text().splitlines()
        root = next(m.split() for m in mounts if m.split()[1] == "/")
        assert "ro" in root[3].split(","), root

        def logs() -> str:
            return _tool(images, *podman, "logs", "--tail", "40", name, check=False).stdout + \
                _tool(images, *podman, "logs", "--tail", "40", name, check=False).stderr

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as r:
                    return int(r.status) == 200
            except OSError:
                return False

        wait_for("the operator's /healthz", healthy, timeout=120, on_timeout=logs)
        ex = Experiments(kube_api, trial_namespace)
        ex.create({
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "TuningExperiment",
            "metadata": {"name": "from-image"},
            "spec": {
                "objective": {"metric": "score", "goal": "maximize"},
                "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
                "algorithm": {"name": "sobol", "seed": 1},
                "maxTrials": 3,
                "parallelTrials": 2,
                "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                    "serviceAccountName": "kubetune-trial",
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    # the node agent runs trial commands as local processes
                    "containers": [{"name": "trial", "image": "kubetune-trial:0.1.0",
                                    "command": [sys.executable, str(OBJECTIVE), "--x", "${params.x}"]}],
                }}}},
            },
        })
        done = wait_for("the experiment to finish", lambda: ex.finished("from-image"), timeout=240,
                        on_timeout=logs)
        assert done["status"] == "True" and done["reason"] == "MaxTrialsReached", done
        records = ex.records("from-image")
        assert sorted(records) == [0, 1, 2]
        for rec in records.values():
            assert rec["state"] == "Succeeded"
            assert rec["metrics"]["score"] == pytest.approx(-((rec["params"]["x"] - 0.3) ** 2))
        jobs = ex.jobs("from-image")
        assert jobs and all(j.metadata.labels["app.kubernetes.io/managed-by"] == "kubetune" for j in jobs)
        # the operator that did this is the one in the container: it is still the same, running process
        state = json.loads(_tool(images, *podman, "inspect", name).stdout)[0]
        assert state["State"]["Running"] and int(state["State"]["Pid"]) == pid, state["State"]
        assert state["RestartCount"] == 0
    finally:
        print(f"\n[operator container] last log lines:\n{_tool(images, *podman, 'logs', '--tail', '30', name, check=False).stderr}",
              file=sys.stderr)
        _tool(images, *podman, "rm", "--force", "--time=10", name, check=False)
