"""A fast trial for the integration tests; behaviour chosen by parameters.

``mode``: ``ok`` (report via the SDK), ``crash`` (exit 3), ``nometric`` (exit 0, report nothing),
``termlog`` (no SDK: write the termination message), ``sleep`` (report steps slowly, honour stop requests).
The objective is ``score = -(x - 0.3)^2``.
"""

import json
import os
import sys
import time

import kubetune_trial as kt

p = kt.params()
mode = str(p.get("mode", "ok"))
x = float(p.get("x", 0.0))
score = -((x - 0.3) ** 2)
seconds = float(os.environ.get("TRIAL_SECONDS", "0"))

if mode == "crash":
    print("crashing on purpose", file=sys.stderr)
    sys.exit(3)
if mode == "nometric":
    sys.exit(0)
if mode == "termlog":
    path = os.environ.get("KUBETUNE_TERMINATION_LOG", "/dev/termination-log")
    with open(path, "w") as f:
        f.write("some log line\n" + json.dumps({"score": score}) + "\n")
    sys.exit(0)
steps = int(os.environ.get("TRIAL_STEPS", "3"))
for step in range(steps):
    time.sleep(seconds / max(steps, 1))
    if not kt.report(step=step, score=score * (steps - step)):
        print("stopping as asked", file=sys.stderr)
        sys.exit(0)
kt.report(score=score, x_seen=x)
