"""The experiment's status: conditions in the metav1.Condition shape, counts, best trial or Pareto front (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..pausing import pauses
from ..plan import Plan, front_in_status
from ..spec import ExperimentSpec, render_value
from ..template import trial_name
from ..trials import Trial


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def elapsed_seconds(experiment: Mapping[str, Any], started: bool, at: datetime | None = None) -> float | None:
    """Seconds the experiment's clock has run at ``at`` (now by default), for ``stopping.maxDurationSeconds``:
    since ``status.startTime`` (its first trial), kept in the resource so that an operator restart does not reset
    it; since ``metadata.creationTimestamp`` when trials were ``started`` but no start time was written (earlier,
    never later); None before the first trial."""
    status = experiment.get("status") or {}
    since = status.get("startTime") or ((experiment.get("metadata") or {}).get("creationTimestamp") if started
                                        else None)
    if not isinstance(since, str):
        return None
    try:
        origin = datetime.fromisoformat(since.replace("Z", "+00:00"))
        if origin.tzinfo is None:
            origin = origin.replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return max(((at or datetime.now(timezone.utc)) - origin).total_seconds(), 0.0)


def condition(
    old: list[Mapping[str, Any]], type_: str, status: str, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    """A condition; ``lastTransitionTime`` only moves when ``status`` changes."""
    previous = next((c for c in old if c.get("type") == type_), None)
    since = previous.get("lastTransitionTime") if previous and previous.get("status") == status else None
    out: dict[str, Any] = {
        "type": type_, "status": status, "reason": reason, "message": message[:32768],
        "lastTransitionTime": since or now(),
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def running_status(
    experiment: Mapping[str, Any], spec: ExperimentSpec, plan: Plan
) -> dict[str, Any]:
    meta = experiment["metadata"]
    old_status = experiment.get("status") or {}
    old = old_status.get("conditions") or []
    gen = meta.get("generation")
    name = meta["name"]
    c = plan.counts
    outcome = plan.outcome if plan.finished else None
    if outcome is None:
        progress = f"{c.created} of {spec.max_trials} trials created, {c.running} running"
        conds = [
            condition(old, "Succeeded", "Unknown", "TrialsRunning", progress, gen),
            condition(old, "Reconciling", "True", "TrialsRunning", progress, gen),
        ]
    else:
        conds = [
            condition(old, "Succeeded", "True" if outcome.succeeded else "False", outcome.reason, outcome.message, gen),
            condition(old, "Reconciling", "False", outcome.reason, "the experiment is finished", gen),
        ]
    conds.append(condition(old, "Stalled", "False", "Reconciled", "", gen))
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "conditions": conds,
        "trials": c.as_status(constrained=bool(spec.constraints), pausing=pauses(spec)),
        "results": f"{name}-results-",
    }
    if plan.best is not None:
        best = plan.best
        value = best.objective_value(spec.objective)
        status["bestTrial"] = {
            "name": trial_name(name, best.number),
            "number": best.number,
            "objectiveValue": value,
            "parameters": {k: render_value(v) for k, v in best.params.items()},
            "metrics": dict(best.metrics),
        }
    if spec.multi_objective:
        status["paretoFront"] = pareto_front_status(spec, name, plan.front)
    if c.created and not old_status.get("startTime"):
        status["startTime"] = now()
    if outcome is not None:
        status["completionTime"] = old_status.get("completionTime") or now()
    elif old_status.get("completionTime"):
        status["completionTime"] = None
    return status


def pareto_front_status(spec: ExperimentSpec, name: str, front: Sequence[Trial]) -> dict[str, Any]:
    """``status.paretoFront``: the front's size and at most MAX_FRONT_IN_STATUS members (see
    :func:`~kubetune.plan.front_in_status`), each with its objective values in the order of ``objectives``."""
    objectives = spec.objective_list
    return {
        "metrics": [o.metric for o in objectives],
        "size": len(front),
        "trials": [{"name": trial_name(name, t.number), "number": t.number,
                    "values": list(t.objective_values(objectives) or ())}
                   for t in front_in_status(spec, front)],
    }


def stalled_status(experiment: Mapping[str, Any], reason: str, message: str) -> dict[str, Any]:
    meta = experiment["metadata"]
    old = (experiment.get("status") or {}).get("conditions") or []
    gen = meta.get("generation")
    return {
        "observedGeneration": gen,
        "conditions": [
            condition(old, "Stalled", "True", reason, message, gen),
            condition(old, "Reconciling", "False", reason, message, gen),
            condition(old, "Succeeded", "False" if reason == "InvalidSpec" else "Unknown", reason, message, gen),
        ],
    }


def changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether patching ``new`` over ``old`` would change anything."""
    for key, value in new.items():
        if old.get(key) != value:
            return True
    return False
