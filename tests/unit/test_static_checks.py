"""Static checks run with the tests: ruff over the repository and strict mypy over the package.

Their configuration is in pyproject.toml; both tools come with the ``test`` extra.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    proc = _run("ruff", "check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]


def test_mypy_strict_on_the_package() -> None:
    proc = _run("mypy")  # files, strictness and plugins from [tool.mypy]
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert "Success" in proc.stdout
