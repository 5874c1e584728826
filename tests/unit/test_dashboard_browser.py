"""The dashboard in a real browser (Debian's headless Chromium through chromedriver and selenium) while
``kubetune run`` writes the results directory: no JavaScript error, every plot drawn, and a trial that finishes
after the page was opened appears on it without a reload (trial count, table row, history point, new plots).

The trials of the run wait for tokens that the test hands out one at a time, so the test decides when a trial
finishes. A dashboard whose source never looks changed is the control: the same wait for the new trial fails on it,
so the live check can catch a dashboard that does not update.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from kubetune.dashboard import DashboardServer, Live, LocalWatch
from kubetune.results import ExperimentResults, LocalDirectory, ResultsError, load
from tests.support.browser import PLOTS_DRAWN, console_errors, open_page
from tests.support.synthetic_results import make_trials, write_results_dir

ROOT = Path(__file__).resolve().parents[2]

PAGE_STATE = """
var plots = Array.from(document.querySelectorAll('div[id^=plot-]'));
var history = document.getElementById('plot-history');
return {trials: document.body.getAttribute('data-trials'), version: document.body.getAttribute('data-version'),
        rows: document.querySelectorAll('#trials tbody tr').length,
        numbers: Array.from(document.querySelectorAll('#trials tbody tr')).map(function (r) {
          return Number(r.cells[0].getAttribute('data-v')); }),
        states: Array.from(document.querySelectorAll('#trials tbody tr')).map(function (r) {
          return r.cells[1].textContent; }),
        plots: plots.map(function (g) { return g.id; }),
        drawn: plots.map(function (g) { return g._fullLayout !== undefined &&
                                               g.querySelectorAll('svg.main-svg').length > 0; }),
        historyPoints: history ? history.querySelectorAll('.scatterlayer .trace:first-child .point').length : 0,
        updates: window.kubetuneDashboard.updates, polls: window.kubetuneDashboard.polls,
        marker: window.__notReloaded === true, live: document.getElementById('live-text').textContent};
"""
"""What the page shows now, read from the DOM (``marker`` is False after a reload)."""


def page_state(browser: webdriver.Chrome) -> dict[str, Any]:
    state: dict[str, Any] = browser.execute_script(PAGE_STATE)
    return state


def mark_page(browser: webdriver.Chrome) -> None:
    """Set a flag on the window that a reload would drop."""
    browser.execute_script("window.__notReloaded = true;")


def wait_for_rows(browser: webdriver.Chrome, n: int, timeout: float, key: str = "rows") -> dict[str, Any]:
    """Wait until the page's trial table has ``n`` rows (or ``key`` of the page state is ``n``) and every plot is
    drawn; the page state then."""
    WebDriverWait(browser, timeout, poll_frequency=0.2).until(
        lambda d: page_state(d)[key] == n and d.execute_script(PLOTS_DRAWN))
    return page_state(browser)


def wait_for_succeeded(browser: webdriver.Chrome, n: int, timeout: float) -> dict[str, Any]:
    """Wait until the optimization history shows ``n`` succeeded trials; the page state then."""
    return wait_for_rows(browser, n, timeout, key="historyPoints")


def leave(browser: webdriver.Chrome) -> None:
    """Navigate away before a dashboard stops, so its page's next poll cannot log an error into the next test."""
    browser.get("about:blank")


@contextlib.contextmanager
def serving(browser: webdriver.Chrome, live: Live, refresh: bool = True) -> Iterator[DashboardServer]:
    """A dashboard server for ``live`` in this process (and its refresh thread unless ``refresh`` is False)."""
    server = DashboardServer(("127.0.0.1", 0), live)
    stop = threading.Event()
    threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)]
    if refresh:
        threads.append(threading.Thread(target=live.run, args=(stop,), daemon=True))
    for t in threads:
        t.start()
    try:
        yield server
    finally:
        leave(browser)
        stop.set()
        server.shutdown()
        server.server_close()
        for t in threads:
            t.join(timeout=30)


class DashboardProcess:
    """``kubetune dashboard SOURCE --port 0`` as its own process; ``url`` is the line it prints."""

    def __init__(self, source: str, interval: float = 0.5, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubetune", "dashboard", source, "--port", "0", "--interval", str(interval)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not re.fullmatch(r"http://127\.0\.0\.1:\d+/", self.url):
            self.proc.kill()
            raise AssertionError(f"no URL from kubetune dashboard: {self.url!r} {self.proc.communicate()[1]}")

    def stop(self) -> tuple[int, str]:
        """Ctrl-C; the exit code and stderr."""
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, err


TRIAL = """
    import os, sys, time
    from pathlib import Path
    import kubetune_trial as kt

    p = kt.params()
    x, lr, opt = float(p["x"]), float(p["lr"]), str(p["opt"])
    gate = Path(os.environ["GATE"])
    deadline = time.monotonic() + 300
    while True:  # wait for a token from the test: the test decides when each trial finishes
        claimed = False
        for token in sorted(gate.glob("token-*")):
            try:
                os.rename(token, gate / ("used-" + token.name))
                claimed = True
                break
            except FileNotFoundError:
                continue
        if claimed:
            break
        if time.monotonic() > deadline:
            sys.exit("no token")
        time.sleep(0.05)
    acc = 1.0 - (x - 0.3) ** 2 - 0.1 * abs(lr - 0.01) - {"a": 0.0, "b": 0.05}[opt]
    for step in range(3):
        kt.report(step=step, acc=acc * (step + 1) / 3)
    kt.report(acc=acc)
"""


def tiny_experiment(tmp_path: Path, trials: int) -> tuple[Path, Path]:
    """A tiny experiment whose trials wait for tokens in ``gate/``; the file and the gate."""
    gate = tmp_path / "gate"
    gate.mkdir()
    (tmp_path / "trial.py").write_text(textwrap.dedent(TRIAL))
    doc = {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": "tiny"},
        "spec": {
            "objective": {"metric": "acc", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0},
                           {"name": "lr", "type": "float", "min": 1e-4, "max": 1.0, "scale": "log"},
                           {"name": "opt", "type": "categorical", "values": ["a", "b"]}],
            "algorithm": {"name": "random", "seed": 5},
            "maxTrials": trials, "parallelTrials": 1,
            "trialTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{
                "name": "trial", "image": "unused:1", "command": ["python", str(tmp_path / "trial.py")],
                "env": [{"name": "GATE", "value": str(gate)}]}]}}}},
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, gate


def release(gate: Path, n: int) -> None:
    """Hand out ``n`` more tokens (each lets one trial finish)."""
    start = len(list(gate.iterdir()))
    for i in range(start, start + n):
        (gate / f"tmp-{i:04d}").write_text("")
        os.rename(gate / f"tmp-{i:04d}", gate / f"token-{i:04d}")


def finished(out: Path) -> int:
    try:
        return sum(1 for r in load(str(out)).trials if r.state.finished)
    except ResultsError:  # experiment.json not written yet
        return 0


def wait_until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_live_update_while_kubetune_run_writes(browser: webdriver.Chrome, tmp_path: Path) -> None:
    path, gate = tiny_experiment(tmp_path, trials=5)
    out = tmp_path / "out"
    release(gate, 3)
    run = subprocess.Popen([sys.executable, "-m", "kubetune", "run", str(path), "--out", str(out), "--quiet"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dash: DashboardProcess | None = None
    try:
        wait_until("3 finished trials", lambda: finished(out) == 3, timeout=120)
        dash = DashboardProcess(str(out), interval=0.5)
        open_page(browser, dash.url)
        assert console_errors(browser) == []
        # 3 trials finished, the 4th launched and waiting for its token: the table shows it running
        before = wait_for_succeeded(browser, 3, timeout=60)
        assert before["trials"] == "4" and before["numbers"] == [0, 1, 2, 3], before
        assert before["states"] == ["Succeeded"] * 3 + ["Running"], before
        assert all(before["drawn"]) and "plot-history" in before["plots"] and "plot-curves" in before["plots"]
        assert "plot-importance" not in before["plots"]  # needs 4 succeeded trials
        mark_page(browser)

        release(gate, 1)  # trial 3 finishes (trial 4 starts and waits)
        after = wait_for_succeeded(browser, 4, timeout=90)
        assert after["marker"], "the page was reloaded"
        assert after["updates"] > before["updates"] and after["version"] != before["version"]
        WebDriverWait(browser, 60, poll_frequency=0.2).until(lambda d: page_state(d)["rows"] == 5)
        after = page_state(browser)
        assert after["numbers"] == [0, 1, 2, 3, 4] and after["states"] == ["Succeeded"] * 4 + ["Running"], after
        # importance and the map of the two most important parameters appear once 4 trials succeeded
        assert {"plot-importance", "plot-contour"} <= set(after["plots"]) and all(after["drawn"])
        assert [p for p in after["plots"] if p in before["plots"]] == before["plots"]
        assert console_errors(browser) == []

        release(gate, 1)  # the last trial: the run ends and says so
        assert run.wait(timeout=120) == 0, run.communicate()[1]
        final = wait_for_succeeded(browser, 5, timeout=90)
        WebDriverWait(browser, 60, poll_frequency=0.2).until(
            lambda d: "experiment finished" in page_state(d)["live"])
        final = page_state(browser)
        assert final["marker"] and final["states"] == ["Succeeded"] * 5 and all(final["drawn"])
        assert final["numbers"] == [r.number for r in load(str(out)).trials] == [0, 1, 2, 3, 4]
        assert console_errors(browser) == []
        png = tmp_path / "dashboard.png"
        browser.save_screenshot(str(png))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        leave(browser)
        code, err = dash.stop()
        dash = None
        assert code == 0 and "Traceback" not in err, err
    finally:
        if dash is not None:
            leave(browser)
            dash.stop()
        if run.poll() is None:
            run.kill()
            run.wait()


class Frozen:
    """A source whose stamp never changes: a dashboard with live update broken."""

    def __init__(self, inner: LocalWatch) -> None:
        self.inner = inner

    def stamp(self) -> Hashable:
        return "always the same"

    def load(self) -> ExperimentResults:
        return self.inner.load()


@pytest.mark.parametrize("broken", [False, True], ids=["live", "frozen"])
def test_the_live_check_fails_on_a_dashboard_that_does_not_update(browser: webdriver.Chrome, tmp_path: Path,
                                                                   broken: bool) -> None:
    out = write_results_dir(tmp_path / "run", make_trials(8), finished=False)
    watched = LocalWatch(LocalDirectory(out))
    live = Live(Frozen(watched) if broken else watched, interval=0.3)
    live.refresh()
    with serving(browser, live) as server:
        open_page(browser, server.url)
        assert wait_for_rows(browser, 8, timeout=60)["numbers"] == list(range(8))
        write_results_dir(out, make_trials(9), finished=False, journal=False)  # one more trial recorded
        if broken:
            with pytest.raises(TimeoutException):
                wait_for_rows(browser, 9, timeout=8)
            assert page_state(browser)["polls"] >= 3  # the page kept asking; the server had nothing new
        else:
            assert wait_for_rows(browser, 9, timeout=60)["numbers"] == list(range(9))
        assert console_errors(browser) == []


def test_sorting_survives_an_update(browser: webdriver.Chrome, tmp_path: Path) -> None:
    out = write_results_dir(tmp_path / "run", make_trials(10), finished=False)
    live = Live(LocalWatch(LocalDirectory(out)), interval=0.3)
    live.refresh()
    with serving(browser, live) as server:
        open_page(browser, server.url)
        headers = [h.text.strip() for h in browser.find_elements(By.CSS_SELECTOR, "#trials thead th")]
        browser.find_elements(By.CSS_SELECTOR, "#trials thead th")[0].click()
        browser.find_elements(By.CSS_SELECTOR, "#trials thead th")[0].click()  # trial number, descending
        assert page_state(browser)["numbers"] == list(range(9, -1, -1))
        write_results_dir(out, make_trials(12), finished=False, journal=False)
        state = wait_for_rows(browser, 12, timeout=60)
        assert state["numbers"] == list(range(11, -1, -1))
        th = browser.find_elements(By.CSS_SELECTOR, "#trials thead th")[0]
        assert th.get_attribute("aria-sort") == "descending" and headers[0] == "#"
        assert console_errors(browser) == []


def screenshot(browser: webdriver.Chrome, url: str, path: Path) -> None:
    """The page as a PNG: the window made as tall as the page, at most 2,200 pixels."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 40, 2200))
    try:
        open_page(browser, url)
        browser.save_screenshot(str(path))
    finally:
        browser.set_window_size(1280, 1000)


def test_screenshot_of_a_dashboard(browser: webdriver.Chrome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                  ) -> None:
    # docs/img/dashboard.png is made by this test with KUBETUNE_DOCS_IMAGES=$PWD/docs/img
    target = os.environ.get("KUBETUNE_DOCS_IMAGES")
    monkeypatch.chdir(tmp_path)
    out = write_results_dir(Path("kubetune-runs/synthetic"), make_trials(60), finished=False, max_trials=100)
    live = Live(LocalWatch(LocalDirectory(out)), interval=2)  # the page polls; the source is not watched here
    live.refresh()
    with serving(browser, live, refresh=False) as server:
        open_page(browser, server.url)
        png = tmp_path / "dashboard.png"
        screenshot(browser, server.url, png)
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
        assert console_errors(browser) == []
        if target:
            shutil.copy(png, Path(target) / "dashboard.png")
