"""Run the real operator (`kubetune operator`) as a subprocess against the test control plane, and helpers to
wait on what it does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlplane import die_with_parent
from kubernetes import client

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "tuningexperiments"


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_dir: Path, extra_args: list[str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        """Times :meth:`kill` ended a running operator."""

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> OperatorProcess:
        self.starts += 1
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "wb")
        scoped = any(a in ("-n", "--namespace") or a.startswith("--namespace=") for a in self.extra_args)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubetune", "operator", *([] if scoped else ["--all-namespaces"]),
             "--liveness", "", "--metrics-port", "0", *self.extra_args],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent,  # a killed test run leaks no operator
        )
        log.close()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
            self.kills += 1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120.0, interval: float = 0.25,
             on_timeout: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    extra = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last={last!r}\n{extra}")


def script_experiment(name: str, command: list[str], spec: dict[str, Any], *, grace: int = 2,
                      env: dict[str, str] | None = None) -> dict[str, Any]:
    """A TuningExperiment whose trials run ``command`` (one container, the test node agent runs it as a process
    with the trial service account, no retries): ``spec`` holds everything but the trial template."""
    container: dict[str, Any] = {"name": "trial", "image": "kubetune-trial:test", "command": command}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TuningExperiment",
        "metadata": {"name": name},
        "spec": {**spec, "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
            "serviceAccountName": "kubetune-trial",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": grace,
            "containers": [container],
        }}}}},
    }


def table_cell(table: str, column: str, row: int = 0) -> str:
    """The cell of ``column`` in data row ``row`` of a kubectl-style table, read by the header's position: kubectl
    leaves a missing value blank, so splitting on whitespace would shift the later cells."""
    header, *rows = table.splitlines()
    start = header.index(column)
    end = start + len(column)
    while end < len(header) and header[end] == " ":
        end += 1
    return rows[row][start:end if end < len(header) else None].strip()


class Experiments:
    """Thin helpers over the TuningExperiment API for tests."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def get(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec})

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        status = self.get(name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)

    def finished(self, name: str) -> dict[str, Any] | None:
        c = self.condition(name, "Succeeded")
        return c if c and c["status"] in ("True", "False") else None

    def records(self, name: str) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        cms = self.core.list_namespaced_config_map(
            self.namespace, label_selector=f"kubetune.io/experiment={name},kubetune.io/results=true")
        for cm in cms.items:
            for value in (cm.data or {}).values():
                rec = json.loads(value)
                out[rec["number"]] = rec
        return out

    def jobs(self, name: str) -> list[Any]:
        return list(self.batch.list_namespaced_job(
            self.namespace, label_selector=f"kubetune.io/experiment={name}").items)

    def pods(self, name: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(
            self.namespace, label_selector=f"kubetune.io/experiment={name}").items)

    def events(self, name: str, until: set[str] | None = None, timeout: float = 30.0) -> list[Any]:
        """The experiment's Events; with ``until``, once every one of those reasons has been posted (the operator
        posts Events on threads of its own, so they may arrive after the status that caused them)."""
        def listed() -> list[Any]:
            return [e for e in self.core.list_namespaced_event(self.namespace).items
                    if e.involved_object.name == name and e.involved_object.kind == "TuningExperiment"]
        if not until:
            return listed()
        def complete() -> list[Any]:
            found = listed()
            return found if until <= {e.reason for e in found} else []
        found: list[Any] = wait_for(f"events {sorted(until)} on {name}", complete, timeout=timeout,
                                    on_timeout=lambda: f"posted: {sorted({e.reason for e in listed()})}")
        return found
