"""The trial contract's parameter injection, shared by the Kubernetes and the local backend.

A trial learns its parameters three ways (API.md §2): ``${params.NAME}`` placeholders in every container's
command, args and env values; the env vars ``KUBETUNE_PARAMS`` (JSON), ``KUBETUNE_EXPERIMENT``, ``KUBETUNE_TRIAL``
and ``KUBETUNE_TRIAL_NUMBER``; and (on Kubernetes) an annotation on the Job.

A conditional parameter (``when``) that is inactive in a trial has no value: it is absent from ``KUBETUNE_PARAMS``
and the annotation, an argument of ``command``/``args`` that holds its placeholder is left out whole (so write an
option and its value as one argument, ``--degree=${params.degree}``), and an env var whose value holds its
placeholder is not set. :func:`template_problems` refuses the two uses that leaving out would break: a conditional
placeholder as a whole argument (its option would be left without a value, or the positional arguments after it
would shift) and in an argument with whitespace (a shell script, which would be left out whole; pass the value
through an env var instead and test it in the script, e.g. ``${DEGREE:+--degree=$DEGREE}``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .engine import ParamValue
from .spec import render_value

PLACEHOLDER = re.compile(r"\$\{params\.([A-Za-z_][A-Za-z0-9_.\-]*)\}")
CONTAINER_LISTS = ("containers", "initContainers")

ENV_PARAMS = "KUBETUNE_PARAMS"
ENV_EXPERIMENT = "KUBETUNE_EXPERIMENT"
ENV_TRIAL = "KUBETUNE_TRIAL"
ENV_TRIAL_NUMBER = "KUBETUNE_TRIAL_NUMBER"


def trial_name(experiment: str, number: int) -> str:
    """Deterministic trial (and Job) name: ``<experiment>-<number>``, zero-padded to 4 digits."""
    return f"{experiment}-{number:04d}"


def params_json(params: Mapping[str, ParamValue]) -> str:
    return json.dumps(dict(params), separators=(",", ":"), sort_keys=True)


def substitute(text: str, params: Mapping[str, ParamValue]) -> str:
    """Replace ``${params.NAME}`` with the rendered value; unknown names are left as they are."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        return render_value(params[name]) if name in params else m.group(0)

    return PLACEHOLDER.sub(repl, text)


def trial_env(experiment: str, number: int, params: Mapping[str, ParamValue]) -> dict[str, str]:
    return {
        ENV_PARAMS: params_json(params),
        ENV_EXPERIMENT: experiment,
        ENV_TRIAL: trial_name(experiment, number),
        ENV_TRIAL_NUMBER: str(number),
    }


def _containers(pod_spec: Mapping[str, Any]) -> Iterable[tuple[str, int, dict[str, Any]]]:
    for key in CONTAINER_LISTS:
        for i, c in enumerate(pod_spec.get(key) or []):
            if isinstance(c, dict):
                yield key, i, c


def _inactive_in(text: str, params: Mapping[str, ParamValue], conditional: Collection[str]) -> bool:
    """Whether ``text`` holds a placeholder of a conditional parameter that ``params`` lacks (an inactive one)."""
    return any(m.group(1) in conditional and m.group(1) not in params for m in PLACEHOLDER.finditer(text))


def render_pod_spec(
    pod_spec: Mapping[str, Any], experiment: str, number: int, params: Mapping[str, ParamValue],
    conditional: Collection[str] = (), extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A copy of ``pod_spec`` with placeholders substituted and the kubetune env vars added to every container.

    ``conditional`` names the parameters with a condition: an argument holding the placeholder of one that
    ``params`` lacks (inactive in this trial) is left out, and so is an env var whose value holds one.
    ``extra_env`` are more kubetune env vars (the checkpoint contract, :mod:`kubetune.checkpoints`)."""
    out = copy.deepcopy(dict(pod_spec))
    env = {**trial_env(experiment, number, params), **(extra_env or {})}
    for _key, _i, c in _containers(out):
        for field in ("command", "args"):
            if isinstance(c.get(field), list):
                c[field] = [substitute(str(a), params) for a in c[field]
                            if not (conditional and _inactive_in(str(a), params, conditional))]
        user_env = [e for e in (c.get("env") or []) if isinstance(e, dict) and e.get("name") not in env
                    and not (conditional and isinstance(e.get("value"), str)
                             and _inactive_in(e["value"], params, conditional))]
        for e in user_env:
            if isinstance(e.get("value"), str):
                e["value"] = substitute(e["value"], params)
        c["env"] = [{"name": k, "value": v} for k, v in env.items()] + user_env
    return out


def template_problems(job_spec: Mapping[str, Any], param_names: Iterable[str] = (),
                      conditional: Collection[str] = ()) -> list[tuple[str, str]]:
    """Problems in a trial's JobSpec that would only show when the first trial starts (``conditional``: the
    parameters with a condition, see the module docstring)."""
    names = set(param_names)
    template = job_spec.get("template")
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return [("spec.template.spec", "Required value: a pod template with containers")]
    pod_spec = template["spec"]
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [("spec.template.spec.containers", "Required value: at least one container")]
    problems: list[tuple[str, str]] = []
    for key, i, c in _containers(pod_spec):
        base = f"spec.template.spec.{key}[{i}]"
        if not c.get("name"):
            problems.append((f"{base}.name", "Required value"))
        for field in ("command", "args"):
            value = c.get(field)
            if value is not None and not (isinstance(value, list) and all(isinstance(a, str) for a in value)):
                problems.append((f"{base}.{field}", "must be a list of strings"))
        texts = [(f"{base}.{f}[{j}]", a) for f in ("command", "args") for j, a in enumerate(c.get(f) or [])]
        texts += [(f"{base}.env[{j}].value", e.get("value")) for j, e in enumerate(c.get("env") or [])
                  if isinstance(e, dict)]
        for where, text in texts:
            if not isinstance(text, str):
                continue
            for m in PLACEHOLDER.finditer(text):
                if names and m.group(1) not in names:
                    problems.append((where, f"unknown parameter {m.group(1)!r} in placeholder {m.group(0)}"))
                elif m.group(1) in conditional and ".env[" not in where:
                    problem = _conditional_argument(text, m.group(1), m.group(0))
                    if problem:
                        problems.append((where, problem))
    restart = pod_spec.get("restartPolicy")
    if restart not in (None, "Never", "OnFailure"):
        problems.append(("spec.template.spec.restartPolicy", f'Unsupported value: "{restart}": supported values: '
                                                              '"Never", "OnFailure"'))
    return problems


def _conditional_argument(text: str, name: str, placeholder: str) -> str | None:
    """Why an argument holding the placeholder of conditional parameter ``name`` would break when it is left out."""
    if text.strip() == placeholder:
        return (f"conditional parameter {name!r} is a whole argument: the argument is left out when {name} is "
                f"inactive, which would leave its option without a value or shift the arguments after it; write "
                f"option and value as one argument, e.g. --{name}={placeholder}")
    if any(ch.isspace() for ch in text):
        return (f"conditional parameter {name!r} is in an argument with whitespace (a script?): the whole argument "
                f"is left out when {name} is inactive; pass it through an env var (not set when inactive) instead")
    return None
