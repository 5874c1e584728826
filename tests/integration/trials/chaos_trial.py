"""A cheap trial for the chaos tests: one report through the SDK, done in well under a second.

With ``HOLD_FILE`` set, the trial reports a first step and then waits while that file exists (at most two minutes),
so a test can keep trials running while it injects a fault; a stop request (SIGTERM) ends the wait.
The objective is ``score = -(x - 0.3)^2``.
"""

import os
import sys
import time

import kubetune_trial as kt

x = float(kt.params()["x"])
score = -((x - 0.3) ** 2)
hold = os.environ.get("HOLD_FILE")
if hold:
    kt.report(step=0, score=score)  # from here on SIGTERM is a stop request
    deadline = time.monotonic() + 120
    while os.path.exists(hold) and time.monotonic() < deadline:
        if kt.should_stop():
            sys.exit(0)
        time.sleep(0.1)
kt.report(score=score)
