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

How often the pod is patched: a report without ``step`` (the final one) is written at once. Intermediate reports
are written at most once per ``KUBETUNE_REPORT_INTERVAL`` seconds (default 1; ``0`` writes every report): the first
at once, and the ones in between are folded into the next write, which a background thread sends when the interval
has passed, and which the process sends at exit at the latest. Nothing is lost by folding: every write carries the
latest metrics and the whole (bounded) curve. A loop that reports every batch thus costs the API server one request
a second, not one per batch, and a folded report does not wait for the API server.

Limits (what kubetune would drop anyway is refused here, with :class:`MetricsError`): metric names are 1..128
printable characters, values are finite numbers, steps are integers in ``[0, 2**53)``, and a trial reports at most
64 distinct metrics. The annotation is kept under 128 KiB (older curve points are thinned further when needed) and
the termination-message line under 4 KiB (the metrics of the latest report first). Writing the report never
raises: a failure to write is one warning on stderr, and the trial goes on.

Stopping: kubetune stops a trial by sending it SIGTERM (Kubernetes does so when it deletes the trial's pod). Once
:func:`report` has been called, SIGTERM no longer kills the process; it makes the next :func:`report` return
``False`` so the trial can exit cleanly. A trial that does not exit is killed after the pod's grace period.
"""

from __future__ import annotations

import atexit
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

__all__ = ["params", "report", "should_stop", "flush", "MetricsError"]
__version__ = "0.1.0"

from .checkpoint import checkpoint_dir, end_step, restore_dir, restore_step  # noqa: F401  (checkpoints)

METRICS_ANNOTATION = "kubetune.io/metrics"
MAX_CURVE_POINTS = 100
MAX_METRICS = 64
MAX_METRIC_NAME = 128
MAX_STEP = 2**53
MAX_ANNOTATION_BYTES = 128 * 1024
"""Half of what the API server allows for all of a pod's annotations together."""
MAX_TERMINATION_BYTES = 4000
"""Kubernetes keeps the last 4096 bytes of the termination message."""
DEFAULT_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_REPORT_INTERVAL = 1.0
"""Seconds between two annotation writes for intermediate reports (``KUBETUNE_REPORT_INTERVAL`` overrides it)."""


class MetricsError(ValueError):
    """A metric that cannot be recorded (not a finite number, or a bad name)."""


_lock = threading.Lock()
_stop = threading.Event()
_wake = threading.Condition(_lock)
_state: dict[str, Any] = {"latest": {}, "curve": [], "handler": False, "warned": False, "seq": 0,
                          "pending": None, "sent_at": None, "flusher": None}


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
    should stop early. Raises :class:`MetricsError` for NaN, infinity, non-numeric values, bad names or steps, or
    more than 64 distinct metrics; nothing of a refused call is recorded."""
    if not metrics:
        raise MetricsError("report() needs at least one metric, e.g. report(accuracy=0.9)")
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_METRIC_NAME or not name.isprintable():
            raise MetricsError(f"metric names must be 1 to {MAX_METRIC_NAME} printable characters, got "
                               f"{_short(name)}")
        clean[name] = _number(name, value)
    if step is not None:
        step = _step(step)
    _install_stop_handler()
    with _lock:
        known = _state["latest"]
        new = [n for n in clean if n not in known]
        if len(known) + len(new) > MAX_METRICS:
            raise MetricsError(f"a trial reports at most {MAX_METRICS} distinct metrics; "
                               f"{_short(new[0])} would be number {len(known) + 1}")
        _state["seq"] += 1
        known.update(clean)
        if step is not None:
            curve = [p for p in _state["curve"] if p[0] != step] + [[step, clean]]
            curve.sort(key=lambda p: p[0])
            _state["curve"] = _thin(curve, MAX_CURVE_POINTS)
        doc = {
            "seq": _state["seq"],
            "step": step,
            "metrics": dict(known),
            "curve": list(_state["curve"]),
            "time": time.time(),
        }
        try:
            _write_termination_log(_termination_line(known, clean))
            if not _append_report_file(doc, clean, step):
                _write_pod(doc, final=step is None)
        except Exception as e:  # reporting never ends the trial
            _warn(f"cannot report metrics ({type(e).__name__}: {e})")
    return not _stop.is_set()


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(name: str, value: object) -> float:
    if isinstance(value, (bool, str, bytes)):
        raise MetricsError(f"metric {name!r} must be a number, got {type(value).__name__}")
    try:
        number = float(value)  # type: ignore[arg-type]  # ints, floats, numpy scalars, Decimal, Fraction
    except OverflowError:  # an int too large for a float
        number = -math.inf if value < 0 else math.inf  # type: ignore[operator]
    except Exception:  # whatever __float__ raises: not a number
        raise MetricsError(f"metric {name!r} must be a number, got {type(value).__name__}") from None
    if not math.isfinite(number):
        raise MetricsError(f"metric {name!r} must be finite, got {number}")
    return number


def _step(step: object) -> int:
    try:
        whole = (not isinstance(step, (bool, str, bytes)) and int(step) == step  # type: ignore[call-overload]
                 and 0 <= step < MAX_STEP)  # type: ignore[operator]
    except Exception:  # whatever int() or the comparison raises: not a step
        whole = False
    if not whole:
        raise MetricsError(f"step must be an integer from 0 to 2**53 - 1, got {_short(step)}")
    return int(step)  # type: ignore[call-overload]


def _thin(curve: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` points: thin the older half, keep the recent points."""
    while len(curve) > limit:
        half = len(curve) // 2
        thinned = curve[:half:2] + curve[half:]
        curve = thinned if len(thinned) < len(curve) else curve[len(curve) - limit:]
    return curve


def _annotation(doc: dict[str, Any]) -> str:
    """The annotation text, within MAX_ANNOTATION_BYTES: older curve points give way first."""
    text = json.dumps(doc, separators=(",", ":"))
    curve = doc["curve"]
    while len(text) > MAX_ANNOTATION_BYTES and curve:
        curve = _thin(curve, len(curve) // 2)
        text = json.dumps({**doc, "curve": curve}, separators=(",", ":"))
    return text


def _termination_line(latest: dict[str, float], first: dict[str, float]) -> str:
    """One JSON line of the latest metrics within MAX_TERMINATION_BYTES (this report's metrics first)."""
    kept: dict[str, float] = {}
    size = len("{}\n")
    for name in list(first) + [n for n in latest if n not in first]:
        entry = len(json.dumps({name: latest[name]})) - 2 + (2 if kept else 0)  # '"name": value' and ', '
        if size + entry > MAX_TERMINATION_BYTES:
            break
        kept[name] = latest[name]
        size += entry
    return json.dumps(kept) + "\n"


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


def _write_termination_log(line: str) -> None:
    path = os.environ.get("KUBETUNE_TERMINATION_LOG") or "/dev/termination-log"
    if not os.environ.get("KUBETUNE_TERMINATION_LOG") and not os.path.exists(path):
        return
    try:
        with open(path, "w") as f:
            f.write(line)
    except OSError:
        pass


def _append_report_file(doc: dict[str, Any], metrics: dict[str, float], step: int | None) -> bool:
    """Under ``kubetune run``: append this report as a JSON line. False when there is no report file."""
    report_file = os.environ.get("KUBETUNE_REPORT_FILE")
    if not report_file:
        return False
    try:
        with open(report_file, "a") as f:
            f.write(json.dumps({"step": step, "metrics": metrics, "time": doc["time"]}) + "\n")
            f.flush()
    except OSError as e:
        _warn(f"cannot write the report file ({e}); metrics go to the termination message only")
    return True


def _report_interval() -> float:
    raw = os.environ.get("KUBETUNE_REPORT_INTERVAL")
    if raw is None:
        return DEFAULT_REPORT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        _warn(f"KUBETUNE_REPORT_INTERVAL must be a number of seconds >= 0, got {_short(raw)}; using "
              f"{DEFAULT_REPORT_INTERVAL}")
        return DEFAULT_REPORT_INTERVAL
    return value


def _write_pod(doc: dict[str, Any], final: bool) -> None:
    """Write ``doc`` to the pod now, or fold it into the next write (called with ``_lock`` held)."""
    pod = os.environ.get("KUBETUNE_POD_NAME")
    if not pod:
        return
    interval = _report_interval()
    sent_at = _state["sent_at"]
    now = time.monotonic()
    if final or interval <= 0 or sent_at is None or now - sent_at >= interval:
        _state["pending"] = None  # this document holds everything a pending one had
        _state["sent_at"] = now
        _patch_pod(pod, doc)
        return
    _state["pending"] = doc
    if _state["flusher"] is None:
        _state["flusher"] = threading.Thread(target=_flush_loop, name="kubetune-report", daemon=True)
        _state["flusher"].start()
        atexit.register(flush)
    _wake.notify()


def _flush_loop() -> None:
    """Send the pending document once the interval since the last write has passed."""
    with _lock:
        while True:
            if _state["pending"] is None:
                _wake.wait()
                continue
            due = _state["sent_at"] + _report_interval() - time.monotonic()
            if due > 0:
                _wake.wait(due)
                continue
            _send_pending()


def _send_pending() -> None:
    doc, _state["pending"] = _state["pending"], None
    pod = os.environ.get("KUBETUNE_POD_NAME")
    if doc is None or not pod:
        return
    _state["sent_at"] = time.monotonic()
    try:
        _patch_pod(pod, doc)
    except Exception as e:  # reporting never ends the trial
        _warn(f"cannot report metrics ({type(e).__name__}: {e})")


def flush() -> None:
    """Write a report still waiting for its interval now (also done at exit)."""
    with _lock:
        _send_pending()


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
    body = json.dumps({"metadata": {"annotations": {METRICS_ANNOTATION: _annotation(doc)}}})
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(sa_dir, "ca.crt"))
    except (OSError, ssl.SSLError) as e:
        _warn(f"cannot read the service account's CA ({e}); metrics go to the termination message only")
        return
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
        except Exception as e:  # URLError, OSError, timeouts, http.client errors: retried
            if attempt == 3:
                _warn(f"cannot reach the API server ({e}); metrics go to the termination message")
                return
        time.sleep(0.2 * 2**attempt)


def _warn(message: str) -> None:
    if not _state["warned"]:
        _state["warned"] = True
        print(f"kubetune_trial: {message}", file=sys.stderr, flush=True)
