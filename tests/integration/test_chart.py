"""The Helm chart and the kustomization, with the real `helm` and `kubectl` and against the real control plane.

Offline (helm binary only): lint, render with default / namespaced / policy values, determinism, and parity of
deploy/ (kubectl kustomize) with the chart's defaults.
On the control plane: server-side dry-run of everything the chart renders (CRD included), `helm install
--dry-run=server`, a real `helm install` (objects exist, RBAC answers SubjectAccessReviews as intended, the trial
ValidatingAdmissionPolicy admits/denies real patches made with pod-bound tokens), the pre-delete hook run by
`helm uninstall` through the test node, and `kubectl apply -k deploy/ --server-side --dry-run=server`.

The operator Deployment is installed with replicaCount=0: there is no operator image here, and the test node
would otherwise run the pod's command on this host. The Pod Security Standard "restricted" admission of the operator
pod and the example trials is tested in test_trial_isolation.py.
"""

from __future__ import annotations

import json
import os
import signal
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
from controlplane import BIN_DIR_ENV, BINARIES, ControlPlane, ensure_binaries
from kubernetes import client
from kubernetes.client.rest import ApiException
from operator_process import Experiments, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
DEPLOY = ROOT / "deploy"
VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "tuningexperiments"
OBJECTIVE = Path(__file__).resolve().parent / "trials" / "objective.py"

Obj = dict[str, Any]

# What the operator must be able to do (cluster mode: anywhere), per resource: (group, resource, verbs).
OPERATOR_RULES: list[tuple[str, str, set[str]]] = [
    ("kubetune.io", "tuningexperiments", {"get", "list", "watch", "patch"}),
    ("kubetune.io", "tuningexperiments/status", {"get", "patch", "update"}),
    ("batch", "jobs", {"get", "list", "watch", "create", "delete", "patch"}),
    ("", "pods", {"get", "list", "watch"}),
    ("", "configmaps", {"get", "list", "watch", "create", "update", "patch", "delete"}),
    ("", "events", {"create", "patch"}),
    ("events.k8s.io", "events", {"create", "patch"}),
]
CLUSTER_ONLY_RULES: list[tuple[str, str, set[str]]] = [
    ("apiextensions.k8s.io", "customresourcedefinitions", {"get", "list", "watch"}),
]
# kopf lists/watches namespaces only when it is NOT cluster-wide (to match --namespace against existing ones).
NAMESPACES_RULE = ("", "namespaces", {"list", "watch"})


# -- helpers -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    try:
        return ensure_binaries()
    except RuntimeError as exc:
        pytest.fail(f"helm/kubectl are not available: {exc}\nSet {BIN_DIR_ENV} to a directory with "
                    f"{', '.join(BINARIES)}, or run `python tests/support/controlplane.py build`.", pytrace=False)


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


def _env(helm_home: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(HELM_CACHE_HOME=str(helm_home / "cache"), HELM_CONFIG_HOME=str(helm_home / "config"),
               HELM_DATA_HOME=str(helm_home / "data"))
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def run(cmd: list[str], env: dict[str, str], input: str | None = None, check: bool = True,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def helm(bin_dir: Path, helm_home: Path, *args: str, kubeconfig: Path | None = None,
         check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run([str(bin_dir / "helm"), *args], _env(helm_home, kubeconfig), check=check, timeout=timeout)


def render(bin_dir: Path, helm_home: Path, *args: str, release: str = "kubetune",
           namespace: str = "kubetune") -> list[Obj]:
    out = helm(bin_dir, helm_home, "template", release, str(CHART), "--namespace", namespace, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(objs: list[Obj], kind: str, name: str | None = None, namespace: str | None = None) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def one(objs: list[Obj], kind: str, name: str | None = None, namespace: str | None = None) -> Obj:
    found = find(objs, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''} in {namespace or '*'}, got {len(found)}"
    return found[0]


def rule_map(rules: list[Obj]) -> dict[tuple[str, str], set[str]]:
    """{(apiGroup, resource): verbs}; also asserts there is no wildcard anywhere."""
    out: dict[tuple[str, str], set[str]] = {}
    for r in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in (r.get(field) or []), f"wildcard in {r}"
        for g in r["apiGroups"]:
            for res in r["resources"]:
                out.setdefault((g, res), set()).update(r["verbs"])
    return out


def expected(rules: list[tuple[str, str, set[str]]]) -> dict[tuple[str, str], set[str]]:
    return {(g, r): v for g, r, v in rules}


def container(dep: Obj) -> Obj:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


# -- offline: lint and render --------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [
    [],
    ["--set", "watchNamespaces={ml,research}", "--set", "trialNamespaces={ml}"],
    ["--set", "finalizerCleanup.enabled=true", "--set", "trialRbac.admissionPolicy.enabled=auto"],
    ["--set", "metrics.enabled=false", "--set", "rbac.create=false", "--set", "serviceAccount.create=false",
     "--set", "trialRbac.create=false", "--set", "leaderElection.enabled=false"],
    ["--set", "replicaCount=2", "--set", "podDisruptionBudget.enabled=true"],
], ids=["default", "namespaced", "hook-and-auto-policy", "minimal", "two-replicas"])
def test_helm_lint_strict(bin_dir: Path, helm_home: Path, values: list[str]) -> None:
    out = helm(bin_dir, helm_home, "lint", "--strict", str(CHART), *values).stdout
    assert "0 chart(s) failed" in out


def test_helm_rejects_values_outside_the_schema(bin_dir: Path, helm_home: Path) -> None:
    proc = helm(bin_dir, helm_home, "template", "x", str(CHART), "--set", "replicaCount=2",
                "--set", "leaderElection.enabled=false", check=False)
    assert proc.returncode != 0 and "replicaCount" in proc.stderr, "two replicas without leader election"
    proc = helm(bin_dir, helm_home, "template", "x", str(CHART), "--set", "replicaCount=4", check=False)
    assert proc.returncode != 0 and "replicaCount" in proc.stderr
    helm(bin_dir, helm_home, "template", "x", str(CHART), "--set", "replicaCount=2")
    proc = helm(bin_dir, helm_home, "template", "x", str(CHART), "--set", "watchNamespace=ml", check=False)
    assert proc.returncode != 0 and "watchNamespace" in proc.stderr


def test_default_render_cluster_mode(bin_dir: Path, helm_home: Path) -> None:
    objs = render(bin_dir, helm_home)  # the trial policy is on by default, also when nothing is known of the cluster
    kinds = sorted((o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", "")) for o in objs)
    assert kinds == sorted([
        ("ServiceAccount", "kubetune", "kubetune"),
        ("ClusterRole", "kubetune", ""),
        ("ClusterRoleBinding", "kubetune", ""),
        ("Role", "kubetune-leader-election", "kubetune"),
        ("RoleBinding", "kubetune-leader-election", "kubetune"),
        ("Deployment", "kubetune", "kubetune"),
        ("Service", "kubetune-metrics", "kubetune"),
        ("ServiceAccount", "kubetune-trial", "kubetune"),
        ("Role", "kubetune-trial", "kubetune"),
        ("RoleBinding", "kubetune-trial", "kubetune"),
        ("ValidatingAdmissionPolicy", "kubetune-trial-pod-metrics", ""),
        ("ValidatingAdmissionPolicyBinding", "kubetune-trial-pod-metrics", ""),
    ])
    for o in objs:
        labels = o["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of"):
            assert key in labels, f"{o['kind']} {o['metadata']['name']} lacks {key}"

    cr = one(objs, "ClusterRole", "kubetune")
    assert rule_map(cr["rules"]) == expected(OPERATOR_RULES + CLUSTER_ONLY_RULES)
    crb = one(objs, "ClusterRoleBinding", "kubetune")
    assert crb["roleRef"]["name"] == "kubetune"
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "kubetune", "namespace": "kubetune"}]

    lrole = one(objs, "Role", "kubetune-leader-election", "kubetune")
    assert lrole["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kubetune"],
         "verbs": ["get", "update"]}]
    assert one(objs, "RoleBinding", "kubetune-leader-election")["subjects"] == crb["subjects"]

    dep = one(objs, "Deployment", "kubetune")
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert set(spec["selector"]["matchLabels"].items()) <= set(spec["template"]["metadata"]["labels"].items())
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "kubetune"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    c = container(dep)
    assert c["command"] == ["kubetune", "operator"]
    assert c["args"] == ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090",
                         "--leader-election", "--lease-name=kubetune"]
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in c["env"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]

    svc = one(objs, "Service", "kubetune-metrics")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]

    role = one(objs, "Role", "kubetune-trial", "kubetune")
    assert rule_map(role["rules"]) == {("", "pods"): {"patch"}}
    rb = one(objs, "RoleBinding", "kubetune-trial", "kubetune")
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "kubetune-trial", "namespace": "kubetune"}]

    binding = one(objs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == "kubetune-trial-pod-metrics"
    assert binding["spec"]["validationActions"] == ["Deny"]
    (expr,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert expr == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["kubetune"]}
    policy = one(objs, "ValidatingAdmissionPolicy")
    assert ":kubetune-trial'" in policy["spec"]["matchConditions"][0]["expression"]


def test_namespaced_render(bin_dir: Path, helm_home: Path) -> None:
    objs = render(bin_dir, helm_home, "--api-versions", VAP_API, "--set", "watchNamespaces={ml,research}",
                  "--set", "trialNamespaces={ml}")
    cr = one(objs, "ClusterRole", "kubetune")
    assert rule_map(cr["rules"]) == expected(CLUSTER_ONLY_RULES + [NAMESPACES_RULE]), \
        "namespaced mode: only reading CRDs and namespaces stays cluster-wide"
    for ns in ("ml", "research"):
        role = one(objs, "Role", "kubetune", ns)
        assert rule_map(role["rules"]) == expected(OPERATOR_RULES)
        rb = one(objs, "RoleBinding", "kubetune", ns)
        assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kubetune"}
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "kubetune", "namespace": "kubetune"}]
    args = container(one(objs, "Deployment"))["args"]
    assert "--all-namespaces" not in args
    assert args[:2] == ["--namespace=ml", "--namespace=research"]
    assert [o["metadata"]["namespace"] for o in find(objs, "ServiceAccount", "kubetune-trial")] == ["ml"]
    assert [o["metadata"]["namespace"] for o in find(objs, "Role", "kubetune-trial")] == ["ml"]
    (expr,) = one(objs, "ValidatingAdmissionPolicyBinding")["spec"]["matchResources"]["namespaceSelector"][
        "matchExpressions"]
    assert expr["values"] == ["ml"]

    # without trialNamespaces the trial RBAC follows the watched namespaces
    objs = render(bin_dir, helm_home, "--set", "watchNamespaces={ml,research}")
    assert sorted(o["metadata"]["namespace"] for o in find(objs, "Role", "kubetune-trial")) == ["ml", "research"]


def test_admission_policy_modes(bin_dir: Path, helm_home: Path) -> None:
    def parts(*args: str) -> tuple[bool, bool]:
        """(policy and binding rendered, trial Role with pods: patch rendered)"""
        objs = render(bin_dir, helm_home, *args)
        policy = bool(find(objs, "ValidatingAdmissionPolicy")) and bool(find(objs, "ValidatingAdmissionPolicyBinding"))
        roles = find(objs, "Role", "kubetune-trial")
        assert bool(roles) == bool(find(objs, "RoleBinding", "kubetune-trial"))
        return policy, bool(roles)

    auto = ["--set", "trialRbac.admissionPolicy.enabled=auto"]
    off = ["--set", "trialRbac.admissionPolicy.enabled=false"]
    unsafe = ["--set", "trialRbac.patchWithoutPolicy=true"]
    assert parts() == (True, True)                                     # default: always the policy
    assert parts("--api-versions", VAP_API, *auto) == (True, True)     # auto, the cluster serves the API
    assert parts(*auto) == (False, False)                              # auto, nothing known: no patch right either
    assert parts(*off) == (False, False)                               # no policy: termination message only
    assert parts(*off, *unsafe) == (False, True)                       # explicitly trusted trials
    warn = ["--set", "trialRbac.admissionPolicy.validationActions={Warn,Audit}"]
    assert parts(*warn) == (True, False), "a policy that does not deny does not protect"
    assert parts(*warn, *unsafe) == (True, True)
    assert parts("--set", "trialRbac.create=false") == (False, False)


def test_optional_parts_can_be_switched_off(bin_dir: Path, helm_home: Path) -> None:
    objs = render(bin_dir, helm_home, "--set", "metrics.enabled=false", "--set", "rbac.create=false",
                  "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=existing",
                  "--set", "trialRbac.create=false", "--set", "replicaCount=0")
    assert [o["kind"] for o in objs] == ["Deployment"]
    dep = objs[0]
    assert dep["spec"]["replicas"] == 0
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    c = container(dep)
    assert "--metrics-port=0" in c["args"] and [p["name"] for p in c["ports"]] == ["health"]


def test_replicas_leader_election_and_disruption_budget_render(bin_dir: Path, helm_home: Path) -> None:
    objs = render(bin_dir, helm_home, "--set", "replicaCount=2", "--set", "podDisruptionBudget.enabled=true",
                  "--set", "leaderElection.leaseName=ops-lease")
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--lease-name=ops-lease" in container(dep)["args"]
    assert one(objs, "Role", "kubetune-leader-election")["rules"][1]["resourceNames"] == ["ops-lease"]
    pdb = one(objs, "PodDisruptionBudget", "kubetune", "kubetune")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert not find(render(bin_dir, helm_home), "PodDisruptionBudget")

    # without leader election: one replica at most, Recreate, no Lease and no Lease RBAC
    objs = render(bin_dir, helm_home, "--set", "leaderElection.enabled=false")
    dep = one(objs, "Deployment")
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert not [a for a in container(dep)["args"] if a.startswith("--lease") or a == "--leader-election"]
    assert not find(objs, "Role", "kubetune-leader-election") and not find(objs, "RoleBinding",
                                                                           "kubetune-leader-election")


def test_finalizer_cleanup_hook_render(bin_dir: Path, helm_home: Path) -> None:
    objs = render(bin_dir, helm_home, "--set", "finalizerCleanup.enabled=true")
    hooks = [o for o in objs if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]
    assert {o["kind"] for o in hooks} == {"ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                          "ClusterRoleBinding", "Job"}
    for o in hooks:
        ann = o["metadata"]["annotations"]
        assert ann["helm.sh/hook"] == "pre-delete"
        assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert int(ann["helm.sh/hook-weight"]) < 0 or o["kind"] == "Job"
    cr = one(hooks, "ClusterRole")
    assert rule_map(cr["rules"]) == {("kubetune.io", "tuningexperiments"): {"get", "list", "patch"}}
    role = one(hooks, "Role")
    assert rule_map(role["rules"]) == {("apps", "deployments"): {"get", "patch"}, ("", "pods"): {"list"}}
    assert role["rules"][0]["resourceNames"] == ["kubetune"]
    job = one(hooks, "Job")
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["python", "-c"]
    assert c["args"][0].strip() == (CHART / "files" / "finalizer_cleanup.py").read_text().strip()


def test_render_is_deterministic(bin_dir: Path, helm_home: Path) -> None:
    args = ("--api-versions", VAP_API, "--set", "finalizerCleanup.enabled=true")
    first = helm(bin_dir, helm_home, "template", "kubetune", str(CHART), *args).stdout
    time.sleep(1.1)
    assert helm(bin_dir, helm_home, "template", "kubetune", str(CHART), *args).stdout == first


def _kustomize(bin_dir: Path, path: Path) -> list[Obj]:
    out = run([str(bin_dir / "kubectl"), "kustomize", str(path)], dict(os.environ)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_kustomization_matches_the_chart_defaults(bin_dir: Path, helm_home: Path) -> None:
    chart = render(bin_dir, helm_home, "--include-crds")
    kust = _kustomize(bin_dir, DEPLOY)

    def key(o: Obj) -> tuple[str, str, str]:
        return o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", "")

    trial_objs = {("ServiceAccount", "kubetune-trial"), ("Role", "kubetune-trial"), ("RoleBinding", "kubetune-trial")}
    chart_keys = {key(o) for o in chart if (o["kind"], o["metadata"]["name"]) not in trial_objs}
    kust_keys = {key(o) for o in kust if o["kind"] != "Namespace"}
    assert kust_keys == chart_keys
    assert key(one(kust, "Namespace")) == ("Namespace", "kubetune", "")

    for kind, name in [("ClusterRole", "kubetune"), ("ClusterRoleBinding", "kubetune"),
                       ("Role", "kubetune-leader-election"), ("RoleBinding", "kubetune-leader-election")]:
        a, b = one(chart, kind, name), one(kust, kind, name)
        assert a.get("rules") == b.get("rules") and a.get("subjects") == b.get("subjects")
    a, b = one(chart, "Deployment"), one(kust, "Deployment")
    for field in ("replicas", "strategy", "selector"):
        assert a["spec"][field] == b["spec"][field], field
    pa, pb = a["spec"]["template"]["spec"], b["spec"]["template"]["spec"]
    assert pa == pb
    assert one(chart, "Service")["spec"] == one(kust, "Service")["spec"]
    assert one(chart, "CustomResourceDefinition")["spec"] == one(kust, "CustomResourceDefinition")["spec"]
    # the same policy; the kustomize binding has no namespace selector (every namespace)
    assert one(chart, "ValidatingAdmissionPolicy")["spec"] == one(kust, "ValidatingAdmissionPolicy")["spec"]
    kb = one(kust, "ValidatingAdmissionPolicyBinding")["spec"]
    assert kb["policyName"] == "kubetune-trial-pod-metrics" and kb["validationActions"] == ["Deny"]
    for o in kust:
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubetune"

    trial = _kustomize(bin_dir, DEPLOY / "trial-rbac")
    chart_trial = [o for o in chart if (o["kind"], o["metadata"]["name"]) in trial_objs]
    assert sorted(o["kind"] for o in trial) == sorted(o["kind"] for o in chart_trial)
    assert one(trial, "Role")["rules"] == one(chart_trial, "Role")["rules"]


# -- against the control plane -------------------------------------------------------------------------------------


def test_rendered_chart_passes_server_side_dry_run(control_plane: ControlPlane, bin_dir: Path, helm_home: Path,
                                                   namespace: str) -> None:
    """Every object the chart renders (CRD, RBAC, Deployment, policy, hook) is accepted by the real API server."""
    release = f"dry-{namespace}"
    for extra in ([], ["--set", f"watchNamespaces={{{namespace}}}", "--set", "finalizerCleanup.enabled=true"],
                  ["--set", "replicaCount=2", "--set", "podDisruptionBudget.enabled=true"]):
        manifest = helm(bin_dir, helm_home, "template", release, str(CHART), "--namespace", namespace,
                        "--include-crds", "--api-versions", VAP_API, *extra).stdout
        proc = run([str(bin_dir / "kubectl"), "apply", "--server-side", "--force-conflicts", "--dry-run=server",
                    "--field-manager=kubetune-test", "-f", "-"],
                   _env(helm_home, control_plane.kubeconfig), input=manifest)
        assert "(server dry run)" in proc.stdout
        assert "validatingadmissionpolicy.admissionregistration.k8s.io" in proc.stdout
    out = helm(bin_dir, helm_home, "install", release, str(CHART), "--namespace", namespace, "--dry-run=server",
               kubeconfig=control_plane.kubeconfig).stdout
    assert "kind: ValidatingAdmissionPolicy" in out, "helm install sees the cluster's VAP API (auto mode)"
    notes = out[out.index("NOTES:"):]
    for text in ("watches TuningExperiments in every namespace", "serviceAccountName: kubetune-trial",
                 f"The ServiceAccount exists in: {namespace}.", "A ValidatingAdmissionPolicy limits it",
                 "kubectl apply --server-side --force-conflicts -f", "kubectl delete tex --all --all-namespaces"):
        assert text in notes, f"NOTES.txt lacks {text!r}:\n{notes}"
    assert helm(bin_dir, helm_home, "list", "-n", namespace, "-q", kubeconfig=control_plane.kubeconfig).stdout.strip() == ""


@pytest.fixture
def release(control_plane: ControlPlane, bin_dir: Path, helm_home: Path, namespace: str,
            kube_api: client.ApiClient) -> Iterator[str]:
    """A real `helm install` of the chart into the test namespace (operator paused: replicaCount=0)."""
    name = f"kt-{uuid.uuid4().hex[:6]}"
    helm(bin_dir, helm_home, "install", name, str(CHART), "--namespace", namespace, "--set", "replicaCount=0",
         "--set", "finalizerCleanup.enabled=true", "--wait", "--timeout", "2m", kubeconfig=control_plane.kubeconfig)
    try:
        yield name
    finally:
        helm(bin_dir, helm_home, "uninstall", name, "--namespace", namespace, "--wait", "--timeout", "3m",
             "--no-hooks", kubeconfig=control_plane.kubeconfig, check=False)


def _sar(api: client.ApiClient, user: str, verb: str, group: str, resource: str, namespace: str | None) -> bool:
    sub = resource.split("/", 1)
    attrs = {"verb": verb, "group": group, "resource": sub[0]}
    if len(sub) == 2:
        attrs["subresource"] = sub[1]
    if namespace:
        attrs["namespace"] = namespace
    review = client.AuthorizationV1Api(api).create_subject_access_review(
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
         "spec": {"user": user, "groups": ["system:serviceaccounts", "system:authenticated"],
                  "resourceAttributes": attrs}})
    return bool(review.status.allowed)


def test_helm_install_creates_the_operator_objects_and_least_privilege_rbac(
        release: str, namespace: str, kube_api: client.ApiClient) -> None:
    fullname = release if "kubetune" in release else f"{release}-kubetune"
    apps, core, rbac = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    dep = apps.read_namespaced_deployment(fullname, namespace)
    assert dep.spec.replicas == 0 and dep.spec.strategy.type == "RollingUpdate"
    c = dep.spec.template.spec.containers[0]
    assert c.command == ["kubetune", "operator"] and c.liveness_probe.http_get.path == "/healthz"
    core.read_namespaced_service_account(fullname, namespace)
    core.read_namespaced_service_account("kubetune-trial", namespace)
    core.read_namespaced_service(f"{fullname}-metrics", namespace)
    cr = rbac.read_cluster_role(fullname)
    assert cr.metadata.labels["app.kubernetes.io/instance"] == release
    rbac.read_cluster_role_binding(fullname)
    client.ApiextensionsV1Api(kube_api).read_custom_resource_definition("tuningexperiments.kubetune.io")
    client.AdmissionregistrationV1Api(kube_api).read_validating_admission_policy(f"{fullname}-trial-pod-metrics")

    operator = f"system:serviceaccount:{namespace}:{fullname}"
    other_ns = "default"
    for group, resource, verbs in OPERATOR_RULES:
        for verb in verbs:
            for ns in (namespace, other_ns):  # cluster mode: everywhere
                assert _sar(kube_api, operator, verb, group, resource, ns), f"operator cannot {verb} {resource}"
    for verb in ("get", "list", "watch"):
        assert _sar(kube_api, operator, verb, "apiextensions.k8s.io", "customresourcedefinitions", None)
    for verb in ("list", "watch", "get"):  # kopf does not scan namespaces in cluster mode
        assert not _sar(kube_api, operator, verb, "", "namespaces", None)
    denied = [("patch", "", "pods"), ("update", "", "pods"), ("delete", "", "pods"), ("create", "", "pods"),
              ("get", "", "secrets"), ("list", "", "secrets"), ("update", "kubetune.io", "tuningexperiments"),
              ("delete", "kubetune.io", "tuningexperiments"), ("create", "apps", "deployments"),
              ("update", "batch", "jobs"), ("create", "", "pods/exec")]
    for verb, group, resource in denied:
        assert not _sar(kube_api, operator, verb, group, resource, namespace), f"operator may {verb} {resource}"
    for verb in ("create", "update", "delete"):
        assert not _sar(kube_api, operator, verb, "apiextensions.k8s.io", "customresourcedefinitions", None)
    # leader election: its own Lease in the release namespace, nothing else
    assert _sar_named(kube_api, operator, "create", "leases", namespace, None)
    for verb in ("get", "update"):
        assert _sar_named(kube_api, operator, verb, "leases", namespace, fullname)
        assert not _sar_named(kube_api, operator, verb, "leases", namespace, "kube-scheduler")
        assert not _sar_named(kube_api, operator, verb, "leases", other_ns, fullname)
    for verb in ("delete", "list", "watch", "patch"):
        assert not _sar_named(kube_api, operator, verb, "leases", namespace, fullname)
    assert not _sar_named(kube_api, operator, "create", "leases", other_ns, None)

    trial = f"system:serviceaccount:{namespace}:kubetune-trial"
    assert _sar(kube_api, trial, "patch", "", "pods", namespace)
    for verb in ("get", "list", "update", "delete", "create"):
        assert not _sar(kube_api, trial, verb, "", "pods", namespace), f"trial may {verb} pods"
    assert not _sar(kube_api, trial, "patch", "", "pods", other_ns), "trial RBAC is namespaced"
    assert not _sar(kube_api, trial, "patch", "", "pods/status", namespace)
    assert not _sar(kube_api, trial, "get", "kubetune.io", "tuningexperiments", namespace)


def _sar_named(api: client.ApiClient, user: str, verb: str, resource: str, namespace: str,
               name: str | None) -> bool:
    attrs = {"verb": verb, "group": "coordination.k8s.io", "resource": resource, "namespace": namespace}
    if name:
        attrs["name"] = name
    review = client.AuthorizationV1Api(api).create_subject_access_review(
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
         "spec": {"user": user, "groups": ["system:serviceaccounts", "system:authenticated"],
                  "resourceAttributes": attrs}})
    return bool(review.status.allowed)


def _pod(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "policy-test"},
                         "annotations": {"team": "vision"}},
            # Bound to a node that does not exist: neither scheduled nor run (the test node ignores it).
            "spec": {"nodeName": "kubetune-policy-test-no-node", "serviceAccountName": "kubetune-trial",
                     "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "trial", "image": "kubetune-trial:0.1.0", "command": ["sleep", "300"]}]}}


def _patch_as(cp: ControlPlane, token: str, namespace: str, pod: str, patch: Obj) -> tuple[int, str]:
    """PATCH a pod the way the trial SDK does (merge patch, bearer token); (HTTP status, message)."""
    req = urllib.request.Request(
        f"{cp.server}/api/v1/namespaces/{namespace}/pods/{pod}", data=json.dumps(patch).encode(), method="PATCH",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"})
    ctx = ssl.create_default_context(cafile=str(cp.ca_file))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        try:
            return e.code, json.loads(body).get("message", body)
        except ValueError:
            return e.code, body


def test_trial_admission_policy_pins_patches_to_the_own_pod_and_kubetune_annotations(
        release: str, namespace: str, control_plane: ControlPlane, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    a = core.create_namespaced_pod(namespace, _pod("trial-a"))
    core.create_namespaced_pod(namespace, _pod("trial-b"))
    try:
        _check_trial_policy(control_plane, core, namespace, a.metadata.uid)
    finally:
        for pod in ("trial-a", "trial-b"):  # no kubelet will confirm a graceful deletion
            core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)


def _check_trial_policy(control_plane: ControlPlane, core: client.CoreV1Api, namespace: str, a_uid: str) -> None:
    token = control_plane.token_request(namespace, "kubetune-trial", bound_pod=("trial-a", a_uid))
    metrics = {"metadata": {"annotations": {"kubetune.io/metrics": json.dumps({"final": {"accuracy": 0.9}})}}}

    # The policy is enforced once the API server has loaded it: wait for the first denial.
    deadline = time.monotonic() + 30
    while True:
        status, message = _patch_as(control_plane, token, namespace, "trial-b", metrics)
        if status == 403 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 403, f"patching another pod must be denied, got {status} {message}"
    assert "may only patch their own pod (trial-a), not trial-b" in message

    assert _patch_as(control_plane, token, namespace, "trial-a", metrics) == (200, "")
    got = core.read_namespaced_pod("trial-a", namespace).metadata.annotations
    assert json.loads(got["kubetune.io/metrics"]) == {"final": {"accuracy": 0.9}}
    assert got["team"] == "vision"
    # other kubetune.io/ annotations are fine too, and removing one
    assert _patch_as(control_plane, token, namespace, "trial-a",
                     {"metadata": {"annotations": {"kubetune.io/progress": "3"}}})[0] == 200
    assert _patch_as(control_plane, token, namespace, "trial-a",
                     {"metadata": {"annotations": {"kubetune.io/progress": None}}})[0] == 200

    for patch, words in [
        ({"metadata": {"annotations": {"team": "audio"}}}, "annotations under kubetune.io/"),
        ({"metadata": {"annotations": {"team": None}}}, "annotations under kubetune.io/"),
        ({"metadata": {"annotations": {"example.com/x": "1"}}}, "annotations under kubetune.io/"),
        ({"metadata": {"labels": {"kubetune.io/trial": "forged"}}}, "not labels"),
        ({"metadata": {"finalizers": ["example.com/keep"]}}, "not labels"),
        ({"spec": {"activeDeadlineSeconds": 5}}, "not labels"),
    ]:
        status, message = _patch_as(control_plane, token, namespace, "trial-a", patch)
        assert status == 403 and words in message, (patch, status, message)

    unbound = control_plane.token_request(namespace, "kubetune-trial")
    status, message = _patch_as(control_plane, unbound, namespace, "trial-a", metrics)
    assert status == 403 and "not bound to a pod" in message

    # RBAC, not the policy: no reads at all
    req = urllib.request.Request(f"{control_plane.server}/api/v1/namespaces/{namespace}/pods/trial-a",
                                 headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(control_plane.ca_file)), timeout=30)
    assert err.value.code == 403

    # Nobody else is affected: the admin can still change labels of a trial pod.
    core.patch_namespaced_pod("trial-a", namespace, {"metadata": {"labels": {"checked": "yes"}}})


def _experiment(name: str, finalizers: list[str]) -> Obj:
    doc = yaml.safe_load((ROOT / "examples" / "digits-svm.yaml").read_text())
    doc["metadata"] = {"name": name, "finalizers": finalizers}
    return doc


def test_helm_uninstall_hook_releases_experiments(
        control_plane: ControlPlane, node_agent: Any, bin_dir: Path, helm_home: Path, namespace: str,
        kube_api: client.ApiClient) -> None:
    """finalizerCleanup: `helm uninstall` runs the pre-delete Job (on the test node, with the hook's own
    ServiceAccount token) which removes the operator's finalizer; the experiments stay."""
    name = f"kt-{uuid.uuid4().hex[:6]}"
    fullname = f"{name}-kubetune"
    helm(bin_dir, helm_home, "install", name, str(CHART), "--namespace", namespace, "--set", "replicaCount=0",
         "--set", "finalizerCleanup.enabled=true", "--set", "finalizerCleanup.activeDeadlineSeconds=120",
         "--wait", "--timeout", "2m", kubeconfig=control_plane.kubeconfig)
    custom = client.CustomObjectsApi(kube_api)
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                               _experiment("kept", ["kubetune.io/finalizer", "example.com/other"]))
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                               _experiment("being-deleted", ["kubetune.io/finalizer"]))
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "being-deleted")
        proc = helm(bin_dir, helm_home, "uninstall", name, "--namespace", namespace, "--wait", "--timeout", "3m",
                    kubeconfig=control_plane.kubeconfig, check=False, timeout=240)
        if proc.returncode != 0:
            logs = []
            for pod in client.CoreV1Api(kube_api).list_namespaced_pod(
                    namespace, label_selector=f"job-name={fullname}-finalizer-cleanup").items:
                path = node_agent.log_path(namespace, pod.metadata.name)
                logs.append(f"--- {pod.metadata.name} ({pod.status.phase}):\n"
                            + (Path(path).read_text() if path and Path(path).exists() else "(no log)"))
            pytest.fail(f"helm uninstall failed:\n{proc.stdout}\n{proc.stderr}\n" + "\n".join(logs))
        kept = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "kept")
        assert kept["metadata"]["finalizers"] == ["example.com/other"]
        with pytest.raises(ApiException) as err:
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "being-deleted")
        assert err.value.status == 404
        # hook objects are deleted after success, the release's objects by the uninstall
        rbac = client.RbacAuthorizationV1Api(kube_api)
        for read in (lambda: rbac.read_cluster_role(f"{fullname}-finalizer-cleanup"),
                     lambda: rbac.read_cluster_role(fullname),
                     lambda: client.BatchV1Api(kube_api).read_namespaced_job(f"{fullname}-finalizer-cleanup",
                                                                            namespace)):
            with pytest.raises(ApiException) as err:
                read()
            assert err.value.status == 404
    finally:
        helm(bin_dir, helm_home, "uninstall", name, "--namespace", namespace, "--no-hooks",
             kubeconfig=control_plane.kubeconfig, check=False)
        for exp in ("kept", "being-deleted"):
            try:
                custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, exp,
                                                      {"metadata": {"finalizers": None}})
            except ApiException:
                pass


def test_kubectl_apply_k_server_dry_run(control_plane: ControlPlane, bin_dir: Path, helm_home: Path,
                                        namespace: str, kube_api: client.ApiClient, tmp_path: Path) -> None:
    core = client.CoreV1Api(kube_api)
    created = False
    try:
        core.read_namespace("kubetune")
    except ApiException as e:
        assert e.status == 404
        # a dry-run Namespace is not persisted, and the namespaced objects need it
        core.create_namespace({"metadata": {"name": "kubetune", "labels": {"kubetune.io/test": "true"}}})
        created = True
    env = _env(helm_home, control_plane.kubeconfig)
    kubectl = str(bin_dir / "kubectl")
    try:
        proc = run([kubectl, "apply", "-k", str(DEPLOY), "--server-side", "--force-conflicts", "--dry-run=server",
                    "--field-manager=kubetune-test"], env)
        for what in ("customresourcedefinition.apiextensions.k8s.io/tuningexperiments.kubetune.io",
                     "clusterrole.rbac.authorization.k8s.io/kubetune", "deployment.apps/kubetune",
                     "serviceaccount/kubetune", "service/kubetune-metrics",
                     "validatingadmissionpolicy.admissionregistration.k8s.io/kubetune-trial-pod-metrics"):
            assert what in proc.stdout, proc.stdout
        # the trial RBAC through an overlay into the test namespace, as docs/install.md shows
        overlay = tmp_path / "trials"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": namespace,
            "resources": [os.path.relpath(DEPLOY / "trial-rbac", overlay)]}))
        proc = run([kubectl, "apply", "-k", str(overlay), "--server-side", "--dry-run=server",
                    "--field-manager=kubetune-test"], env)
        assert "role.rbac.authorization.k8s.io/kubetune-trial serverside-applied (server dry run)" in proc.stdout
        rendered = run([kubectl, "kustomize", str(overlay)], env).stdout
        rb = next(d for d in yaml.safe_load_all(rendered) if d["kind"] == "RoleBinding")
        assert rb["subjects"][0]["namespace"] == namespace
    finally:
        if created:
            core.delete_namespace("kubetune")


@pytest.mark.parametrize("mode", ["namespaced", "cluster"])
def test_operator_runs_under_the_charts_rbac(
        mode: str, control_plane: ControlPlane, node_agent: Any, bin_dir: Path, helm_home: Path, namespace: str,
        kube_api: client.ApiClient, tmp_path: Path) -> None:
    """The real operator, authenticated as the chart's ServiceAccount (namespaced mode: a Role in the namespace;
    cluster mode: the ClusterRole), runs an experiment to success with leader election on (the chart's Lease
    Role); its trials run as the chart's trial ServiceAccount, so the SDK's annotation patches go through the
    trial Role and the ValidatingAdmissionPolicy. RBAC denies the operator nothing along the way."""
    name = f"kt-{uuid.uuid4().hex[:6]}"
    fullname = f"{name}-kubetune"
    values = ["--set", f"watchNamespaces={{{namespace}}}"] if mode == "namespaced" else []
    scope = ["--namespace", namespace] if mode == "namespaced" else ["--all-namespaces"]
    helm(bin_dir, helm_home, "install", name, str(CHART), "--namespace", namespace, "--set", "replicaCount=0",
         *values, "--wait", "--timeout", "2m", kubeconfig=control_plane.kubeconfig)
    log_path = tmp_path / "operator.log"
    proc: subprocess.Popen[bytes] | None = None
    ex = Experiments(kube_api, namespace)
    try:
        kubeconfig = control_plane.service_account_kubeconfig(namespace, fullname)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kubetune", "operator", *scope, "--liveness", "", "--metrics-port", "0",
                 "--leader-election", f"--lease-name={fullname}", f"--lease-namespace={namespace}"],
                env={**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        ex.create({
            "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": "rbac"},
            "spec": {
                "objective": {"metric": "score", "goal": "maximize"},
                "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
                "algorithm": {"name": "random", "seed": 3},
                "maxTrials": 3, "parallelTrials": 2,
                "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                    "serviceAccountName": "kubetune-trial", "restartPolicy": "Never",
                    "containers": [{"name": "trial", "image": "kubetune-trial:test",
                                    "command": ["python", str(OBJECTIVE), "--x", "${params.x}"]}],
                }}}},
            },
        })

        def debug() -> str:
            return (f"status: {ex.get('rbac').get('status')}\noperator log:\n"
                    + "\n".join(log_path.read_text(errors="replace").splitlines()[-40:]))

        done = wait_for("the experiment to finish", lambda: ex.finished("rbac"), timeout=240, on_timeout=debug)
        assert done["status"] == "True", debug()
        status = ex.get("rbac")["status"]
        assert status["trials"]["succeeded"] == 3
        records = ex.records("rbac")
        assert sorted(records) == [0, 1, 2]
        for rec in records.values():
            # every step arrived: the SDK's pod-annotation patches passed the trial Role and the admission policy
            assert len(rec["curve"]) == 3, rec
        # RBAC denials read 'x is forbidden: User "system:serviceaccount:..." cannot <verb> resource ...'
        log_text = log_path.read_text(errors="replace")
        denied = [line for line in log_text.splitlines()
                  if "is forbidden: User" in line or "Not enough permissions" in line]
        assert not denied, "the operator was denied something:\n" + "\n".join(denied[:20])
        assert "leading as" in log_text and "leader election:" not in log_text, log_text[-3000:]
        lease = client.CoordinationV1Api(kube_api).read_namespaced_lease(fullname, namespace)
        assert lease.spec.holder_identity.endswith(f"_{proc.pid}")
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        try:
            ex.delete("rbac")
        except ApiException:
            pass
        helm(bin_dir, helm_home, "uninstall", name, "--namespace", namespace, "--no-hooks",
             kubeconfig=control_plane.kubeconfig, check=False)
