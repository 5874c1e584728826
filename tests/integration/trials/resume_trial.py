"""A trial that trains ``epochs`` steps of one configuration, resuming from the checkpoint kubetune names.

It restores ``state.json`` from ``KUBETUNE_RESTORE_DIR`` (exit 3 when it is missing or holds another step than
``KUBETUNE_RESTORE_STEP``), trains the steps after it up to ``KUBETUNE_END_STEP`` or else ``epochs`` (0.05 s
each), writes ``state.json`` (every step this configuration's chain of trials trained, in order) to its own
checkpoint directory before reporting each step, and ``seen.json`` with the checkpoint env vars it was given.
"""

import json
import os
import sys
import time

import kubetune_trial as kt

p = kt.params()
epochs = kt.end_step() or int(p["epochs"])  # a segment that pauses at a rung is told where to end
x = float(p["x"])
own = kt.checkpoint_dir()
if own is None:
    sys.exit(4)
state = {"x": x, "steps": []}
start = 0
if kt.restore_dir():
    try:
        with open(os.path.join(kt.restore_dir(), "state.json")) as f:
            state = json.load(f)
    except OSError:
        sys.exit(3)
    start = kt.restore_step()
    if not state["steps"] or state["steps"][-1] != start or state["x"] != x:
        sys.exit(3)
with open(os.path.join(own, "seen.json"), "w") as f:
    json.dump({k: os.environ.get(k) for k in ("KUBETUNE_CHECKPOINT_DIR", "KUBETUNE_RESTORE_DIR",
                                              "KUBETUNE_RESTORE_STEP", "KUBETUNE_END_STEP")}, f)
for step in range(start + 1, epochs + 1):
    time.sleep(0.05)
    state["steps"].append(step)
    with open(os.path.join(own, "state.json.tmp"), "w") as f:
        json.dump(state, f)
    os.replace(os.path.join(own, "state.json.tmp"), os.path.join(own, "state.json"))
    kt.report(step=step, q=-((x - 0.3) ** 2) * 9 / step)
kt.report(q=-((x - 0.3) ** 2) * 9 / epochs)
