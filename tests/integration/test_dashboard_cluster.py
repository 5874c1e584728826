"""``kubetune dashboard tex/NS/NAME`` and ``kubetune report tex/NS/NAME`` for an experiment the operator runs on the
real control plane (with the node agent running the trial pods), opened in headless Chromium: every plot drawn, no
console error, and trials that finish after the page was opened appear on it without a reload.

The trials wait for tokens the test hands out (as in ``tests/unit/test_dashboard_browser.py``), so the test
decides when each one finishes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_process import Experiments, OperatorProcess, wait_for
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from kubetune.cli import main
from kubetune.report import build
from kubetune.results import load
from tests.support.browser import PLOTS_DRAWN, console_errors, open_page
from tests.unit.test_dashboard_browser import (
    DashboardProcess,
    leave,
    mark_page,
    page_state,
    release,
    wait_for_succeeded,
)

GATED = """
    import os, sys, time
    from pathlib import Path
    import kubetune_trial as kt

    p = kt.params()
    x = float(p["x"])
    gate = Path(os.environ["GATE"])
    deadline = time.monotonic() + 300
    while True:  # wait for a token from the test
        token = next(iter(sorted(gate.glob("token-*"))), None)
        if token is not None:
            try:
                os.rename(token, gate / ("used-" + token.name))
                break
            except FileNotFoundError:
                pass
        if time.monotonic() > deadline:
            sys.exit("no token")
        time.sleep(0.05)
    score = -((x - 0.3) ** 2) - {"a": 0.0, "b": 0.02}[str(p["kind"])]
    for step in range(3):
        kt.report(step=step, score=score * (3 - step))
    kt.report(score=score)
"""


def gated_experiment(name: str, tmp_path: Path, trials: int) -> tuple[dict[str, Any], Path]:
    gate = tmp_path / "gate"
    gate.mkdir()
    script = tmp_path / "gated.py"
    script.write_text(textwrap.dedent(GATED))
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "score", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0},
                           {"name": "kind", "type": "categorical", "values": ["a", "b"]}],
            "algorithm": {"name": "random", "seed": 7},
            "maxTrials": trials, "parallelTrials": 1,
            "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "serviceAccountName": "kubetune-trial", "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "trial", "image": "kubetune-trial:test",
                                "command": ["python", str(script)],
                                "env": [{"name": "GATE", "value": str(gate)}]}]}}}},
        },
    }, gate


def succeeded(ex: Experiments, name: str) -> int:
    return sum(1 for r in ex.records(name).values() if r["state"] == "Succeeded")


def test_dashboard_and_report_of_an_operator_run_experiment(
        op: OperatorProcess, ns: str, control_plane: Any, kube_api: client.ApiClient, browser: webdriver.Chrome,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ex = Experiments(kube_api, ns)
    body, gate = gated_experiment("live", tmp_path, trials=5)
    release(gate, 3)
    ex.create(body)
    wait_for("3 succeeded trials", lambda: succeeded(ex, "live") == 3, timeout=180, interval=0.5,
             on_timeout=op.log_tail)
    dash = DashboardProcess(f"tex/{ns}/live", interval=0.5, env={"KUBECONFIG": str(control_plane.kubeconfig)})
    try:
        open_page(browser, dash.url)
        assert console_errors(browser) == []
        before = wait_for_succeeded(browser, 3, timeout=60)
        assert all(before["drawn"]) and {"plot-history", "plot-slices", "plot-curves"} <= set(before["plots"])
        assert before["numbers"][:3] == [0, 1, 2] and before["states"][:3] == ["Succeeded"] * 3, before
        mark_page(browser)

        release(gate, 1)  # one more trial finishes: the operator records it and patches the status
        after = wait_for_succeeded(browser, 4, timeout=120)
        assert after["marker"], "the page was reloaded"
        assert after["updates"] > before["updates"] and after["version"] != before["version"]
        assert {"plot-importance", "plot-contour"} <= set(after["plots"]) and all(after["drawn"])
        assert console_errors(browser) == []

        release(gate, 1)
        wait_for("the experiment to finish", lambda: ex.finished("live"), timeout=180, interval=0.5,
                 on_timeout=op.log_tail)
        final = wait_for_succeeded(browser, 5, timeout=120)
        WebDriverWait(browser, 60, poll_frequency=0.2).until(
            lambda d: "experiment finished" in page_state(d)["live"])
        records = ex.records("live")
        final = page_state(browser)
        assert final["marker"] and final["numbers"] == sorted(records) == [0, 1, 2, 3, 4]
        assert final["states"] == ["Succeeded"] * 5 and all(final["drawn"])
        assert console_errors(browser) == []
    finally:
        leave(browser)
        code, err = dash.stop()
    assert code == 0 and "Traceback" not in err, err

    # the static report of the same experiment, through the same results API, in the same browser
    page = tmp_path / "live.html"
    capsys.readouterr()
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))  # --kubeconfig is what is read
    assert main(["report", f"tex/{ns}/live", "-o", str(page), "--kubeconfig", str(control_plane.kubeconfig)]) == 0, \
        capsys.readouterr().err
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    report = build(load(f"tex/{ns}/live"))
    open_page(browser, page)
    assert console_errors(browser) == []
    drawn = browser.execute_script("""
        return Array.from(document.querySelectorAll('div[id^=plot-]')).map(function (g) {
          return {id: g.id, traces: g._fullData.length, svg: g.querySelectorAll('svg.main-svg').length,
                  points: g.querySelectorAll('.scatterlayer .trace:first-child .point').length};
        });""")
    assert browser.execute_script(PLOTS_DRAWN)
    assert sorted(d["id"] for d in drawn) == sorted(f"plot-{name}" for name in report.figures)
    for d in drawn:
        assert d["svg"] >= 1 and d["traces"] == len(report.figures[d["id"][5:]].data), d
    assert next(d for d in drawn if d["id"] == "plot-history")["points"] == 5
    rows = browser.execute_script("return document.querySelectorAll('#trials tbody tr').length")
    assert rows == 5

    # an experiment that is not there: one line and exit 2, as for a missing results directory
    capsys.readouterr()
    assert main(["dashboard", f"tex/{ns}/nothere", "--port", "0"]) == 2
    assert capsys.readouterr().err == 'cannot show: tuningexperiments.kubetune.io "nothere" not found\n'
