"""The chart's optional monitoring objects with the real `helm`: lint, render, and what they point at."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ensure_binaries

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
ON = ["--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=prometheus",
      "--set", "grafanaDashboard.enabled=true"]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("helm-home")
    binary = ensure_binaries() / "helm"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(HELM_CACHE_HOME=str(home / "cache"), HELM_CONFIG_HOME=str(home / "config"),
               HELM_DATA_HOME=str(home / "data"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binary), *args], env=env, capture_output=True, text=True, timeout=120)
    return run


def render(helm: Any, *args: str) -> list[dict[str, Any]]:
    proc = helm("template", "kt", str(CHART), "--namespace", "monitoring-test", *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_lint_strict_with_monitoring_on(helm: Any) -> None:
    proc = helm("lint", "--strict", str(CHART), *ON)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_off_by_default(helm: Any) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(helm)}
    assert not any(k == "ServiceMonitor" for k, _ in kinds)
    assert ("ConfigMap", "kt-kubetune-dashboard") not in kinds


def test_servicemonitor_scrapes_the_metrics_service_and_the_dashboard_is_the_file(helm: Any) -> None:
    objs = render(helm, *ON)
    (monitor,) = [o for o in objs if o["kind"] == "ServiceMonitor"]
    (service,) = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "monitoring-test" and monitor["metadata"]["labels"]["release"] == \
        "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["monitoring-test"]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"

    (dashboard,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "kt-kubetune-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["kubetune.json"]) == json.loads(
        (CHART / "dashboards" / "kubetune.json").read_text())


def test_servicemonitor_needs_the_metrics_service(helm: Any) -> None:
    proc = helm("template", "kt", str(CHART), "--set", "serviceMonitor.enabled=true",
                "--set", "metrics.service.enabled=false")
    assert proc.returncode != 0 and "serviceMonitor.enabled needs metrics.enabled" in proc.stderr
