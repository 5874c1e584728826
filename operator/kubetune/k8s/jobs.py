"""Build a trial's batch/v1 Job from the experiment's template (pure; no API calls)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..checkpoints import VOLUME_NAME, checkpoint_env, cluster_root
from ..engine import ParamValue
from ..spec import API_VERSION, KIND, ExperimentSpec, trial_time_limit
from ..template import params_json, render_pod_spec, trial_name
from ..trials import Lineage
from . import labels as L

POD_ENV = [
    {"name": "KUBETUNE_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "KUBETUNE_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
]

DISRUPTION_POLICY = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}


def owner_reference(experiment: Mapping[str, Any]) -> dict[str, Any]:
    meta = experiment["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def trial_labels(experiment: str, number: int) -> dict[str, str]:
    return {
        L.MANAGED_BY: L.MANAGED_BY_VALUE,
        L.EXPERIMENT: experiment,
        L.TRIAL: trial_name(experiment, number),
        L.TRIAL_NUMBER: str(number),
    }


def build_job(
    experiment: Mapping[str, Any], spec: ExperimentSpec, number: int, params: Mapping[str, ParamValue],
    lineage: Lineage | None = None,
) -> dict[str, Any]:
    """The Job for trial ``number``: the user's template, parameters injected, kubetune labels and owner. With
    ``spec.checkpoints`` the claim is mounted into every container and the checkpoint env vars are set
    (:mod:`kubetune.checkpoints`; ``lineage`` says what a pbt segment restores)."""
    meta = experiment["metadata"]
    name = meta["name"]
    template = spec.trial_template
    job_spec = copy.deepcopy(template.spec)
    pod_template = job_spec.setdefault("template", {})
    pod_meta = pod_template.setdefault("metadata", {})
    own = trial_labels(name, number)
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **own}
    ckpt = spec.checkpoints
    extra = checkpoint_env(cluster_root(ckpt.mount_path, name), name, number, lineage) if ckpt is not None else None
    pod_spec = render_pod_spec(pod_template.get("spec") or {}, name, number, params, spec.conditional_names, extra)
    if ckpt is not None:
        pod_spec["volumes"] = [v for v in pod_spec.get("volumes") or [] if v.get("name") != VOLUME_NAME] + [
            {"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": ckpt.persistent_volume_claim}}]
        for key in ("containers", "initContainers"):
            for c in pod_spec.get(key) or []:
                c["volumeMounts"] = [m for m in c.get("volumeMounts") or [] if m.get("name") != VOLUME_NAME] + [
                    {"name": VOLUME_NAME, "mountPath": ckpt.mount_path}]
    for key in ("containers", "initContainers"):
        for c in pod_spec.get(key) or []:
            names = {e.get("name") for e in c.get("env") or []}
            c["env"] = [e for e in POD_ENV if e["name"] not in names] + list(c.get("env") or [])
    pod_spec.setdefault("restartPolicy", "Never")
    pod_template["spec"] = pod_spec
    if pod_spec.get("restartPolicy") == "Never" and "podFailurePolicy" not in job_spec:
        job_spec["podFailurePolicy"] = copy.deepcopy(DISRUPTION_POLICY)
    job_spec.setdefault("backoffLimit", 0)
    limit = trial_time_limit(spec)
    if limit is not None and limit[1] == "trialTimeoutSeconds":  # the template's own deadline is kept when smaller
        job_spec["activeDeadlineSeconds"] = int(limit[0])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": trial_name(name, number),
            "namespace": meta.get("namespace"),
            "labels": {**template.metadata.labels, **own},
            "annotations": {**template.metadata.annotations, L.PARAMETERS_ANNOTATION: params_json(params)},
            "ownerReferences": [owner_reference(experiment)],
        },
        "spec": job_spec,
    }
