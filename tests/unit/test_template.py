"""Parameter injection into a trial's pod spec (API.md §2): placeholders, KUBETUNE_* env, rendering."""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from typing import Any

import pytest

from kubetune.spec import render_value
from kubetune.template import (
    ENV_EXPERIMENT,
    ENV_PARAMS,
    ENV_TRIAL,
    ENV_TRIAL_NUMBER,
    params_json,
    render_pod_spec,
    substitute,
    template_problems,
    trial_env,
    trial_name,
)

PARAMS: dict[str, Any] = {"lr": 0.001, "layers": 3, "kernel": "rbf", "bn": True, "C": 2.0}

POD: dict[str, Any] = {
    "restartPolicy": "Never",
    "initContainers": [{"name": "fetch", "command": ["fetch", "--layers=${params.layers}"]}],
    "containers": [
        {
            "name": "trial",
            "image": "trial:1",
            "command": ["python", "train.py", "--lr", "${params.lr}"],
            "args": ["--kernel=${params.kernel}", "--bn", "${params.bn}", "--C", "${params.C}", "plain"],
            "env": [
                {"name": "LAYERS", "value": "${params.layers}"},
                {"name": "MIXED", "value": "lr=${params.lr},k=${params.kernel}"},
                {"name": "FROM_FIELD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": ENV_TRIAL, "value": "user-set-is-replaced"},
            ],
        },
        {"name": "sidecar", "image": "side:1"},
    ],
}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.fixture
def rendered() -> dict[str, Any]:
    return render_pod_spec(POD, "exp", 7, PARAMS)


def test_placeholders_in_command_and_args(rendered: dict[str, Any]) -> None:
    main = rendered["containers"][0]
    assert main["command"] == ["python", "train.py", "--lr", "0.001"]
    assert main["args"] == ["--kernel=rbf", "--bn", "true", "--C", "2.0", "plain"]
    assert rendered["initContainers"][0]["command"] == ["fetch", "--layers=3"]


def test_placeholders_in_env_values(rendered: dict[str, Any]) -> None:
    env = env_of(rendered["containers"][0])
    assert env["LAYERS"] == "3"
    assert env["MIXED"] == "lr=0.001,k=rbf"
    assert env["FROM_FIELD"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # untouched


def test_kubetune_env_in_every_container(rendered: dict[str, Any]) -> None:
    for c in rendered["containers"] + rendered["initContainers"]:
        env = env_of(c)
        assert json.loads(env[ENV_PARAMS]) == PARAMS
        assert env[ENV_EXPERIMENT] == "exp"
        assert env[ENV_TRIAL] == "exp-0007"
        assert env[ENV_TRIAL_NUMBER] == "7"
        names = [e["name"] for e in c["env"]]
        assert len(names) == len(set(names)), "no duplicate env names"


def test_user_env_cannot_shadow_kubetune_env(rendered: dict[str, Any]) -> None:
    env = rendered["containers"][0]["env"]
    assert [e for e in env if e["name"] == ENV_TRIAL] == [{"name": ENV_TRIAL, "value": "exp-0007"}]
    assert "user-set-is-replaced" not in json.dumps(rendered)


def test_the_template_is_not_modified() -> None:
    before = copy.deepcopy(POD)
    render_pod_spec(POD, "exp", 1, PARAMS)
    assert POD == before


def test_other_fields_are_kept(rendered: dict[str, Any]) -> None:
    assert rendered["restartPolicy"] == "Never"
    assert rendered["containers"][0]["image"] == "trial:1"
    assert rendered["containers"][1]["name"] == "sidecar"


@pytest.mark.parametrize(
    "value, text",
    [
        (0.1, "0.1"),
        (1e-05, "1e-05"),
        (2.0, "2.0"),
        (-0.5, "-0.5"),
        (1 / 3, "0.3333333333333333"),
        (1e20, "1e+20"),
        (123456789.0, "123456789.0"),
        (3, "3"),
        (-4, "-4"),
        (0, "0"),
        (True, "true"),
        (False, "false"),
        ("rbf", "rbf"),
        ("with space", "with space"),
        ("", ""),
    ],
)
def test_render_value(value: Any, text: str) -> None:
    assert render_value(value) == text
    assert substitute("${params.v}", {"v": value}) == text


def test_rendered_floats_round_trip() -> None:
    for v in (0.1, 1e-05, 1 / 3, 12345.678901234567, 5e-324, 1.7976931348623157e308):
        assert float(render_value(v)) == v


def test_rendered_booleans_are_json() -> None:
    assert json.loads(render_value(True)) is True and json.loads(render_value(False)) is False


def test_unknown_placeholders_are_left_as_they_are() -> None:
    assert substitute("--x=${params.nope} --lr=${params.lr}", PARAMS) == "--x=${params.nope} --lr=0.001"
    # Not placeholders at all:
    for text in ("$params.lr", "${lr}", "${params.}", "${ params.lr }", "$(params.lr)", "${PARAMS.lr}"):
        assert substitute(text, PARAMS) == text


def test_several_placeholders_in_one_string() -> None:
    assert substitute("${params.layers}x${params.layers}-${params.kernel}", PARAMS) == "3x3-rbf"


def test_substituted_values_are_not_substituted_again() -> None:
    assert substitute("${params.a}", {"a": "${params.b}", "b": "no"}) == "${params.b}"


def test_parameter_names_with_dots_and_dashes() -> None:
    assert substitute("${params.opt.lr}/${params.drop-out}", {"opt.lr": 0.5, "drop-out": 0.1}) == "0.5/0.1"


def test_non_string_arguments_are_rendered_as_strings() -> None:
    pod = {"containers": [{"name": "t", "command": ["run", 3, "${params.layers}"]}]}
    out = render_pod_spec(pod, "exp", 0, PARAMS)
    assert out["containers"][0]["command"] == ["run", "3", "3"]


def test_container_without_env_gets_kubetune_env() -> None:
    out = render_pod_spec({"containers": [{"name": "t"}]}, "e", 12, {"a": 1})
    assert env_of(out["containers"][0]) == {
        ENV_PARAMS: '{"a":1}', ENV_EXPERIMENT: "e", ENV_TRIAL: "e-0012", ENV_TRIAL_NUMBER: "12"}


def test_trial_names() -> None:
    assert trial_name("exp", 0) == "exp-0000"
    assert trial_name("exp", 12345) == "exp-12345"
    assert len(trial_name("a" * 52, 9999)) <= 63  # the 52-character limit keeps Job names valid


def test_params_json_is_compact_and_sorted() -> None:
    assert params_json({"b": 1, "a": "x", "c": True}) == '{"a":"x","b":1,"c":true}'
    assert trial_env("e", 1, {"b": 0.5})[ENV_PARAMS] == '{"b":0.5}'


def test_substituted_command_runs_in_a_real_process() -> None:
    """What a trial sees: the rendered argv and env, end to end through a real process."""
    pod = {"containers": [{"name": "t", "command": [sys.executable, "-c",
                                                    "import json,os,sys; print(json.dumps([sys.argv[1:], "
                                                    "os.environ['KUBETUNE_PARAMS'], os.environ['K']]))",
                                                    "${params.lr}", "${params.kernel}"],
                           "env": [{"name": "K", "value": "${params.bn}"}]}]}
    c = render_pod_spec(pod, "exp", 2, PARAMS)["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    out = subprocess.run(c["command"], env=env, capture_output=True, text=True, check=True, timeout=60)
    argv, params, k = json.loads(out.stdout)
    assert argv == ["0.001", "rbf"] and json.loads(params) == PARAMS and k == "true"
    assert shlex.join(argv) == "0.001 rbf"


# ------------------------------------------------------------------------------------------------- problems

def _job(pod: dict[str, Any]) -> dict[str, Any]:
    return {"template": {"spec": pod}}


def test_template_problems_ok() -> None:
    assert template_problems(_job(POD), PARAMS) == []


def test_template_problems_unknown_placeholder_everywhere() -> None:
    pod = copy.deepcopy(POD)
    pod["containers"][0]["command"].append("${params.momentum}")
    pod["containers"][0]["env"].append({"name": "Y", "value": "${params.wd}"})
    pod["initContainers"][0]["command"].append("${params.seed}")
    assert template_problems(_job(pod), PARAMS) == [
        ("spec.template.spec.containers[0].command[4]", "unknown parameter 'momentum' in placeholder ${params.momentum}"),
        ("spec.template.spec.containers[0].env[4].value", "unknown parameter 'wd' in placeholder ${params.wd}"),
        ("spec.template.spec.initContainers[0].command[2]", "unknown parameter 'seed' in placeholder ${params.seed}"),
    ]


@pytest.mark.parametrize(
    "job, expected",
    [
        ({}, [("spec.template.spec", "Required value: a pod template with containers")]),
        ({"template": {"spec": "x"}}, [("spec.template.spec", "Required value: a pod template with containers")]),
        (_job({}), [("spec.template.spec.containers", "Required value: at least one container")]),
        (_job({"containers": {"name": "x"}}), [("spec.template.spec.containers", "Required value: at least one container")]),
        (_job({"containers": [{"command": ["x"]}]}), [("spec.template.spec.containers[0].name", "Required value")]),
        (_job({"containers": [{"name": "t", "args": ["a", 1]}]}),
         [("spec.template.spec.containers[0].args", "must be a list of strings")]),
        (_job({"containers": [{"name": "t"}], "restartPolicy": "Always"}),
         [("spec.template.spec.restartPolicy", 'Unsupported value: "Always": supported values: "Never", "OnFailure"')]),
    ],
)
def test_template_problems(job: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert template_problems(job, PARAMS) == expected
