"""kubetune's trial SDK: read this trial's parameters and report its metrics. Standard library only.

    import kubetune_trial as kt

    p = kt.params()                      # {"C": 12.5, "kernel": "rbf"}
    for epoch in range(20):
        ...
        if not kt.report(step=epoch, accuracy=acc):
            break                        # kubetune asked this trial to stop early: exit promptly
    kt.report(accuracy=acc)              # the final report (no step)

Where the metrics go:

* under ``kubetune run``: appended as JSON lines to the file named by ``KUBETUNE_REPORT_FILE``;
* on Kubernetes: into the annotation ``kubetune.io/metrics`` of the trial's own pod (a JSON merge patch with the
  pod's service-account token; the pod is named by ``KUBETUNE_POD_NAME``/``KUBETUNE_POD_NAMESPACE``);
* in both cases, the latest metrics also go to the termination-message file (``KUBETUNE_TERMINATION_LOG`` or
  ``/dev/termination-log``) as one JSON line, the fallback kubetune reads when the annotation cannot be written.

Stopping: kubetune stops a trial by sending it SIGTERM (Kubernetes does so when it deletes the trial's pod). Once
:func:`report` has been called, SIGTERM no longer kills the process; it makes the next :func:`report` return
``False`` so the trial can exit cleanly. A trial that does not exit is killed after the pod's grace period.
"""

from __future__ import annotations

import json
import math
import os
import signal
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["params", "report", "should_stop", "MetricsError"]
__version__ = "0.1.0"

METRICS_ANNOTATION = "kubetune.io/metrics"
MAX_CURVE_POINTS = 100
DEFAULT_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class MetricsError(ValueError):
    """A metric that cannot be recorded (not a finite number, or a bad name)."""


_lock = threading.Lock()
_stop = threading.Event()
_state: dict[str, Any] = {"latest": {}, "curve": [], "handler": False, "warned": False, "seq": 0}


def params() -> dict[str, Any]:
    """This trial's parameters (from ``KUBETUNE_PARAMS``); ``{}`` when not run by kubetune."""
    raw = os.environ.get("KUBETUNE_PARAMS")
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("KUBETUNE_PARAMS is not a JSON object")
    return value


def should_stop() -> bool:
    """True once kubetune asked this trial to stop."""
    return _stop.is_set()


def report(step: int | None = None, **metrics: float) -> bool:
    """Record metrics; pass ``step`` for intermediate reports (epoch, iteration). Returns False once the trial
    should stop early. Raises :class:`MetricsError` for NaN, infinity or non-numeric values."""
    if not metrics:
        raise MetricsError("report() needs at least one metric, e.g. report(accuracy=0.9)")
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, (bool, str, bytes)):
            raise MetricsError(f"metric {name!r} must be a number, got {type(value).__name__}")
        if not isinstance(value, (int, float)):
            try:
                value = float(value)  # numpy scalars and the like
            except (TypeError, ValueError):
                raise MetricsError(f"metric {name!r} must be a number, got {type(value).__name__}") from None
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float
            value = math.inf
        if not math.isfinite(value):
            raise MetricsError(f"metric {name!r} must be finite, got {value}")
        clean[name] = value
    if step is not None:
        try:
            whole = not isinstance(step, (bool, str, bytes)) and int(step) == step and step >= 0
        except (TypeError, ValueError, OverflowError):
            whole = False
        if not whole:
            raise MetricsError(f"step must be a non-negative integer, got {step!r}")
        step = int(step)
    _install_stop_handler()
    with _lock:
        _state["seq"] += 1
        _state["latest"].update(clean)
        if step is not None:
            curve = [p for p in _state["curve"] if p[0] != step] + [[step, clean]]
            curve.sort(key=lambda p: p[0])
            while len(curve) > MAX_CURVE_POINTS:  # thin the older half, keep the recent points
                half = len(curve) // 2
                curve = curve[:half:2] + curve[half:]
            _state["curve"] = curve
        doc = {
            "seq": _state["seq"],
            "step": step,
            "metrics": dict(_state["latest"]),
            "curve": list(_state["curve"]),
            "time": time.time(),
        }
        _write_termination_log(doc["metrics"])
        _send(doc, clean, step)
    return not _stop.is_set()


# --------------------------------------------------------------------------------------------------- plumbing


def _install_stop_handler() -> None:
    if _state["handler"] or not os.environ.get("KUBETUNE_TRIAL"):
        return
    _state["handler"] = True
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return  # the program handles SIGTERM itself

    def on_term(signum: int, frame: object) -> None:
        _stop.set()

    signal.signal(signal.SIGTERM, on_term)


def _write_termination_log(metrics: dict[str, float]) -> None:
    path = os.environ.get("KUBETUNE_TERMINATION_LOG") or "/dev/termination-log"
    if not os.environ.get("KUBETUNE_TERMINATION_LOG") and not os.path.exists(path):
        return
    try:
        with open(path, "w") as f:
            f.write(json.dumps(metrics) + "\n")
    except OSError:
        pass


def _send(doc: dict[str, Any], metrics: dict[str, float], step: int | None) -> None:
    report_file = os.environ.get("KUBETUNE_REPORT_FILE")
    if report_file:
        with open(report_file, "a") as f:
            f.write(json.dumps({"step": step, "metrics": metrics, "time": doc["time"]}) + "\n")
            f.flush()
        return
    pod = os.environ.get("KUBETUNE_POD_NAME")
    if pod:
        _patch_pod(pod, doc)


def _patch_pod(pod: str, doc: dict[str, Any]) -> None:
    sa_dir = os.environ.get("KUBETUNE_SERVICEACCOUNT_DIR", DEFAULT_SA_DIR)
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    try:
        with open(os.path.join(sa_dir, "token")) as f:
            token = f.read().strip()
        namespace = os.environ.get("KUBETUNE_POD_NAMESPACE")
        if not namespace:
            with open(os.path.join(sa_dir, "namespace")) as f:
                namespace = f.read().strip()
    except OSError as e:
        _warn(f"cannot read the service account ({e}); metrics go to the termination message only")
        return
    if not host:
        _warn("KUBERNETES_SERVICE_HOST is not set; metrics go to the termination message only")
        return
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods/{pod}"
    body = json.dumps({"metadata": {"annotations": {METRICS_ANNOTATION: json.dumps(doc, separators=(",", ":"))}}})
    ctx = ssl.create_default_context(cafile=os.path.join(sa_dir, "ca.crt"))
    request = urllib.request.Request(
        url,
        data=body.encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"},
    )
    for attempt in range(4):
        try:
            with urllib.request.urlopen(request, context=ctx, timeout=10) as resp:
                resp.read()
            return
        except urllib.error.HTTPError as e:
            if e.code in (401, 403, 404, 422) or attempt == 3:
                _warn(f"cannot annotate pod {namespace}/{pod}: HTTP {e.code}; metrics go to the termination message")
                return
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            if attempt == 3:
                _warn(f"cannot reach the API server ({e}); metrics go to the termination message")
                return
        time.sleep(0.2 * 2**attempt)


def _warn(message: str) -> None:
    if not _state["warned"]:
        _state["warned"] = True
        print(f"kubetune_trial: {message}", file=sys.stderr, flush=True)
