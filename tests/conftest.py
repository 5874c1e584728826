"""Fixtures shared by the unit and integration tests.

* ``browser`` (module): headless Chromium through chromedriver (``tests/support/browser.py``), quit afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from tests.support.browser import start_browser

    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()
