"""The Argo CD health check (charts/kubetune/argocd/health.lua) run in a real Lua VM (lupa).

Argo CD evaluates the script with gopher-lua (Lua 5.1): the live object is the global table `obj` (JSON objects
and arrays become tables, arrays 1-based) and the script returns `hs` with `status` and `message`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "charts" / "kubetune" / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
CM_KEY = "resource.customizations.health.kubetune.io_TuningExperiment"

import lupa  # noqa: E402  (in the `test` extra)


def _runtime() -> Any:
    try:  # the same language version as Argo CD's gopher-lua
        from lupa import lua51

        return lua51.LuaRuntime(unpack_returned_tuples=False)
    except ImportError:  # pragma: no cover - older lupa wheels
        return lupa.LuaRuntime(unpack_returned_tuples=False)


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        table = lua.table()
        for k, v in value.items():
            table[k] = _to_lua(lua, v)
        return table
    if isinstance(value, list):
        table = lua.table()
        for i, v in enumerate(value, start=1):
            table[i] = _to_lua(lua, v)
        return table
    return value


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = _runtime()
    lua.globals().obj = _to_lua(lua, obj)
    hs = lua.execute(HEALTH_LUA.read_text())
    assert hs is not None, "health.lua must return hs"
    return hs["status"], hs["message"]


def cond(ctype: str, status: str, reason: str = "", message: str = "", generation: int = 1) -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": generation}


BASE: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "TuningExperiment",
    "metadata": {"name": "digits-svm", "namespace": "ml", "generation": 1},
    "spec": {"maxTrials": 30, "parallelTrials": 2},
}


def experiment(status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    obj["metadata"]["generation"] = generation
    if status is not None:
        obj["status"] = status
    return obj


def test_no_status_yet_is_progressing() -> None:
    status, message = health(experiment())
    assert status == "Progressing"
    assert "operator" in message


def test_empty_status_is_progressing() -> None:
    assert health(experiment({}, generation=1))[0] == "Progressing"


def test_status_of_an_older_generation_is_progressing() -> None:
    obj = experiment({"observedGeneration": 1,
                      "conditions": [cond("Succeeded", "True", "MaxTrialsReached", "30 trials")]}, generation=2)
    status, message = health(obj)
    assert status == "Progressing"
    assert "generation 2" in message


def test_succeeded_true_is_healthy() -> None:
    obj = experiment({"observedGeneration": 1, "conditions": [
        cond("Reconciling", "False", "Finished"),
        cond("Stalled", "False", "Finished"),
        cond("Succeeded", "True", "TargetReached", "best accuracy 0.996 >= target 0.995"),
    ], "trials": {"created": 12, "succeeded": 12, "running": 0}})
    assert health(obj) == ("Healthy", "TargetReached: best accuracy 0.996 >= target 0.995")


def test_succeeded_false_is_degraded_with_its_message() -> None:
    obj = experiment({"observedGeneration": 1, "conditions": [
        cond("Succeeded", "False", "TooManyFailedTrials", "4 trials failed (maxFailedTrials 3)"),
        cond("Reconciling", "False", "Finished"),
    ]})
    assert health(obj) == ("Degraded", "TooManyFailedTrials: 4 trials failed (maxFailedTrials 3)")


def test_stalled_true_is_degraded_with_its_message() -> None:
    obj = experiment({"observedGeneration": 1, "conditions": [
        cond("Succeeded", "Unknown", "Running"),
        cond("Stalled", "True", "InvalidSettings", "algorithm tpe: unknown setting 'foo'"),
    ]})
    assert health(obj) == ("Degraded", "InvalidSettings: algorithm tpe: unknown setting 'foo'")


def test_stalled_wins_over_succeeded() -> None:
    obj = experiment({"observedGeneration": 1, "conditions": [
        cond("Succeeded", "True", "MaxTrialsReached", "done"),
        cond("Stalled", "True", "ResultsUnwritable", "configmaps forbidden"),
    ]})
    assert health(obj)[0] == "Degraded"


def test_running_is_progressing_with_reconciling_message() -> None:
    obj = experiment({"observedGeneration": 1, "conditions": [
        cond("Succeeded", "Unknown", "Running", "trials are running"),
        cond("Reconciling", "True", "TrialsRunning", "7 of 30 trials done, 2 running"),
        cond("Stalled", "False", "Running"),
    ], "trials": {"created": 9, "running": 2, "succeeded": 7, "failed": 0}})
    assert health(obj) == ("Progressing", "TrialsRunning: 7 of 30 trials done, 2 running")


def test_running_without_reconciling_reports_trial_counts() -> None:
    obj = experiment({"observedGeneration": 1, "conditions": [],
                      "trials": {"created": 3, "running": 2, "succeeded": 1}})
    assert health(obj) == ("Progressing", "1 of 30 trials succeeded, 2 running")


def test_condition_of_an_older_generation_is_ignored() -> None:
    # The budget was raised (generation 2) and the operator already wrote observedGeneration 2 at the top,
    # but the Succeeded condition still describes generation 1.
    obj = experiment({"observedGeneration": 2, "conditions": [
        cond("Succeeded", "True", "MaxTrialsReached", "30 trials", generation=1),
    ]}, generation=2)
    assert health(obj)[0] == "Progressing"


def test_budget_raised_after_success_is_progressing_again() -> None:
    obj = experiment({"observedGeneration": 2, "conditions": [
        cond("Succeeded", "Unknown", "Running", "budget raised to 40", generation=2),
        cond("Reconciling", "True", "TrialsRunning", "30 of 40 trials done", generation=2),
    ]}, generation=2)
    assert health(obj) == ("Progressing", "TrialsRunning: 30 of 40 trials done")


def test_object_without_generation() -> None:
    obj = experiment({"conditions": [cond("Succeeded", "True", "MaxTrialsReached", "")]})
    del obj["metadata"]["generation"]
    assert health(obj) == ("Healthy", "MaxTrialsReached")


def test_argocd_cm_snippet_embeds_the_same_script() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"][CM_KEY] == HEALTH_LUA.read_text()


def test_statuses_written_by_the_operator() -> None:
    """The health check reads what the operator really writes (kubetune.k8s.status), not only hand-made objects."""
    from kubetune.k8s.status import stalled_status

    obj = experiment(generation=3)
    obj["status"] = stalled_status(obj, "InvalidSettings", "tpe: unknown setting 'foo'")
    assert health(obj) == ("Degraded", "InvalidSettings: tpe: unknown setting 'foo'")
    obj["metadata"]["generation"] = 4  # the user fixed the spec; the operator has not seen it yet
    assert health(obj)[0] == "Progressing"
