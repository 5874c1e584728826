"""Bounded memory over time: 2,000 trials through one experiment leave nothing behind but their records.

The reconciler runs against the in-memory API server of ``tests/support/fake_api.py`` (no faults, short trials,
the watch events of a real cluster in its order: a deleted Job's pods end and go after the Job). Memory is measured
with ``tracemalloc`` at quiet points (the experiment finished, nothing running, every event delivered) after the
budget is raised from 250 to 1,000 to 2,000 trials. What must grow is the records (the operator's ``records``
dict and the server's ConfigMaps): both are moved out of the process while measuring (pickled to a file) and
brought back after, so the number measured is everything else the process holds.

The scenario runs in a fresh interpreter (a child process): tracemalloc counts every allocation of the process, and
a test process that ran other tests first may still hold their session-wide threads (the control plane's node agent,
watches of a real cluster) allocating while the reconciler is measured.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pickle
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

from kubetune.k8s.reconciler import KEEP_FINISHED_JOBS
from tests.unit.test_reconciler_faults import Harness, check, experiment

PARALLEL = 20
BUDGETS = (250, 1000, 2000)
"""Tracing starts after a warm-up of 250 trials; by 1,000 the bounded structures made before it have been replaced
and the interpreter's caches have filled (that turnover is not growth); growth is measured from 1,000 to 2,000."""
MAX_GROWTH_PER_1000_TRIALS = 48 * 1024
"""Bytes. One leaked object per trial (a pod summary, a set entry, a name) costs at least ~100 bytes: 100 KB."""


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def traced_without_records(h: Harness) -> tuple[int, tracemalloc.Snapshot]:
    """Traced bytes with the records out of the process (pickled to a file, then loaded back)."""
    worker = h.worker
    assert worker is not None
    with tempfile.TemporaryFile() as f:
        pickle.dump((worker.records, h.fake.ledger), f)
        worker.records, h.fake.ledger = None, None  # type: ignore[assignment]
        gc.collect()
        current = tracemalloc.get_traced_memory()[0]
        snapshot = tracemalloc.take_snapshot()
        f.seek(0)
        worker.records, h.fake.ledger = pickle.load(f)
    return current, snapshot


def measure() -> dict[str, Any]:
    """The scenario (run in a child process by the test): what was measured, and the checks' inputs."""
    body = experiment(algorithm={"name": "random", "seed": 17}, max_trials=BUDGETS[0], parallel=PARALLEL)
    h = Harness(body, seed=17, run_ticks=(0, 1), steps=1, fail_rate=0.05, quick=True)
    rss_before = rss_kib()
    measured: list[tuple[int, int]] = []
    snapshots: list[tracemalloc.Snapshot] = []

    async def go() -> None:
        for budget in BUDGETS:
            if budget != BUDGETS[0]:
                h.fake.update_spec(maxTrials=budget)
            await h.settle(max_steps=budget)
            worker = h.worker
            assert worker is not None and worker.records is not None and len(worker.records) == budget
            view = h.reconciler.state.views[h.fake.key]
            assert len(view.jobs) <= KEEP_FINISHED_JOBS and len(view.pods) <= KEEP_FINISHED_JOBS
            assert worker.seen == set()
            if budget == BUDGETS[0]:
                tracemalloc.start(1)  # after a warm-up (imports, caches, code paths)
            current, snapshot = traced_without_records(h)
            measured.append((budget, current))
            snapshots.append(snapshot)
        check(h, {**body, "spec": {**body["spec"], "maxTrials": BUDGETS[-1]}})  # after measuring
        # the experiment goes: its worker, view and everything kept for it go too
        h.fake.delete_experiment()
        for _ in range(3):
            h.fake.deliver(h.reconciler)
            h.fake.tick()
        h.fake.deliver(h.reconciler)

    try:
        asyncio.run(go())
        rss_after = rss_kib()
    finally:
        tracemalloc.stop()
    top = snapshots[-1].compare_to(snapshots[-2], "traceback")[:8]
    return {
        "measured": measured, "rss": [rss_before, rss_after], "reconciles": h.steps,
        "top": [f"{s.size_diff:+} B in {s.count_diff:+} blocks at {s.traceback}" for s in top],
        "left": [len(h.reconciler.workers), len(h.reconciler.state.views), len(h.reconciler.state.experiments)],
        "creations": dict(h.fake.ledger.creations),
    }


def test_memory_stays_flat_over_2000_trials_and_goes_with_the_experiment() -> None:
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root / "operator"), str(root / "trial_image"), str(root),
                            os.environ.get("PYTHONPATH", "")])
    child = subprocess.run(
        [sys.executable, "-c", "import json; from tests.unit.test_reconciler_memory import measure; "
                               "print('MEASURED ' + json.dumps(measure()))"],
        cwd=root, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-8000:]
    out = json.loads(child.stdout.split("MEASURED ", 1)[1])
    measured = out["measured"]
    _, (b1, m1), (b2, m2) = measured
    per_1000 = (m2 - m1) * 1000 / (b2 - b1)
    rss_before, rss_after = out["rss"]
    print(f"\nmemory: traced without records {', '.join(f'{b} trials {m / 1024:.0f} KiB' for b, m in measured)}; "
          f"growth {per_1000 / 1024:.1f} KiB per 1000 trials; RSS {rss_before / 1024:.0f} MiB before, "
          f"{rss_after / 1024:.0f} MiB after; {out['reconciles']} reconciles")
    print("largest differences:\n" + "\n".join(f"  {line}" for line in out["top"]))
    assert per_1000 < MAX_GROWTH_PER_1000_TRIALS
    assert out["left"] == [0, 0, 0]  # workers, views, experiments
    assert out["creations"] == {f"exp-{i:04d}": 1 for i in range(BUDGETS[-1])}
