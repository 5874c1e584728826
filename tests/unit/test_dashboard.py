"""``kubetune dashboard`` without a browser: what the server answers (page, plotly.js, state JSON with its ETag),
that it is read-only and bound to 127.0.0.1 by default, and that the source is re-read only when it changed."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest
from plotly.offline import get_plotlyjs

from kubetune.cli import build_parser, main
from kubetune.dashboard import ClusterWatch, DashboardServer, Live, LocalWatch
from kubetune.report import build
from kubetune.results import ExperimentResults, LocalDirectory, ResultsError, load
from tests.support.synthetic_results import make_trials, write_results_dir


class Counting:
    """A watched source that counts what it is asked (stamps and full reads)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.stamps = 0
        self.loads = 0
        self.fail: str | None = None

    def stamp(self) -> Hashable:
        self.stamps += 1
        if self.fail:
            raise ResultsError(self.fail)
        stamp: Hashable = self.inner.stamp()
        return stamp

    def load(self) -> ExperimentResults:
        self.loads += 1
        results: ExperimentResults = self.inner.load()
        return results


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_results_dir(tmp_path / "run", make_trials(20), finished=False)


@pytest.fixture
def served(run_dir: Path) -> Iterator[tuple[DashboardServer, Counting]]:
    source = Counting(LocalWatch(LocalDirectory(run_dir)))
    live = Live(source, interval=3600)  # no background refresh: the tests refresh by hand
    live.refresh()
    server = DashboardServer(("127.0.0.1", 0), live)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, source
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def request(server: DashboardServer, method: str, path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def rows(table_html: str) -> list[int]:
    """Trial numbers of the table's rows (the first cell's data-v)."""
    return [int(n) for n in re.findall(r'<tr(?: class="best")?><td data-v="(\d+)">', table_html)]


def test_page_state_and_plotly_js(served: tuple[DashboardServer, Counting], run_dir: Path) -> None:
    server, _ = served
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    page = body.decode()
    scripts = re.findall(r'<script[^>]*src="([^"]*)"', page)
    assert scripts == ["plotly.min.js"]  # one script from this server, nothing from the network
    assert "https://" not in "".join(re.findall(r"<script[^>]*>", page))
    status, headers, body = request(server, "GET", "/plotly.min.js")
    assert status == 200 and body == get_plotlyjs().encode() and "javascript" in headers["content-type"]

    status, headers, body = request(server, "GET", "/api/state")
    assert status == 200 and headers["content-type"] == "application/json"
    state = json.loads(body)
    report = build(load(str(run_dir)))
    assert headers["etag"] == f'"{state["version"]}"'
    assert state["trials"] == 20 and not state["finished"]
    assert [f["id"] for f in state["figures"]] == list(report.figures)
    for f in state["figures"]:  # the report's figures, trace by trace
        fig = report.figures[f["id"]]
        assert [t["type"] for t in f["figure"]["data"]] == [t.type for t in fig.data]
        assert f["figure"]["layout"]["title"]["text"] == fig.layout.title.text
    assert rows(state["table"]) == list(range(20))
    # the page carries the same state for its first drawing
    embedded = re.search(r'<script type="application/json" id="kubetune-state">(.*?)</script>', page, re.S)
    assert embedded is not None and json.loads(embedded.group(1))["version"] == state["version"]

    # the version as ETag: unchanged state answers 304 without a body; HEAD has the headers and no body
    status, headers304, body = request(server, "GET", "/api/state", {"If-None-Match": headers["etag"]})
    assert (status, body, headers304["etag"]) == (304, b"", headers["etag"])
    status, _, body = request(server, "GET", "/api/state", {"If-None-Match": '"something-else"'})
    assert status == 200 and json.loads(body)["version"] == state["version"]
    status, head, body = request(server, "HEAD", "/api/state")
    assert status == 200 and body == b"" and head["content-length"] == headers["content-length"]
    assert request(server, "GET", "/nothere")[0] == 404


def test_trial_html_is_escaped_in_the_embedded_state(served: tuple[DashboardServer, Counting]) -> None:
    # make_trials gives failed trials the message 'exit code 1 <b>not bold</b>': escaped in the table, and no '<'
    # at all in the JSON embedded in the page's script element
    server, _ = served
    page = request(server, "GET", "/")[2].decode()
    embedded = page.split('id="kubetune-state">', 1)[1].split("</script>", 1)[0]
    assert "<" not in embedded
    assert "&lt;b&gt;not bold&lt;/b&gt;" in json.loads(embedded)["table"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"])
def test_read_only(served: tuple[DashboardServer, Counting], method: str) -> None:
    server, source = served
    before = (source.stamps, source.loads)
    for path in ("/", "/api/state"):
        status, headers, _ = request(server, method, path)
        assert status == 405 and headers["allow"] == "GET, HEAD"
    assert (source.stamps, source.loads) == before


def test_answers_only_to_localhost_when_bound_to_loopback(served: tuple[DashboardServer, Counting]) -> None:
    server, _ = served
    port = server.server_address[1]
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert request(server, "GET", "/api/state", {"Host": host})[0] == 200, host
    for host in ("evil.example", f"evil.example:{port}", "192.168.1.5", f"127.0.0.1.evil.example:{port}"):
        assert request(server, "GET", "/api/state", {"Host": host})[0] == 403, host


def test_binds_127_0_0_1_by_default(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["dashboard", str(run_dir)])
    assert (args.address, args.port, args.interval) == ("127.0.0.1", 8765, 2.0)
    seen: list[tuple[Any, ...]] = []

    def ready(server: DashboardServer) -> None:
        seen.append(server.socket.getsockname())
        threading.Thread(target=server.shutdown, daemon=True).start()

    from kubetune.dashboard import serve

    assert serve(str(run_dir), port=0, ready=ready) == 0
    address, port = seen[0][:2]
    assert address == "127.0.0.1" and port > 0
    url = capsys.readouterr().out.strip()
    assert url == f"http://127.0.0.1:{port}/"


def test_refreshes_only_when_the_source_changed(run_dir: Path) -> None:
    source = Counting(LocalWatch(LocalDirectory(run_dir)))
    live = Live(source, interval=3600)
    assert live.refresh() is True
    first = live.snapshot
    for _ in range(5):
        assert live.refresh() is False
    assert (source.stamps, source.loads) == (6, 1)
    # kubetune run's writers record two more trials: read again, a new version with them
    write_results_dir(run_dir, make_trials(22), finished=False, journal=False)
    assert live.refresh() is True
    second = live.snapshot
    assert source.loads == 2 and second.version != first.version and (first.trials, second.trials) == (20, 22)
    assert rows(json.loads(second.body)["table"]) == list(range(22))
    assert live.refresh() is False and source.loads == 2
    # the same content written again: read (the files changed) but the same version, so no page redraws
    write_results_dir(run_dir, make_trials(22), finished=False, journal=False)
    assert live.refresh() is True and source.loads == 3 and live.snapshot.version == second.version
    # the summary appears: the outcome is in the state
    write_results_dir(run_dir, make_trials(22), finished=True, journal=False)
    assert live.refresh() is True and json.loads(live.snapshot.body)["finished"] is True


def test_requests_never_read_the_source(served: tuple[DashboardServer, Counting], run_dir: Path) -> None:
    server, source = served
    before = (source.stamps, source.loads)
    write_results_dir(run_dir, make_trials(25), finished=False, journal=False)
    for _ in range(10):
        assert json.loads(request(server, "GET", "/api/state")[2])["trials"] == 20
        assert request(server, "GET", "/")[0] == 200
    assert (source.stamps, source.loads) == before
    server.live.poll()  # what the refresh thread does every --interval
    assert json.loads(request(server, "GET", "/api/state")[2])["trials"] == 25


def test_a_source_that_cannot_be_read_now_keeps_the_last_state(run_dir: Path) -> None:
    source = Counting(LocalWatch(LocalDirectory(run_dir)))
    live = Live(source, interval=3600)
    live.refresh()
    good = json.loads(live.snapshot.body)
    source.fail = "cannot reach the cluster: connection refused"
    live.poll()
    bad = json.loads(live.snapshot.body)
    assert bad["error"] == source.fail and bad["version"] != good["version"]
    assert bad["figures"] == good["figures"] and bad["table"] == good["table"]
    source.fail = None
    live.poll()  # the same stamp as before the failure: read again all the same, the error is gone
    assert json.loads(live.snapshot.body)["error"] is None and live.snapshot.version == good["version"]


class FakeCluster:
    """An injected API for ClusterWatch: the experiment object it returns, and the calls made."""

    def __init__(self) -> None:
        self.rv = "1"
        self.gets = 0

    def get_experiment(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        self.gets += 1
        return {"metadata": {"name": name, "uid": "u1", "resourceVersion": self.rv}}


class FakeExperiment:
    def __init__(self, results: ExperimentResults) -> None:
        self.cluster = FakeCluster()
        self.name, self.namespace = "synthetic", "ns"
        self.results = results
        self.loaded_with: list[Any] = []

    def load(self, experiment: dict[str, Any] | None = None) -> ExperimentResults:
        self.loaded_with.append(experiment)
        return self.results


def test_cluster_watch_reads_again_on_a_new_resource_version(tmp_path: Path) -> None:
    finished = load(str(write_results_dir(tmp_path / "done", make_trials(6), journal=False)))
    now = [0.0]
    exp = FakeExperiment(finished)
    source = Counting(ClusterWatch(exp, running_period=10.0, clock=lambda: now[0]))
    live = Live(source, interval=3600)
    assert live.refresh() is True
    assert exp.loaded_with[-1]["metadata"]["resourceVersion"] == "1"  # the object the stamp read, not a new GET
    now[0] = 100.0
    assert live.refresh() is False  # finished: time alone never reads again
    exp.cluster.rv = "2"
    assert live.refresh() is True and source.loads == 2 and exp.cluster.gets == 3
    # while trials run, their reports (pod annotations) are read at most once per running_period
    running = load(str(write_results_dir(tmp_path / "running", make_trials(6), journal=False, finished=False)))
    running.trials[-1].trial.state = running.trials[-1].trial.state.RUNNING
    exp.results = running
    exp.cluster.rv = "3"
    assert live.refresh() is True
    loads = source.loads
    for t in (100.5, 101.0, 105.0, 109.9):
        now[0] = t
        assert live.refresh() is False
    now[0] = 110.0
    assert live.refresh() is True and source.loads == loads + 1


def test_missing_source_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", str(tmp_path / "nothere")]) == 2
    assert capsys.readouterr().err == f"cannot show: {tmp_path / 'nothere'} is not a directory\n"
    (tmp_path / "empty").mkdir()
    assert main(["dashboard", str(tmp_path / "empty")]) == 2
    assert "holds no kubetune run (no experiment.json)" in capsys.readouterr().err
    for bad in (["--port", "70000"], ["--interval", "0"]):
        assert main(["dashboard", str(tmp_path / "empty"), *bad]) == 2


def test_ctrl_c_and_sigterm_exit_0(run_dir: Path) -> None:
    procs = {sig: subprocess.Popen([sys.executable, "-m", "kubetune", "dashboard", str(run_dir), "--port", "0"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig, proc in procs.items():
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()  # printed once the server listens
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
            port = int(url.rsplit(":", 1)[1].strip("/"))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/api/state")
            assert json.loads(conn.getresponse().read())["trials"] == 20
            conn.close()
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert "Traceback" not in err and f"at {url} (read-only; Ctrl-C to stop)" in err
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
