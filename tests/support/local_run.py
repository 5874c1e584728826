"""``kubetune run`` of an experiment document in a subprocess, for the tests of checkpointing algorithms (pbt,
resuming hyperband, pausing asha): the document is written to ``tmp_path``, the run's results go to
``tmp_path / "run"``, the operator and trial SDK sources come first on ``PYTHONPATH``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_local(tmp_path: Path, doc: dict[str, Any], timeout: float = 280,
              **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run ``doc`` with ``kubetune run`` to its end (extra ``env`` vars for the trials); fails unless it exits 0.
    Returns the finished process and the results directory."""
    path = tmp_path / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    full_env = {**os.environ, **env,
                "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT / "trial_image"),
                                               os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "kubetune", "run", str(path), "--out", str(out)], env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, out
