"""Fixtures shared by the unit and integration tests.

* ``browser`` (module): headless Chromium through chromedriver (``tests/support/browser.py``), quit afterwards.

The suite runs in parallel (pytest-xdist, ``-n auto --maxprocesses 4 --dist loadfile`` in ``pyproject.toml``; each
worker starts its own control plane). ``-n 0`` runs it in one process.

Several tests send Ctrl-C (SIGINT) to a ``kubetune`` process they start and check that it stops. A process started in
the background by a non-interactive shell inherits SIGINT *ignored*, and an ignored signal stays ignored across
``exec``, so those commands would never see the Ctrl-C. :func:`pytest_configure` gives this process (and each xdist
worker) Python's own SIGINT handler, which ``exec`` resets to the default in every child: the suite behaves the same
however it was started.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from tests.support.browser import start_browser

    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def _selects_integration(config: pytest.Config) -> bool:
    for arg in config.args or [str(Path(config.rootpath) / "tests")]:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == INTEGRATION_DIR or INTEGRATION_DIR in path.parents or path in INTEGRATION_DIR.parents:
            return True
    return False


def pytest_sessionstart(session: pytest.Session) -> None:
    """With parallel workers, the controller first builds the control-plane binaries (or finds them cached), with
    its progress on the terminal: a worker's output is not shown, and the first build takes minutes. A failure is
    left to the ``control_plane`` fixture, which fails every integration test with the reason."""
    config = session.config
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None) or not _selects_integration(config):
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
    from controlplane import ensure_binaries

    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        with contextlib.suppress(RuntimeError):
            ensure_binaries()
