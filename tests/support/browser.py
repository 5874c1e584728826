"""Debian's headless Chromium driven by chromedriver through selenium, shared by the browser tests.

Chromium and chromedriver are required (``apt-get install -y chromium chromium-driver``): without them the tests
fail, they never skip.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")

PLOTS_DRAWN = ("return Array.from(document.querySelectorAll('div[id^=plot-]'))"
               ".every(function (g) { return g._fullLayout !== undefined; })")
"""True once every plot container of a report or dashboard page has been drawn by plotly."""


def chromium_binary() -> str:
    binary = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    if binary is None:
        pytest.fail("the browser tests need Chromium on PATH (Debian: apt-get install -y chromium chromium-driver)")
    return binary


def start_browser() -> webdriver.Chrome:
    binary = chromium_binary()
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        pytest.fail("the browser tests need chromedriver on PATH (Debian: apt-get install -y chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--enable-unsafe-swiftshader", "--disable-gpu-sandbox"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=opts)


def open_page(browser: webdriver.Chrome, url: str | Path, timeout: float = 60) -> None:
    """Load a page (a file path or a URL) and wait until the document and every plot on it are drawn."""
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(url.as_uri() if isinstance(url, Path) else url)
    WebDriverWait(browser, timeout).until(
        lambda d: d.execute_script("return document.readyState") == "complete" and d.execute_script(PLOTS_DRAWN))


def console_errors(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    """What the page logged as an error since the last call (uncaught exceptions included)."""
    return [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR") or "Uncaught" in e["message"]]
