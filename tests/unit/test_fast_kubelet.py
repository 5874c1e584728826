"""The benchmark kubelet's metrics documents are the trial SDK's, report for report; its objective is deterministic.

The SDK runs for real (in a subprocess, standard library only) with its HTTP call captured, and its documents are
compared with what the benchmark kubelet writes for the same reports. Its life on a cluster (bind, Running,
annotation, Succeeded, the Job controller completing the Job) is run by tests/integration/test_operator_scale_smoke.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubetune.metrics import parse_annotation

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from fast_kubelet import (  # noqa: E402
    curve_value,
    default_objective,
    params_of,
    report_documents,
)


def sdk_documents(final: float, steps: int) -> list[dict[str, Any]]:
    """Documents the real SDK sends for ``steps`` intermediate reports then the final one (every report written:
    ``KUBETUNE_REPORT_INTERVAL=0``)."""
    code = textwrap.dedent(f"""
        import json, sys
        import kubetune_trial as kt
        sent = []
        kt._patch_pod = lambda pod, doc: sent.append(doc)
        from fast_kubelet import curve_value
        for step in range({steps}):
            kt.report(step=step, score=curve_value({final!r}, step, {steps}))
        kt.report(score={final!r})
        print(json.dumps(sent))
    """)
    env = {"PATH": os.environ.get("PATH", ""), "KUBETUNE_POD_NAME": "p", "KUBETUNE_TRIAL": "t-0000",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "trial_image"), str(ROOT / "tests" / "support")]),
           "KUBETUNE_TERMINATION_LOG": os.devnull, "KUBETUNE_REPORT_INTERVAL": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    return list(json.loads(out))


def strip_time(doc: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(doc["time"], float)
    return {k: v for k, v in doc.items() if k != "time"}


@pytest.mark.parametrize("steps", [0, 1, 7, 150])
def test_documents_equal_the_sdks_report_for_report(steps: int) -> None:
    sdk = sdk_documents(0.8125, steps)
    ours = report_documents({"score": 0.8125}, steps)
    assert len(ours) == len(sdk) == steps + 1
    assert [strip_time(d) for d in ours] == [json.loads(json.dumps(strip_time(d))) for d in sdk]
    for doc in ours:  # and the operator reads them
        report = parse_annotation(json.dumps(doc, separators=(",", ":")))
        assert report.seq == doc["seq"]
    assert parse_annotation(json.dumps(ours[-1])).metrics == {"score": 0.8125}


@pytest.mark.parametrize("steps,writes", [(50, 5), (10, 3), (3, 10), (20, 1)])
def test_grouped_writes_are_a_subset_of_the_sdks_documents_ending_with_the_last_step(steps: int,
                                                                                     writes: int) -> None:
    every = [strip_time(d) for d in report_documents({"score": 0.5}, steps)]
    grouped = [strip_time(d) for d in report_documents({"score": 0.5}, steps, writes)]
    assert len(grouped) == min(writes, steps) + 1
    assert all(d in every for d in grouped)
    assert grouped[-2]["step"] == steps - 1 and grouped[-1] == every[-1]
    assert [d["seq"] for d in grouped] == sorted({d["seq"] for d in grouped})


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]),
                       st.one_of(st.floats(-10, 10), st.integers(-5, 5), st.sampled_from(["x", "y"])),
                       min_size=1))
def test_objective_is_deterministic_and_best_at_the_centre(params: dict[str, Any]) -> None:
    value = default_objective(params)
    assert value == default_objective(dict(reversed(list(params.items()))))
    centred = {k: (0.37 if not isinstance(v, str) else v) for k, v in params.items()}
    assert default_objective(centred) >= value


@given(st.floats(-5, 5), st.integers(1, 300))
def test_intermediate_values_rise_to_the_final_value_and_keep_trials_ordered(final: float, steps: int) -> None:
    values = [curve_value(final, s, steps) for s in range(steps)]
    assert values == sorted(values) and values[-1] == final
    assert all(curve_value(final + 0.1, s, steps) > v for s, v in enumerate(values))


def test_params_come_from_the_containers_env() -> None:
    pod = {"spec": {"containers": [{"name": "t", "env": [
        {"name": "KUBETUNE_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "KUBETUNE_PARAMS", "value": '{"x": 0.5, "k": "rbf"}'}]}]}}
    assert params_of(pod) == {"x": 0.5, "k": "rbf"}
    assert params_of({"spec": {"containers": [{"name": "t", "env": [{"name": "KUBETUNE_PARAMS",
                                                                      "value": "[1]"}]}]}}) == {}
