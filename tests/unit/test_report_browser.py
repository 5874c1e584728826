"""The report in a real browser: Debian's headless Chromium driven by chromedriver through selenium.

No JavaScript error in the console, every plot drawn (an SVG with its data traces), the trial table sorts on a
click. Chromium and chromedriver are required (``apt-get install chromium chromium-driver``): without them these
tests fail, they never skip.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from kubetune.report import build
from kubetune.results import load
from tests.support.browser import CHROMIUM, console_errors, open_page
from tests.support.synthetic_results import make_trials, write_results_dir


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = write_results_dir(tmp_path_factory.mktemp("report") / "run", make_trials(80))
    report = build(load(str(out)))
    page = out / "report.html"
    page.write_text(report.html)
    return page, report


def _open(browser: webdriver.Chrome, page: Path) -> None:
    open_page(browser, page)


def test_no_console_errors_and_every_plot_drawn(browser: webdriver.Chrome, report_page: tuple[Path, object]) -> None:
    page, report = report_page
    _open(browser, page)
    errors = console_errors(browser)
    assert errors == [], errors
    figures = report.figures  # type: ignore[attr-defined]
    drawn = browser.execute_script("""
        return Array.from(document.querySelectorAll('div[id^=plot-]')).map(function (g) {
          return {id: g.id, svg: g.querySelectorAll('svg.main-svg').length, traces: g._fullData.length,
                  scatter: g.querySelectorAll('.scatterlayer .trace').length,
                  points: g.querySelectorAll('.scatterlayer .point').length,
                  lines: g.querySelectorAll('.scatterlayer .js-line').length,
                  bars: g.querySelectorAll('.barlayer .point path').length,
                  heatmap: g.querySelectorAll('.heatmaplayer image, .hm image').length,
                  axes: g.querySelectorAll('.parcoords .y-axis').length,
                  width: g.getBoundingClientRect().width, height: g.getBoundingClientRect().height};
        });""")
    by_id = {d["id"]: d for d in drawn}
    assert sorted(by_id) == sorted(f"plot-{name}" for name in figures)
    for name, fig in figures.items():
        d = by_id[f"plot-{name}"]
        assert d["svg"] >= 1 and d["width"] > 300 and d["height"] > 200, d
        assert d["traces"] == len(fig.data), d
    n_scored = sum(1 for t in make_trials(80) if t.state.value == "Succeeded")
    assert by_id["plot-history"]["points"] >= n_scored
    assert by_id["plot-history"]["lines"] >= 1
    assert by_id["plot-slices"]["points"] == 4 * n_scored  # one marker per trial in each parameter's slice
    assert by_id["plot-importance"]["bars"] == 4
    assert by_id["plot-contour"]["heatmap"] == 1 and by_id["plot-contour"]["points"] == n_scored
    assert by_id["plot-parallel"]["axes"] == 5  # 4 parameters and the objective
    assert by_id["plot-curves"]["lines"] >= 50


def _column(browser: webdriver.Chrome, index: int) -> list[str]:
    return browser.execute_script(
        "var k = arguments[0];"
        "return Array.from(document.querySelectorAll('#trials tbody tr')).map(function (r) {"
        "  var c = r.cells[k]; var v = c.getAttribute('data-v'); return v === null ? c.textContent : v;"
        "});", index)


def _numbers(values: list[str]) -> list[float]:
    return [float(v) if v else math.nan for v in values]


def test_table_sorts_on_click(browser: webdriver.Chrome, report_page: tuple[Path, object]) -> None:
    page, _ = report_page
    _open(browser, page)
    headers = [h.text.strip() for h in browser.find_elements(By.CSS_SELECTOR, "#trials thead th")]
    acc = headers.index("accuracy")
    before = _numbers(_column(browser, acc))
    assert len(before) == 80
    header = browser.find_elements(By.CSS_SELECTOR, "#trials thead th")[acc]
    header.click()
    up = _numbers(_column(browser, acc))
    numbers = sorted(v for v in before if not math.isnan(v))
    assert up[:len(numbers)] == numbers and all(math.isnan(v) for v in up[len(numbers):])
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    down = _numbers(_column(browser, acc))
    assert down[:len(numbers)] == numbers[::-1]
    # a text column sorts as text, and the trial number column back to the original order
    state = headers.index("state")
    browser.find_elements(By.CSS_SELECTOR, "#trials thead th")[state].click()
    states = _column(browser, state)
    assert states == sorted(states)
    browser.find_elements(By.CSS_SELECTOR, "#trials thead th")[0].click()
    assert _numbers(_column(browser, 0)) == [float(i) for i in range(80)]


def test_the_console_check_sees_a_script_error(browser: webdriver.Chrome, tmp_path: Path) -> None:
    # the same page with one failing script: the check above must have something to catch
    page = tmp_path / "broken.html"
    out = write_results_dir(tmp_path / "run", make_trials(12), journal=False)
    report = build(load(str(out)))
    page.write_text(report.html.replace("</body>", "<script>notAFunction();</script></body>"))
    _open(browser, page)
    assert any("notAFunction" in e["message"] and e["level"] == "SEVERE" for e in browser.get_log("browser"))


def test_png_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # kubetune report --png: kaleido drives the installed Chromium; each plot becomes a PNG of the layout's size
    import struct

    from kubetune.cli import main
    from kubetune.report.png import WIDTH

    if not any(map(shutil.which, CHROMIUM)):
        pytest.fail("--png needs Chromium on PATH (Debian: apt-get install -y chromium)")
    out = write_results_dir(tmp_path / "run", make_trials(30), journal=False)
    assert main(["report", str(out), "--png", str(tmp_path / "png")]) == 0, capsys.readouterr().err
    report = build(load(str(out)))
    files = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert files == sorted(f"{name}.png" for name in report.figures)
    for name, fig in report.figures.items():
        data = (tmp_path / "png" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        assert (width, height) == (WIDTH, fig.layout.height)
        assert len(data) > 10_000  # a drawn plot, not an empty canvas


def test_png_export_renders_a_dropped_image_again_and_fails_when_it_stays_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # kaleido returns a failed render as a value plotly drops: write_images returns, the file is not there. Fault
    # injection around the real export: the first call drops one image (and a stale file of that name must not
    # count), the retry renders it; a figure that is never written ends in an error naming it.
    import plotly.io as pio

    from kubetune.report.png import PngExportError, write_pngs

    if not any(map(shutil.which, CHROMIUM)):
        pytest.fail("--png needs Chromium on PATH (Debian: apt-get install -y chromium)")
    figs = dict(list(build(load(str(write_results_dir(tmp_path / "run", make_trials(20), journal=False))))
                     .figures.items())[:2])
    first, second = list(figs)
    real = pio.write_images
    calls: list[list[str]] = []

    def dropping(figures: list[object], paths: list[Path], **kw: object) -> None:
        calls.append([Path(p).stem for p in paths])
        keep = [(f, p, h) for f, p, h in zip(figures, paths, kw.pop("height"), strict=True)  # type: ignore[call-overload]
                if not (Path(p).stem == second and (len(calls) == 1 or drop_always))]
        if keep:
            real([f for f, _, _ in keep], [p for _, p, _ in keep], height=[h for _, _, h in keep], **kw)

    monkeypatch.setattr(pio, "write_images", dropping)
    out = tmp_path / "png"
    out.mkdir()
    (out / f"{second}.png").write_bytes(b"stale")
    # The real export may drop an image of its own on a busy machine (that is what the retry is for), so a call may
    # name ``first`` again; ``second`` is in every call until it is written.
    drop_always = False
    paths = write_pngs(figs, out)
    assert calls[0] == [first, second] and calls[1][-1:] == [second] and len(calls) >= 2
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)

    calls.clear()
    drop_always = True
    with pytest.raises(PngExportError, match=f"no image for ({first}, )?{second} \\(tried 3 times\\)"):
        write_pngs(figs, tmp_path / "png2", attempts=3)
    assert calls[0] == [first, second] and [c[-1] for c in calls] == [second] * 3
