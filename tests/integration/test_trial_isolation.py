"""Trials cannot touch each other, and the default install passes Pod Security Admission "restricted", on the real
control plane with the chart installed as a user would (`helm install`, default values).

* Forgery: two trials of one experiment run side by side in a namespace labelled
  ``pod-security.kubernetes.io/enforce: restricted``; the attacker, with its own pod-bound service-account token
  (the node agent hands it over in KUBETUNE_SERVICEACCOUNT_DIR, like a kubelet), patches the victim's pod with a
  forged ``kubetune.io/metrics`` (loss -1000), relabels it and tries to delete it. With the chart's defaults the API
  server refuses all of it and the victim's record and the best trial stay the victim's real result. Without the
  admission policy the chart grants no `pods: patch` (RBAC refuses; the victim's metrics come from its termination
  message). With the explicit opt-out (patchWithoutPolicy) the forgery succeeds and becomes the best trial: the
  threat is real and the test sees it.
* Pod Security: the operator Deployment's pod (server-side dry-run, and created for real by the ReplicaSet
  controller) and the Jobs of every example experiment (built by the operator's own code, pods created by the Job
  controller) are admitted in a restricted namespace; the same pods without their securityContext are refused.
"""

from __future__ import annotations

import copy
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import BIN_DIR_ENV, BINARIES, ensure_binaries
from kubernetes import client
from kubernetes.client.rest import ApiException
from operator_process import Experiments, OperatorProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
CRD = ROOT / "crds" / "tuningexperiments.kubetune.io.yaml"
NO_NODE = "kubetune-isolation-no-node"  # pods bound here are admitted but never run (the test node ignores them)
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}
POD_SECURITY = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    try:
        return ensure_binaries()
    except RuntimeError as exc:
        pytest.fail(f"helm is not available: {exc}\nSet {BIN_DIR_ENV} to a directory with {', '.join(BINARIES)}.",
                    pytrace=False)


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")



def helm(bin_dir: Path, helm_home: Path, kubeconfig: Path, *args: str, check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(HELM_CACHE_HOME=str(helm_home / "cache"), HELM_CONFIG_HOME=str(helm_home / "config"),
               HELM_DATA_HOME=str(helm_home / "data"), KUBECONFIG=str(kubeconfig))
    proc = subprocess.run([str(bin_dir / "helm"), *args], env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def restricted_namespace(namespace: str, kube_api: client.ApiClient) -> Iterator[str]:
    """The test namespace, enforcing Pod Security "restricted"; pods pinned to NO_NODE are force-deleted after."""
    core = client.CoreV1Api(kube_api)
    core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    try:
        yield namespace
    finally:
        # No kubelet confirms a graceful deletion of a pod on NO_NODE: delete those at once.
        for _ in range(20):
            pods = [p for p in core.list_namespaced_pod(namespace).items if p.spec.node_name == NO_NODE]
            if not pods:
                break
            for p in pods:
                try:
                    core.delete_namespaced_pod(p.metadata.name, namespace, grace_period_seconds=0)
                except ApiException as e:
                    if e.status != 404:
                        raise
            time.sleep(0.5)


def _install(bin_dir: Path, helm_home: Path, control_plane: Any, namespace: str, *values: str) -> str:
    release = f"kt-{uuid.uuid4().hex[:6]}"
    helm(bin_dir, helm_home, control_plane.kubeconfig, "install", release, str(CHART), "--namespace", namespace,
         "--set", "replicaCount=0", *values, "--wait", "--timeout", "2m")
    return release


def _uninstall(bin_dir: Path, helm_home: Path, control_plane: Any, namespace: str, release: str) -> None:
    helm(bin_dir, helm_home, control_plane.kubeconfig, "uninstall", release, "--namespace", namespace, "--wait",
         "--timeout", "2m", check=False)


# -- forgery -------------------------------------------------------------------------------------------------------

TRIAL = r'''
import json, os, ssl, sys, time, urllib.error, urllib.request
from pathlib import Path

import kubetune_trial as kt

shared = Path(sys.argv[1])
role = kt.params()["role"]


def wait_file(path):
    end = time.time() + 120
    while not path.exists():
        if time.time() > end:
            sys.exit(f"timed out waiting for {path}")
        time.sleep(0.1)
    return path.read_text()


def publish(name, text):
    tmp = shared / (name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, shared / name)


if role == "victim":
    kt.report(loss=5.0)
    publish("victim-pod", os.environ["KUBETUNE_POD_NAME"])
    wait_file(shared / "attack.json")
    sys.exit(0)

victim = wait_file(shared / "victim-pod")
sa = Path(os.environ["KUBETUNE_SERVICEACCOUNT_DIR"])
token = (sa / "token").read_text().strip()
ctx = ssl.create_default_context(cafile=str(sa / "ca.crt"))
url = (f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
       f"/api/v1/namespaces/{os.environ['KUBETUNE_POD_NAMESPACE']}/pods/{victim}")


def call(method, body=None):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), method=method,
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/merge-patch+json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return {"status": resp.status, "message": ""}
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        try:
            return {"status": e.code, "message": json.loads(text).get("message", text)}
        except ValueError:
            return {"status": e.code, "message": text}


forged = {"seq": 1000, "step": None, "metrics": {"loss": -1000.0}, "curve": [], "time": time.time()}
results = {
    "forge": call("PATCH", {"metadata": {"annotations": {"kubetune.io/metrics": json.dumps(forged)}}}),
    "label": call("PATCH", {"metadata": {"labels": {"forged": "yes"}}}),
    "delete": call("DELETE"),
    "me": os.environ["KUBETUNE_POD_NAME"],
}
publish("attack.json", json.dumps(results))
kt.report(loss=50.0)
'''


def _forgery_experiment(name: str, script: Path, shared: Path) -> Obj:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "loss", "goal": "minimize"},
            "parameters": [{"name": "role", "type": "categorical", "values": ["victim", "attacker"]}],
            "algorithm": {"name": "grid"},
            "maxTrials": 2, "parallelTrials": 2,
            "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "serviceAccountName": "kubetune-trial", "restartPolicy": "Never",
                "securityContext": POD_SECURITY,
                "containers": [{"name": "trial", "image": "kubetune-trial:test", "securityContext": CONTAINER_SECURITY,
                                "command": ["python", str(script), str(shared)]}]}}}},
        },
    }


def _pinned_pod(name: str, labels: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"nodeName": NO_NODE, "serviceAccountName": "kubetune-trial", "restartPolicy": "Never",
                     "securityContext": POD_SECURITY,
                     "containers": [{"name": "trial", "image": "kubetune-trial:test", "command": ["sleep", "60"],
                                     "securityContext": CONTAINER_SECURITY}]}}


def _patch_as(cp: Any, token: str, namespace: str, pod: str, patch: Obj) -> int:
    req = urllib.request.Request(
        f"{cp.server}/api/v1/namespaces/{namespace}/pods/{pod}", data=json.dumps(patch).encode(), method="PATCH",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"})
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(cp.ca_file)), timeout=30):
            return 200
    except urllib.error.HTTPError as e:
        return e.code


def _wait_for_policy(control_plane: Any, core: client.CoreV1Api, namespace: str) -> None:
    """The API server enforces a new ValidatingAdmissionPolicy once it has loaded it: wait for the first denial."""
    a = core.create_namespaced_pod(namespace, _pinned_pod("policy-probe-a"))
    core.create_namespaced_pod(namespace, _pinned_pod("policy-probe-b"))
    token = control_plane.token_request(namespace, "kubetune-trial", bound_pod=("policy-probe-a", a.metadata.uid))
    probe = {"metadata": {"annotations": {"kubetune.io/probe": "1"}}}
    wait_for("the trial admission policy to be enforced",
             lambda: _patch_as(control_plane, token, namespace, "policy-probe-b", probe) == 403, timeout=30,
             interval=0.5)
    for pod in ("policy-probe-a", "policy-probe-b"):
        core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)


@pytest.mark.parametrize("mode", ["default", "no-policy", "trusted-opt-out"])
def test_a_trial_cannot_forge_another_trials_metrics(
        mode: str, control_plane: Any, crd: None, node_agent: Any, bin_dir: Path, helm_home: Path,
        restricted_namespace: str, kube_api: client.ApiClient, tmp_path: Path) -> None:
    namespace = restricted_namespace
    values = {"default": [],
              "no-policy": ["--set", "trialRbac.admissionPolicy.enabled=false"],
              "trusted-opt-out": ["--set", "trialRbac.admissionPolicy.enabled=false",
                                  "--set", "trialRbac.patchWithoutPolicy=true"]}[mode]
    release = _install(bin_dir, helm_home, control_plane, namespace, *values)
    fullname = release if "kubetune" in release else f"{release}-kubetune"
    core = client.CoreV1Api(kube_api)
    if mode == "default":
        _wait_for_policy(control_plane, core, namespace)
    script, shared = tmp_path / "trial.py", tmp_path / "shared"
    script.write_text(TRIAL)
    shared.mkdir()
    (tmp_path / "operator").mkdir()
    op = OperatorProcess(control_plane.service_account_kubeconfig(namespace, fullname), tmp_path / "operator",
                         ["--leader-election", f"--lease-name={fullname}", f"--lease-namespace={namespace}"])
    ex = Experiments(kube_api, namespace)
    try:
        op.start()
        ex.create(_forgery_experiment("forgery", script, shared))

        def debug() -> str:
            logs = []
            for p in ex.pods("forgery"):
                path = node_agent.log_path(namespace, p.metadata.name)
                logs.append(f"--- {p.metadata.name}:\n"
                            + (Path(path).read_text()[-2000:] if path and Path(path).exists() else "(no log)"))
            return f"status: {ex.get('forgery').get('status')}\n" + "\n".join(logs) + f"\noperator:\n{op.log_tail()}"

        done = wait_for("the experiment to finish", lambda: ex.finished("forgery"), timeout=180, on_timeout=debug)
        attack = json.loads((shared / "attack.json").read_text())
        print(f"\n[isolation] {mode}: the API server answered the attacker: {json.dumps(attack)}", file=sys.stderr)
        records = {r["params"]["role"]: r for r in ex.records("forgery").values()}
        assert set(records) == {"victim", "attacker"}, records
        assert all(r["state"] == "Succeeded" for r in records.values()), records
        status = ex.get("forgery")["status"]
        assert done["reason"] == "MaxTrialsReached"
        victim_pod = (shared / "victim-pod").read_text()
        assert attack["delete"]["status"] == 403, "RBAC never lets a trial delete pods"

        if mode == "trusted-opt-out":
            # The threat the defaults close: the forged value is recorded and wins.
            assert attack["forge"]["status"] == 200 and attack["label"]["status"] == 200, attack
            assert records["victim"]["metrics"]["loss"] == -1000.0
            assert status["bestTrial"]["objectiveValue"] == -1000.0
            return

        assert attack["forge"]["status"] == 403 and attack["label"]["status"] == 403, attack
        if mode == "default":
            for what in ("forge", "label"):
                assert attack[what]["message"].endswith(
                    f"kubetune trials may only patch their own pod ({attack['me']}), not {victim_pod}"), attack
        else:
            assert 'cannot patch resource "pods"' in attack["forge"]["message"], attack
        assert records["victim"]["metrics"] == {"loss": 5.0}
        assert records["attacker"]["metrics"] == {"loss": 50.0}
        best = status["bestTrial"]
        assert best["objectiveValue"] == 5.0 and best["number"] == records["victim"]["number"], best
        assert best["parameters"] == {"role": "victim"}
        labels = core.read_namespaced_pod(victim_pod, namespace).metadata.labels or {}
        assert "forged" not in labels
        annotations = core.read_namespaced_pod(victim_pod, namespace).metadata.annotations or {}
        if mode == "default":  # the victim's own patch passed the policy: its metrics came from the annotation
            assert json.loads(annotations["kubetune.io/metrics"])["metrics"] == {"loss": 5.0}
        else:  # no patch right at all: the victim's metrics came from its termination message
            assert "kubetune.io/metrics" not in annotations
    finally:
        op.stop()
        try:
            ex.delete("forgery")
        except ApiException:
            pass
        _uninstall(bin_dir, helm_home, control_plane, namespace, release)


# -- Pod Security Admission "restricted" ----------------------------------------------------------------------------


def _without_security(pod_spec: Obj) -> Obj:
    bare = copy.deepcopy(pod_spec)
    bare.pop("securityContext", None)
    for c in bare.get("containers") or []:
        c.pop("securityContext", None)
    return bare


def _refused_by_pod_security(core: client.CoreV1Api, namespace: str, pod: Obj) -> str:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, pod, dry_run="All")
    assert err.value.status == 403, err.value.body
    message = json.loads(err.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message, message
    return message


def _pods_of(core: client.CoreV1Api, namespace: str, selector: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def test_operator_pod_and_example_trials_pass_pod_security_restricted(
        control_plane: Any, crd: None, bin_dir: Path, helm_home: Path, restricted_namespace: str,
        kube_api: client.ApiClient) -> None:
    namespace = restricted_namespace
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    # PodSecurity admission is on and enforcing in this namespace: a pod without any securityContext is refused.
    message = _refused_by_pod_security(core, namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "psa-probe"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}})
    print(f"\n[pod-security] a bare pod: {message}", file=sys.stderr)

    release = _install(bin_dir, helm_home, control_plane, namespace)
    fullname = release if "kubetune" in release else f"{release}-kubetune"
    custom = client.CustomObjectsApi(kube_api)
    try:
        dep = apps.read_namespaced_deployment(fullname, namespace)
        template = kube_api.sanitize_for_serialization(dep.spec.template)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": f"{fullname}-", "labels": template["metadata"]["labels"]},
               "spec": template["spec"]}
        core.create_namespaced_pod(namespace, pod, dry_run="All")  # admitted as the Deployment would make it
        _refused_by_pod_security(core, namespace, {**pod, "spec": _without_security(pod["spec"])})

        # For real: the ReplicaSet controller creates the operator pod (bound to a node that does not exist, so
        # nothing runs it).
        apps.patch_namespaced_deployment(fullname, namespace, {"spec": {"replicas": 1, "template": {"spec": {
            "nodeName": NO_NODE}}}})
        selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
        wait_for("the ReplicaSet controller to create the operator pod", lambda: _pods_of(core, namespace, selector),
                 timeout=60)
        # ... and the same Deployment without securityContext gets no pod: the ReplicaSet reports the refusal.
        bare = kube_api.sanitize_for_serialization(dep)
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation", "annotations"):
            bare["metadata"].pop(key, None)
        bare.pop("status", None)
        bare["metadata"]["name"] = f"{fullname}-bare"
        for part in (bare["spec"]["selector"]["matchLabels"], bare["spec"]["template"]["metadata"]["labels"]):
            part["kubetune.io/variant"] = "bare"
        bare["spec"]["replicas"] = 1
        bare["spec"]["template"]["spec"] = {**_without_security(bare["spec"]["template"]["spec"]), "nodeName": NO_NODE}
        apps.create_namespaced_deployment(namespace, bare)

        def refusal() -> str:
            for rs in apps.list_namespaced_replica_set(namespace, label_selector="kubetune.io/variant=bare").items:
                for c in rs.status.conditions or []:
                    if c.type == "ReplicaFailure" and "violates PodSecurity" in (c.message or ""):
                        return str(c.message)
            return ""

        print(f"[pod-security] the operator pod without securityContext: "
              f"{wait_for('the bare ReplicaSet to report the refusal', refusal, timeout=60)}", file=sys.stderr)
        assert not _pods_of(core, namespace, "kubetune.io/variant=bare")

        # Every example's trial Job, built by the operator's own code, gets its pod from the Job controller.
        from kubetune.k8s.jobs import build_job
        from kubetune.spec import ExperimentSpec

        for path in sorted((ROOT / "examples").glob("*.yaml")):
            doc = yaml.safe_load(path.read_text())
            body = custom.create_namespaced_custom_object("kubetune.io", "v1alpha1", namespace, "tuningexperiments",
                                                          doc)
            spec = ExperimentSpec.model_validate(body["spec"])
            params = {p.name: (p.values[0] if p.values else int(p.min) if p.type == "int" else p.min)
                      for p in spec.parameters}
            job = build_job(body, spec, 0, params)
            pod_spec = job["spec"]["template"]["spec"]
            core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod",
                                                   "metadata": {"generateName": "dry-"}, "spec": pod_spec},
                                       dry_run="All")
            _refused_by_pod_security(core, namespace, {"apiVersion": "v1", "kind": "Pod",
                                                       "metadata": {"generateName": "dry-"},
                                                       "spec": _without_security(pod_spec)})
            pod_spec["nodeName"] = NO_NODE
            client.BatchV1Api(kube_api).create_namespaced_job(namespace, job)
            name = job["metadata"]["name"]
            wait_for(f"the Job controller to create {name}'s pod",
                     lambda: _pods_of(core, namespace, f"job-name={name}"), timeout=60)
        print(f"[pod-security] admitted: the operator pod, and the trial pods of "
              f"{', '.join(p.name for p in sorted((ROOT / 'examples').glob('*.yaml')))}", file=sys.stderr)
    finally:
        for path in sorted((ROOT / "examples").glob("*.yaml")):
            try:
                custom.delete_namespaced_custom_object("kubetune.io", "v1alpha1", namespace, "tuningexperiments",
                                                       yaml.safe_load(path.read_text())["metadata"]["name"])
            except ApiException:
                pass
        for d in (fullname, f"{fullname}-bare"):
            try:
                apps.patch_namespaced_deployment(d, namespace, {"spec": {"replicas": 0}})
            except ApiException:
                pass
        _uninstall(bin_dir, helm_home, control_plane, namespace, release)
