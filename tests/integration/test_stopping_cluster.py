"""Stopping criteria on the real control plane: a no-improvement stop, a wall-clock budget that ends the experiment
with nothing else happening, and a per-trial time limit enforced by the real Job controller (activeDeadlineSeconds)
with the node agent ending the trial's process. Jobs are counted by uid, processes by the node agent's launches."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_process import Experiments, OperatorProcess, script_experiment, wait_for

from kubetune.plan import without_improvement
from kubetune.spec import ExperimentSpec
from kubetune.trials import Trial

TRIAL = """
    import os, time
    import kubetune_trial as kt
    x = float(kt.params()["x"])
    with open(os.environ["PIDS"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    if x >= float(os.environ.get("SLOW_FROM", "2")):
        time.sleep(300)  # silent: no report, so nothing but the operator's own timer can end the experiment
    kt.report(score=-(x - 0.3) ** 2)
"""


@pytest.fixture(scope="module")
def trial_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stopping") / "trial.py"
    path.write_text(textwrap.dedent(TRIAL))
    return path


def experiment(name: str, script: Path, *, max_trials: int, env: dict[str, str] | None = None,
               **spec: Any) -> dict[str, Any]:
    return script_experiment(name, ["python", str(script)], {
        "objective": {"metric": "score", "goal": "maximize"},
        # the grid takes x = 0, 0.1, 0.2, ... in trial-number order
        "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0, "step": 0.1}],
        "algorithm": {"name": "grid"},
        "maxTrials": max_trials,
        "parallelTrials": 1,
        **spec,
    }, env={"PIDS": str(script.parent / f"{name}.pids"), **(env or {})})


def _debug(ex: Experiments, op: OperatorProcess, name: str) -> str:
    return f"status: {ex.get(name).get('status')}\noperator log:\n{op.log_tail(40)}"


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _job_uids(node_agent: Any, ns: str, name: str) -> set[str]:
    return {x.job_uid for x in node_agent.launches(ns) if x.trial.startswith(f"{name}-")}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] == "Z"


def test_no_improvement_stops_at_the_known_trial(op: OperatorProcess, ns: str, kube_api: client.ApiClient,
                                                 node_agent: Any, trial_script: Path) -> None:
    # scores -(x - 0.3)^2: trials 0..3 (x = 0 .. 0.3) improve, 4, 5, 6 do not: the seventh trial is the last
    ex = Experiments(kube_api, ns)
    body = experiment("plateau", trial_script, max_trials=11, stopping={"noImprovement": {"trials": 3}})
    ex.create(body)
    done = wait_for("the experiment to finish", lambda: ex.finished("plateau"), timeout=240,
                    on_timeout=lambda: _debug(ex, op, "plateau"))
    assert (done["status"], done["reason"]) == ("True", "NoImprovement"), done
    assert done["message"].startswith("3 trials in a row did not improve score (stopping.noImprovement.trials=3)")
    records = ex.records("plateau")
    assert sorted(records) == list(range(7))
    assert [round(records[n]["params"]["x"], 6) for n in range(7)] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    spec = ExperimentSpec.model_validate(body["spec"])
    trials = [Trial.from_record(r) for r in records.values()]
    assert without_improvement(spec, trials) == 3
    assert all(without_improvement(spec, trials[:k]) < 3 for k in range(1, 7))
    status = ex.get("plateau")["status"]
    assert status["bestTrial"]["number"] == 3
    assert status["trials"]["created"] == 7
    assert len(_job_uids(node_agent, ns, "plateau")) == 7  # seven Jobs ran a process, no more


def test_time_budget_ends_the_experiment_without_waiting_for_a_resync(
        op: OperatorProcess, ns: str, kube_api: client.ApiClient, node_agent: Any, trial_script: Path) -> None:
    # trial 0 (x = 0) succeeds at once; trial 1 sleeps without a word: only the budget's timer can end it
    ex = Experiments(kube_api, ns)
    ex.create(experiment("budget", trial_script, max_trials=5, env={"SLOW_FROM": "0.05"},
                         stopping={"maxDurationSeconds": 6}))
    done = wait_for("the experiment to finish", lambda: ex.finished("budget"), timeout=120,
                    on_timeout=lambda: _debug(ex, op, "budget"))
    assert (done["status"], done["reason"]) == ("True", "TimeLimitReached"), done
    assert "maxDurationSeconds=6" in done["message"]
    status = ex.get("budget")["status"]
    took = _epoch(status["completionTime"]) - _epoch(status["startTime"])
    assert 5 <= took < 20, status  # the 30 s resync would come later
    print(f"\n[stopping] maxDurationSeconds=6: startTime to completionTime {took:.0f}s", file=sys.stderr)
    records = ex.records("budget")
    assert [(n, records[n]["state"], records[n]["reason"]) for n in sorted(records)] == [
        (0, "Succeeded", "Completed"), (1, "Canceled", "ExperimentFinished")]
    assert len(_job_uids(node_agent, ns, "budget")) == 2
    pids = [int(p) for p in (trial_script.parent / "budget.pids").read_text().split()]
    assert len(pids) == 2
    wait_for("the canceled trial's process to end", lambda: _gone(pids[1]), timeout=60)


def test_trial_timeout_is_the_jobs_deadline(op: OperatorProcess, ns: str, kube_api: client.ApiClient,
                                            node_agent: Any, trial_script: Path) -> None:
    ex = Experiments(kube_api, ns)
    body = experiment("slowpoke", trial_script, max_trials=1, env={"SLOW_FROM": "0"}, trialTimeoutSeconds=3)
    body["spec"]["trialTemplate"]["spec"]["activeDeadlineSeconds"] = 600  # the smaller limit wins
    ex.create(body)
    wait_for("the trial's Job", lambda: ex.jobs("slowpoke"), timeout=60)
    [job] = ex.jobs("slowpoke")
    assert job.spec.active_deadline_seconds == 3
    started = time.monotonic()
    done = wait_for("the experiment to finish", lambda: ex.finished("slowpoke"), timeout=120,
                    on_timeout=lambda: _debug(ex, op, "slowpoke"))
    waited = time.monotonic() - started
    assert waited < 60
    print(f"\n[stopping] trialTimeoutSeconds=3: Job made to experiment finished {waited:.1f}s", file=sys.stderr)
    assert (done["status"], done["reason"]) == ("False", "NoSuccessfulTrials"), done
    [record] = ex.records("slowpoke").values()
    assert (record["state"], record["reason"]) == ("Failed", "DeadlineExceeded"), record
    assert record["message"].startswith("the trial ran longer than trialTimeoutSeconds=3s: "), record
    # the real Job controller failed the Job for its deadline
    job = client.BatchV1Api(kube_api).read_namespaced_job(job.metadata.name, ns)
    assert job.status is not None and job.metadata is not None
    failed = [c for c in job.status.conditions or [] if c.type == "Failed" and c.status == "True"]
    assert failed and failed[0].reason == "DeadlineExceeded", job.status.conditions
    assert _job_uids(node_agent, ns, "slowpoke") == {job.metadata.uid}
    [pid] = [int(p) for p in (trial_script.parent / "slowpoke.pids").read_text().split()]
    wait_for("the timed-out trial's process to end", lambda: _gone(pid), timeout=60)
