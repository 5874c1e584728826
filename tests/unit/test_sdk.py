"""The trial SDK ``kubetune_trial``, run in real subprocesses the way trials run it.

The subprocesses run ``python -S`` with only ``trial_image/`` on the path: no site-packages, so the SDK is proven
to need nothing but the standard library. The Kubernetes path talks to a tiny local HTTPS server (a fake: this tests
the SDK's HTTP client, not the operator).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubetune.metrics import parse_annotation, parse_termination_message

ROOT = Path(__file__).resolve().parents[2]
TRIAL_IMAGE = ROOT / "trial_image"


def sdk_env(**extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(TRIAL_IMAGE),
           "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def run_sdk(code: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-S", "-c", textwrap.dedent(code)], env=sdk_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def local_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What `kubetune run` gives a trial."""
    return {
        "KUBETUNE_PARAMS": '{"C":12.5,"kernel":"rbf","layers":3,"bn":true}',
        "KUBETUNE_EXPERIMENT": "exp",
        "KUBETUNE_TRIAL": "exp-0004",
        "KUBETUNE_TRIAL_NUMBER": "4",
        "KUBETUNE_REPORT_FILE": str(tmp_path / "reports.jsonl"),
        "KUBETUNE_TERMINATION_LOG": str(tmp_path / "termination-log"),
        **extra,
    }


def read_reports(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "reports.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------- params


def test_params(tmp_path: Path) -> None:
    r = run_sdk("""
        import json, sys, kubetune_trial as kt
        assert "site" not in sys.modules  # -S: standard library only
        print(json.dumps(kt.params()))
        print(kt.__all__)
    """, **local_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0]) == {"C": 12.5, "kernel": "rbf", "layers": 3, "bn": True}


def test_params_outside_kubetune_is_empty() -> None:
    r = run_sdk("import kubetune_trial as kt; print(kt.params(), kt.should_stop())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "{} False"


def test_params_not_an_object() -> None:
    r = run_sdk("""
        import kubetune_trial as kt
        try:
            kt.params()
        except ValueError as e:
            print("error:", e)
    """, KUBETUNE_PARAMS="[1, 2]")
    assert r.stdout.strip() == "error: KUBETUNE_PARAMS is not a JSON object"


def test_sdk_imports_only_the_standard_library() -> None:
    r = run_sdk("""
        import sys
        before = set(sys.modules)
        import kubetune_trial
        new = sorted(m.split(".")[0] for m in set(sys.modules) - before)
        stdlib = sys.stdlib_module_names
        print([m for m in new if m not in stdlib and m != "kubetune_trial"])
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------- report


def test_report_writes_report_file_and_termination_log(tmp_path: Path) -> None:
    r = run_sdk("""
        import kubetune_trial as kt
        print(kt.report(step=0, accuracy=0.5))
        print(kt.report(step=1, accuracy=0.75, loss=1))
        print(kt.report(accuracy=0.8, fit_seconds=2.5))
    """, **local_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True"]
    reports = read_reports(tmp_path)
    assert [(x["step"], x["metrics"]) for x in reports] == [
        (0, {"accuracy": 0.5}),
        (1, {"accuracy": 0.75, "loss": 1.0}),
        (None, {"accuracy": 0.8, "fit_seconds": 2.5}),
    ]
    assert all(isinstance(x["time"], float) for x in reports)
    # The termination log holds one line: every metric's latest value (the fallback kubetune reads).
    text = (tmp_path / "termination-log").read_text()
    assert text.count("\n") == 1
    assert parse_termination_message(text) == {"accuracy": 0.8, "loss": 1.0, "fit_seconds": 2.5}
    assert r.stderr == ""


def test_report_accepts_numeric_types_that_convert(tmp_path: Path) -> None:
    r = run_sdk("""
        import decimal, fractions, kubetune_trial as kt
        kt.report(a=1, b=decimal.Decimal("0.25"), c=fractions.Fraction(1, 4), step=3.0)
    """, **local_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert read_reports(tmp_path) == [{"step": 3, "metrics": {"a": 1.0, "b": 0.25, "c": 0.25},
                                       "time": read_reports(tmp_path)[0]["time"]}]


@pytest.mark.parametrize(
    "call, message",
    [
        ("kt.report(acc=float('nan'))", "metric 'acc' must be finite, got nan"),
        ("kt.report(acc=float('inf'))", "metric 'acc' must be finite, got inf"),
        ("kt.report(acc=-float('inf'))", "metric 'acc' must be finite, got -inf"),
        ("kt.report(acc=10**400)", "metric 'acc' must be finite, got inf"),
        ("kt.report(acc='0.9')", "metric 'acc' must be a number, got str"),
        ("kt.report(acc=b'1')", "metric 'acc' must be a number, got bytes"),
        ("kt.report(acc=True)", "metric 'acc' must be a number, got bool"),
        ("kt.report(acc=None)", "metric 'acc' must be a number, got NoneType"),
        ("kt.report(acc=[0.9])", "metric 'acc' must be a number, got list"),
        ("kt.report()", "report() needs at least one metric, e.g. report(accuracy=0.9)"),
        ("kt.report(step=-1, acc=1)", "step must be an integer from 0 to 2**53 - 1, got -1"),
        ("kt.report(step=1.5, acc=1)", "step must be an integer from 0 to 2**53 - 1, got 1.5"),
        ("kt.report(step='2', acc=1)", "step must be an integer from 0 to 2**53 - 1, got '2'"),
        ("kt.report(step=True, acc=1)", "step must be an integer from 0 to 2**53 - 1, got True"),
        ("kt.report(step=float('nan'), acc=1)", "step must be an integer from 0 to 2**53 - 1, got nan"),
        ("kt.report(step=float('inf'), acc=1)", "step must be an integer from 0 to 2**53 - 1, got inf"),
        ("kt.report(step=[1], acc=1)", "step must be an integer from 0 to 2**53 - 1, got [1]"),
        ("kt.report(step=2**53, acc=1)", "step must be an integer from 0 to 2**53 - 1, got 9007199254740992"),
        ("kt.report(step=2**80, acc=1)", "step must be an integer from 0 to 2**53 - 1, got 1208925819614629174706176"),
        ("kt.report(step=1e300, acc=1)", "step must be an integer from 0 to 2**53 - 1, got 1e+300"),
        ("kt.report(acc=1e308 * 10)", "metric 'acc' must be finite, got inf"),
        ("kt.report(acc=-(10**5000))", "metric 'acc' must be finite, got -inf"),
        ("kt.report(acc=Bad())", "metric 'acc' must be a number, got Bad"),
        ("kt.report(**{'': 1})", "metric names must be 1 to 128 printable characters, got ''"),
        ("kt.report(**{'a\\n': 1})", "metric names must be 1 to 128 printable characters, got 'a\\n'"),
        ("kt.report(**{'x' * 129: 1})", "metric names must be 1 to 128 printable characters, got '"
                                        + "x" * 56 + "..."),
    ],
)
def test_report_rejects_bad_values(tmp_path: Path, call: str, message: str) -> None:
    r = run_sdk(f"""
        import kubetune_trial as kt
        class Bad:
            def __float__(self):
                raise RuntimeError("no")
        kt.report(ok=1.0)
        try:
            {call}
        except kt.MetricsError as e:
            assert isinstance(e, ValueError)
            print("MetricsError:", e)
    """, **local_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"MetricsError: {message}"
    # Nothing of the rejected call was recorded.
    assert [x["metrics"] for x in read_reports(tmp_path)] == [{"ok": 1.0}]
    assert parse_termination_message((tmp_path / "termination-log").read_text()) == {"ok": 1.0}


def test_report_outside_kubetune_writes_nothing(tmp_path: Path) -> None:
    r = run_sdk("import kubetune_trial as kt; print(kt.report(acc=1.0))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"
    assert r.stderr == ""


# ------------------------------------------------------------------------------------------------- stopping

STOPPABLE = """
    import sys, time, kubetune_trial as kt
    kt.report(step=0, acc=0.1)
    print("ready", flush=True)
    step = 1
    while kt.report(step=step, acc=0.1 + step / 1000):
        step += 1
        time.sleep(0.02)
        if step > 3000:
            print("never stopped", flush=True)
            sys.exit(3)
    print("stopping cleanly after", step, kt.should_stop(), flush=True)
"""


def _start(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-S", "-c", textwrap.dedent(code)], env=sdk_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_after_a_report_makes_report_return_false(tmp_path: Path) -> None:
    p = _start(STOPPABLE, local_env(tmp_path))
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert out.startswith("stopping cleanly after") and out.strip().endswith("True")
    # The last report before stopping was still recorded.
    assert len(read_reports(tmp_path)) >= 2


def test_sigterm_before_any_report_terminates(tmp_path: Path) -> None:
    p = _start("""
        import time, kubetune_trial as kt
        print("ready", flush=True)
        time.sleep(30)
    """, local_env(tmp_path))
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == -signal.SIGTERM


def test_sigterm_outside_kubetune_is_not_intercepted(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    del env["KUBETUNE_TRIAL"]
    p = _start(STOPPABLE, env)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == -signal.SIGTERM


def test_a_program_with_its_own_sigterm_handler_keeps_it(tmp_path: Path) -> None:
    p = _start("""
        import signal, sys, time, kubetune_trial as kt
        def mine(signum, frame):
            print("my handler", flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, mine)
        kt.report(acc=1.0)
        print("ready", flush=True)
        time.sleep(30)
    """, local_env(tmp_path))
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        p.send_signal(signal.SIGTERM)
        out, _err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 7 and "my handler" in out


# ------------------------------------------------------------------------------------------------- Kubernetes path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tls")
    paths = {}
    for name in ("good", "other"):
        cert, key = d / f"{name}.crt", d / f"{name}.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,digitalSignature,keyCertSign"],
            check=True, capture_output=True, timeout=60,
        )
        paths[f"{name}_cert"], paths[f"{name}_key"] = cert, key
    return paths


class FakeAPIServer:
    """Records every request; answers with ``status``."""

    def __init__(self, cert: Path, key: Path, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = status
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append({"method": "PATCH", "path": self.path, "headers": dict(self.headers),
                                        "body": body})
                payload = json.dumps({"kind": "Status", "code": server.status} if server.status >= 400 else
                                     {"kind": "Pod"}).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api(tls: dict[str, Path]) -> Iterator[FakeAPIServer]:
    server = FakeAPIServer(tls["good_cert"], tls["good_key"])
    yield server
    server.close()


def k8s_env(tmp_path: Path, port: int, ca: Path, **extra: str) -> dict[str, str]:
    sa = tmp_path / "serviceaccount"
    sa.mkdir(exist_ok=True)
    (sa / "token").write_text("s3cr3t-token\n")
    (sa / "namespace").write_text("team-a\n")
    (sa / "ca.crt").write_bytes(ca.read_bytes())
    return {
        "KUBETUNE_PARAMS": '{"C":1.0}',
        "KUBETUNE_EXPERIMENT": "exp",
        "KUBETUNE_TRIAL": "exp-0002",
        "KUBETUNE_TRIAL_NUMBER": "2",
        "KUBETUNE_POD_NAME": "exp-0002-x7k2p",
        "KUBETUNE_SERVICEACCOUNT_DIR": str(sa),
        "KUBETUNE_TERMINATION_LOG": str(tmp_path / "termination-log"),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(port),
        **extra,
    }


REPORTS = """
    import kubetune_trial as kt
    print(kt.report(step=0, accuracy=0.5))
    print(kt.report(step=1, accuracy=0.7))
    print(kt.report(accuracy=0.72, fit_seconds=3.0))
"""


def test_kubernetes_path_patches_the_pod_annotation(tmp_path: Path, api: FakeAPIServer, tls: dict[str, Path]) -> None:
    r = run_sdk(REPORTS, **k8s_env(tmp_path, api.port, tls["good_cert"], KUBETUNE_REPORT_INTERVAL="0"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True"]
    assert r.stderr == ""
    assert len(api.requests) == 3
    for req in api.requests:
        assert req["method"] == "PATCH"
        assert req["path"] == "/api/v1/namespaces/team-a/pods/exp-0002-x7k2p"
        headers = {k.lower(): v for k, v in req["headers"].items()}
        assert headers["authorization"] == "Bearer s3cr3t-token"
        assert headers["content-type"] == "application/merge-patch+json"
        body = json.loads(req["body"])
        assert list(body) == ["metadata"] and list(body["metadata"]) == ["annotations"]
        assert list(body["metadata"]["annotations"]) == ["kubetune.io/metrics"]
    docs = [json.loads(json.loads(req["body"])["metadata"]["annotations"]["kubetune.io/metrics"])
            for req in api.requests]
    assert [d["seq"] for d in docs] == [1, 2, 3]
    assert [d["step"] for d in docs] == [0, 1, None]
    assert docs[-1]["metrics"] == {"accuracy": 0.72, "fit_seconds": 3.0}
    # What the operator reads back from the annotation.
    report = parse_annotation(json.loads(api.requests[-1]["body"])["metadata"]["annotations"]["kubetune.io/metrics"])
    assert report.seq == 3
    assert report.metrics == {"accuracy": 0.72, "fit_seconds": 3.0}
    assert report.objective_curve("accuracy") == [(0, 0.5), (1, 0.7)]
    # And the termination message fallback is written as well.
    assert parse_termination_message((tmp_path / "termination-log").read_text()) == {
        "accuracy": 0.72, "fit_seconds": 3.0}


def _annotations(api: FakeAPIServer) -> list[dict[str, Any]]:
    return [json.loads(json.loads(req["body"])["metadata"]["annotations"]["kubetune.io/metrics"])
            for req in api.requests]


def test_intermediate_reports_within_the_interval_fold_into_the_final_write(
        tmp_path: Path, api: FakeAPIServer, tls: dict[str, Path]) -> None:
    # The default interval is 1 s: step 0 is written at once, step 1 waits, and the final report carries it.
    r = run_sdk(REPORTS, **k8s_env(tmp_path, api.port, tls["good_cert"]))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True"] and r.stderr == ""
    docs = _annotations(api)
    assert [(d["seq"], d["step"]) for d in docs] == [(1, 0), (3, None)]
    last = parse_annotation(json.dumps(docs[-1]))
    assert last.objective_curve("accuracy") == [(0, 0.5), (1, 0.7)]  # nothing of the folded report is lost
    assert last.metrics == {"accuracy": 0.72, "fit_seconds": 3.0}


def test_a_fast_reporting_loop_writes_about_once_per_interval_and_the_rest_at_exit(
        tmp_path: Path, api: FakeAPIServer, tls: dict[str, Path]) -> None:
    r = run_sdk("""
        import time
        import kubetune_trial as kt
        start = time.monotonic()
        for step in range(400):
            kt.report(step=step, loss=1.0 / (step + 1))
            time.sleep(0.005)
        print(time.monotonic() - start)
    """, timeout=120, **k8s_env(tmp_path, api.port, tls["good_cert"], KUBETUNE_REPORT_INTERVAL="0.25"))
    assert r.returncode == 0, r.stderr
    elapsed = float(r.stdout.split()[-1])
    docs = _annotations(api)
    # One write when the loop starts, at most one per 0.25 s while it runs, and the pending one at exit.
    assert 2 <= len(docs) <= elapsed / 0.25 + 2, (len(docs), elapsed)
    assert [d["seq"] for d in docs] == sorted(d["seq"] for d in docs)
    assert docs[-1]["seq"] == 400 and docs[-1]["step"] == 399  # written at exit: no report after the loop
    curve = parse_annotation(json.dumps(docs[-1])).objective_curve("loss")
    assert curve[-1] == (399, 1.0 / 400) and len(curve) == 100  # the SDK's curve bound, thinned oldest first


def test_a_waiting_report_is_sent_by_the_background_writer_without_another_call(
        tmp_path: Path, api: FakeAPIServer, tls: dict[str, Path]) -> None:
    # os._exit skips the exit hook: only the background writer can have sent step 1.
    r = run_sdk("""
        import os, time
        import kubetune_trial as kt
        kt.report(step=0, loss=0.9)
        kt.report(step=1, loss=0.8)
        time.sleep(1.0)
        os._exit(0)
    """, **k8s_env(tmp_path, api.port, tls["good_cert"], KUBETUNE_REPORT_INTERVAL="0.3"))
    assert r.returncode == 0, r.stderr
    assert [(d["seq"], d["step"]) for d in _annotations(api)] == [(1, 0), (2, 1)]


def test_without_the_exit_hook_and_writer_a_waiting_report_is_lost_to_the_annotation_only(
        tmp_path: Path, api: FakeAPIServer, tls: dict[str, Path]) -> None:
    # The counterpart of the two tests above: a process killed before the interval keeps step 1 in the
    # termination message, which kubetune reads when the annotation lacks a final report.
    r = run_sdk("""
        import os
        import kubetune_trial as kt
        kt.report(step=0, loss=0.9)
        kt.report(step=1, loss=0.8)
        os._exit(0)
    """, **k8s_env(tmp_path, api.port, tls["good_cert"], KUBETUNE_REPORT_INTERVAL="30"))
    assert r.returncode == 0, r.stderr
    assert [(d["seq"], d["step"]) for d in _annotations(api)] == [(1, 0)]
    assert parse_termination_message((tmp_path / "termination-log").read_text()) == {"loss": 0.8}


def test_a_bad_report_interval_is_one_warning_and_the_default(tmp_path: Path, api: FakeAPIServer,
                                                              tls: dict[str, Path]) -> None:
    r = run_sdk(REPORTS, **k8s_env(tmp_path, api.port, tls["good_cert"], KUBETUNE_REPORT_INTERVAL="soon"))
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("kubetune_trial: KUBETUNE_REPORT_INTERVAL must be a number of seconds >= 0, got "
                               "'soon'; using 1.0") and len(r.stderr.splitlines()) == 1
    assert [(d["seq"], d["step"]) for d in _annotations(api)] == [(1, 0), (3, None)]


def test_kubernetes_path_pod_namespace_env_wins(tmp_path: Path, api: FakeAPIServer, tls: dict[str, Path]) -> None:
    r = run_sdk("import kubetune_trial as kt; kt.report(acc=1)",
                **k8s_env(tmp_path, api.port, tls["good_cert"], KUBETUNE_POD_NAMESPACE="ml"))
    assert r.returncode == 0, r.stderr
    assert [req["path"] for req in api.requests] == ["/api/v1/namespaces/ml/pods/exp-0002-x7k2p"]


def test_kubernetes_403_falls_back_quietly_to_the_termination_log(tmp_path: Path, api: FakeAPIServer,
                                                                 tls: dict[str, Path]) -> None:
    api.status = 403
    started = time.monotonic()
    r = run_sdk(REPORTS, **k8s_env(tmp_path, api.port, tls["good_cert"], KUBETUNE_REPORT_INTERVAL="0"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True"]  # the trial goes on
    assert time.monotonic() - started < 20  # no retry loop on a permanent error
    assert len(api.requests) == 3  # one attempt per report
    # One warning, not one per report.
    assert r.stderr.splitlines() == [
        "kubetune_trial: cannot annotate pod team-a/exp-0002-x7k2p: HTTP 403; metrics go to the termination message"
    ]
    assert parse_termination_message((tmp_path / "termination-log").read_text()) == {
        "accuracy": 0.72, "fit_seconds": 3.0}


def test_kubernetes_untrusted_certificate_is_refused(tmp_path: Path, api: FakeAPIServer,
                                                    tls: dict[str, Path]) -> None:
    # The pod's CA is another one: the SDK must not send its token to this server.
    r = run_sdk("import kubetune_trial as kt; print(kt.report(acc=0.5))",
                **k8s_env(tmp_path, api.port, tls["other_cert"]))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"
    assert api.requests == []
    assert r.stderr.startswith("kubetune_trial: cannot reach the API server (")
    assert "CERTIFICATE_VERIFY_FAILED" in r.stderr
    assert parse_termination_message((tmp_path / "termination-log").read_text()) == {"acc": 0.5}


def test_kubernetes_without_service_account(tmp_path: Path, api: FakeAPIServer, tls: dict[str, Path]) -> None:
    env = k8s_env(tmp_path, api.port, tls["good_cert"])
    env["KUBETUNE_SERVICEACCOUNT_DIR"] = str(tmp_path / "nowhere")
    r = run_sdk("import kubetune_trial as kt; print(kt.report(acc=0.5)); print(kt.report(acc=0.6))", **env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True"]
    assert api.requests == []
    assert len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("kubetune_trial: cannot read the service account (")
    assert parse_termination_message((tmp_path / "termination-log").read_text()) == {"acc": 0.6}


def test_report_file_takes_precedence_over_the_pod(tmp_path: Path, api: FakeAPIServer, tls: dict[str, Path]) -> None:
    env = k8s_env(tmp_path, api.port, tls["good_cert"], KUBETUNE_REPORT_FILE=str(tmp_path / "reports.jsonl"))
    r = run_sdk("import kubetune_trial as kt; kt.report(acc=0.5)", **env)
    assert r.returncode == 0, r.stderr
    assert api.requests == []
    assert [x["metrics"] for x in read_reports(tmp_path)] == [{"acc": 0.5}]


# ------------------------------------------------------------------------------------------------- limits


def test_at_most_64_distinct_metrics_and_the_refused_call_records_nothing(tmp_path: Path) -> None:
    r = run_sdk("""
        import kubetune_trial as kt
        kt.report(**{f"m{i:02d}": float(i) for i in range(63)})
        kt.report(m00=5.0, acc=0.5)  # the 64th distinct name, and an old one
        try:
            kt.report(acc=0.6, extra=1.0)
        except kt.MetricsError as e:
            print("MetricsError:", e)
        print(kt.report(acc=0.7, m01=2.0))  # known names are still fine
    """, **local_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "MetricsError: a trial reports at most 64 distinct metrics; 'extra' would be number 65", "True"]
    reports = read_reports(tmp_path)
    assert [x["metrics"] for x in reports[1:]] == [{"m00": 5.0, "acc": 0.5}, {"acc": 0.7, "m01": 2.0}]
    final = parse_termination_message((tmp_path / "termination-log").read_text())
    assert final is not None and len(final) == 64 and final["acc"] == 0.7 and final["m00"] == 5.0


def test_termination_line_fits_what_kubernetes_keeps_latest_metrics_first(tmp_path: Path) -> None:
    # 64 names of 128 astral characters: one line of all of them would be about 100 KB.
    r = run_sdk("""
        import kubetune_trial as kt
        names = [chr(0x1F600 + i) * 128 for i in range(63)]
        kt.report(**{n: 0.25 for n in names})
        kt.report(step=3, accuracy=0.875)
    """, **local_env(tmp_path))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "termination-log").read_bytes()
    assert len(text) <= 4096 and text.count(b"\n") == 1
    final = parse_termination_message(text)
    assert final is not None and final["accuracy"] == 0.875 and 1 < len(final) < 64


def test_reporting_never_crashes_the_trial_on_write_errors(tmp_path: Path) -> None:
    env = local_env(tmp_path, KUBETUNE_REPORT_FILE=str(tmp_path))  # a directory: cannot be opened for append
    r = run_sdk("""
        import kubetune_trial as kt
        print(kt.report(step=0, acc=0.5), kt.report(acc=0.6))
    """, **env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True"]
    assert r.stderr.startswith("kubetune_trial: cannot write the report file (") and len(r.stderr.splitlines()) == 1
    assert parse_termination_message((tmp_path / "termination-log").read_text()) == {"acc": 0.6}


def test_kubernetes_annotation_stays_bounded(tmp_path: Path, api: FakeAPIServer, tls: dict[str, Path]) -> None:
    # 64 metrics every step: 100 curve points of them would be about 600 KB; older points give way.
    r = run_sdk("""
        import kubetune_trial as kt
        names = [f"metric_{i:02d}_" + "x" * 50 for i in range(63)]
        for step in range(150):
            kt.report(step=step, accuracy=step / 1000, **{n: step / 7 for n in names})
    """, timeout=120, **k8s_env(tmp_path, api.port, tls["good_cert"], KUBETUNE_REPORT_INTERVAL="0"))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    texts = [json.loads(req["body"])["metadata"]["annotations"]["kubetune.io/metrics"] for req in api.requests]
    assert len(texts) == 150
    assert max(len(t.encode()) for t in texts) <= 128 * 1024 < len(texts[-1].encode()) * 3
    last = parse_annotation(texts[-1])
    assert last.metrics["accuracy"] == 0.149 and len(last.metrics) == 64 and last.seq == 150
    curve = last.objective_curve("accuracy")
    assert curve[-1] == (149, 0.149) and 10 < len(curve) < 100
    assert [s for s, _ in curve] == sorted(s for s, _ in curve)


def test_kubernetes_annotation_with_huge_names_keeps_the_metrics(tmp_path: Path, api: FakeAPIServer,
                                                                 tls: dict[str, Path]) -> None:
    # 64 names of 128 astral characters (12 escaped bytes each): the latest metrics alone are about 100 KB, so
    # the curve gives way entirely; the metrics stay whole.
    r = run_sdk("""
        import kubetune_trial as kt
        names = [chr(0x1F600 + i) * 128 for i in range(63)]
        for step in range(3):
            kt.report(step=step, accuracy=step / 1000, **{n: float(step) for n in names})
    """, timeout=120, **k8s_env(tmp_path, api.port, tls["good_cert"]))
    assert r.returncode == 0, r.stderr
    texts = [json.loads(req["body"])["metadata"]["annotations"]["kubetune.io/metrics"] for req in api.requests]
    assert max(len(t.encode()) for t in texts) <= 128 * 1024
    last = parse_annotation(texts[-1])
    assert last.metrics["accuracy"] == 0.002 and len(last.metrics) == 64


def test_kubernetes_missing_ca_is_a_warning(tmp_path: Path, api: FakeAPIServer, tls: dict[str, Path]) -> None:
    env = k8s_env(tmp_path, api.port, tls["good_cert"])
    (Path(env["KUBETUNE_SERVICEACCOUNT_DIR"]) / "ca.crt").unlink()
    r = run_sdk("import kubetune_trial as kt; print(kt.report(acc=0.5))", **env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True" and api.requests == []
    assert r.stderr.startswith("kubetune_trial: cannot read the service account's CA (")
