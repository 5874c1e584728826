"""Static checks of the install artifacts (no cluster, no helm): the Helm chart, deploy/ (kustomize), the
Dockerfiles. Rendering, linting and applying the chart is tested in tests/integration/test_chart.py."""

from __future__ import annotations

import json
import py_compile
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
CRD_NAME = "tuningexperiments.kubetune.io.yaml"
DEPLOY = ROOT / "deploy"


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# -- CRD ----------------------------------------------------------------------------------------------------------


def test_chart_crd_is_identical_to_the_generated_crd() -> None:
    top = (ROOT / "crds" / CRD_NAME).read_text()
    chart = (CHART / "crds" / CRD_NAME).read_text()
    assert chart == top, (
        "charts/kubetune/crds/ is out of date with crds/: run hack/sync-crds.sh "
        f"(or `kubetune crd -o charts/kubetune/crds/{CRD_NAME}`)")


def test_chart_crds_dir_holds_exactly_the_top_level_crds() -> None:
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml") if p.name != "kustomization.yaml")
    chart = sorted(p.name for p in (CHART / "crds").iterdir())
    assert chart == top


def test_crds_kustomization_lists_every_crd() -> None:
    kust = yaml.safe_load((ROOT / "crds" / "kustomization.yaml").read_text())
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kust["resources"]) == top


# -- Chart.yaml and values ----------------------------------------------------------------------------------------


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "kubetune"
    assert chart["type"] == "application"
    assert chart["kubeVersion"] == ">=1.30.0-0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"], "appVersion is the operator version (pyproject.toml)"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])


def _schema_and_values() -> tuple[dict[str, Any], dict[str, Any]]:
    return json.loads((CHART / "values.schema.json").read_text()), yaml.safe_load((CHART / "values.yaml").read_text())


def test_values_validate_against_the_schema() -> None:
    import jsonschema
    schema, values = _schema_and_values()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    cls(schema).validate(values)


def _walk_schema(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            yield path, node
        for key in ("properties",):
            for name, sub in node.get(key, {}).items():
                yield from _walk_schema(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from _walk_schema(node["items"], f"{path}[]")


def test_schema_is_strict() -> None:
    schema, _ = _schema_and_values()
    loose = [path or "<root>" for path, node in _walk_schema(schema) if node.get("additionalProperties") is not False]
    assert not loose, f"objects with declared properties must reject unknown keys: {loose}"


def test_every_values_key_is_in_the_schema_and_documented() -> None:
    schema, values = _schema_and_values()
    missing = sorted(set(values) - set(schema["properties"]))
    assert not missing
    text = (CHART / "values.yaml").read_text()
    # every top-level key has a comment in the lines right above it
    lines = text.splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Za-z]\w*):", line)
        if m and not any(lines[j].startswith("#") for j in range(max(0, i - 3), i)):
            undocumented.append(m.group(1))
    allowed = {"image", "serviceAccount", "rbac", "operator", "metrics", "liveness", "trialRbac",
               "terminationGracePeriodSeconds", "priorityClassName", "nodeSelector", "tolerations", "affinity",
               "podLabels"}  # grouped keys documented inside, or self-explanatory Kubernetes fields
    assert set(undocumented) <= allowed, f"undocumented values: {sorted(set(undocumented) - allowed)}"


@pytest.mark.parametrize(("patch", "why"), [
    ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "without leader election: at most one replica"),
    ({"replicaCount": 4}, "at most 3 replicas"),
    ({"leaderElection": {"enabled": "yes"}}, "a boolean"),
    ({"leaderElection": {"enabled": True, "leaseName": "Not A Name"}}, "a DNS name"),
    ({"podDisruptionBudget": {"enabled": True, "maxUnavailable": 0}}, "a PDB that blocks every drain"),
    ({"trialRbac": {"create": True, "serviceAccountName": "kubetune-trial", "patchWithoutPolicy": "no",
                    "admissionPolicy": {"enabled": True, "validationActions": ["Deny"]}}}, "a boolean"),
    ({"unknownKey": True}, "unknown keys are rejected"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "namespace names are DNS labels"),
    ({"watchNamespaces": "ml"}, "a list, not a string"),
    ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy enum"),
    ({"trialRbac": {"create": True, "serviceAccountName": "kubetune-trial",
                    "admissionPolicy": {"enabled": "yes", "validationActions": ["Deny"]}}}, "auto|true|false"),
    ({"metrics": {"enabled": True, "port": 70000}}, "port range"),
])
def test_schema_rejects_bad_values(patch: dict[str, Any], why: str) -> None:
    import jsonschema
    schema, values = _schema_and_values()
    values.update(patch)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, schema)


def test_schema_accepts_namespaced_mode_and_policy_modes() -> None:
    import jsonschema
    schema, values = _schema_and_values()
    for enabled in ("auto", True, False):
        values.update(watchNamespaces=["ml", "research"], trialNamespaces=["ml"], replicaCount=0)
        values["trialRbac"]["admissionPolicy"]["enabled"] = enabled
        jsonschema.validate(values, schema)


def test_defaults_are_safe_for_several_replicas_and_untrusted_trials() -> None:
    import jsonschema
    schema, values = _schema_and_values()
    assert values["leaderElection"]["enabled"] is True
    assert values["trialRbac"]["admissionPolicy"]["enabled"] is True
    assert values["trialRbac"]["admissionPolicy"]["validationActions"] == ["Deny"]
    assert values["trialRbac"]["patchWithoutPolicy"] is False
    for n in (0, 1, 2, 3):
        jsonschema.validate({**values, "replicaCount": n}, schema)
    jsonschema.validate({**values, "replicaCount": 1, "leaderElection": {"enabled": False}}, schema)


def _restricted_problems(pod: dict[str, Any], containers: list[dict[str, Any]]) -> list[str]:
    """The Pod Security Standard "restricted" checks that concern what a template sets (the API server's PodSecurity
    admission is the real judge: see tests/integration/test_trial_isolation.py)."""
    problems = []
    psc = pod.get("securityContext") or {}
    if (psc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("pod seccompProfile")
    for c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{c['name']}: capabilities.drop")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            problems.append(f"{c['name']}: runAsNonRoot")
    return problems


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")))
def test_example_trial_templates_are_restricted(example: str) -> None:
    doc = yaml.safe_load((ROOT / "examples" / example).read_text())
    pod = doc["spec"]["trialTemplate"]["spec"]["template"]["spec"]
    assert _restricted_problems(pod, pod["containers"]) == []


def test_operator_pod_defaults_are_restricted() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert _restricted_problems({"securityContext": values["podSecurityContext"]},
                                [{"name": "operator", "securityContext": values["securityContext"]}]) == []
    dep = next(o for o in _yaml_docs(DEPLOY / "deployment.yaml") if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert _restricted_problems(pod, pod["containers"]) == []
    ns = next(o for o in _yaml_docs(DEPLOY / "namespace.yaml") if o["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# -- templates ----------------------------------------------------------------------------------------------------

NONDETERMINISTIC = re.compile(
    r"\b(randAlphaNum|randAlpha|randNumeric|randAscii|randBytes|randInt|uuidv4|now|date|dateInZone|unixEpoch|"
    r"genCA|genPrivateKey|genSelfSignedCert|genSignedCert|derivePassword|htpasswd)\b")


def _template_files() -> list[Path]:
    return sorted(p for p in (CHART / "templates").iterdir() if p.is_file())


def test_templates_have_no_random_values_or_timestamps() -> None:
    offenders = []
    for path in _template_files():
        for action in re.findall(r"\{\{(.*?)\}\}", path.read_text(), flags=re.S):
            if action.strip().lstrip("-").strip().startswith("/*"):
                continue
            if NONDETERMINISTIC.search(action):
                offenders.append(f"{path.name}: {{{{{action.strip()}}}}}")
    assert not offenders, "GitOps diff noise: " + "; ".join(offenders)


def test_templates_do_not_use_lookup() -> None:
    # `lookup` renders differently under `helm template` / Argo CD than under `helm install`.
    for path in _template_files():
        assert not re.search(r"\blookup\b", path.read_text()), path.name


WILDCARD = re.compile(r"""(["']\*["']|-\s+\*\s*$|\[\s*\*\s*\])""", re.M)


def test_chart_rbac_has_no_wildcards() -> None:
    for path in _template_files():
        assert not WILDCARD.search(path.read_text()), f"wildcard in {path.name}"


def _rules(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj.get("rules") or []


def test_deploy_rbac_has_no_wildcards_and_no_pods_patch_for_the_operator() -> None:
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for obj in _yaml_docs(path):
            if obj.get("kind") not in ("ClusterRole", "Role"):
                continue
            for rule in _rules(obj):
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(field, []), f"{path.name} {obj['metadata']['name']}: {rule}"
            if obj["metadata"]["name"] == "kubetune" and obj["kind"] == "ClusterRole":
                for rule in _rules(obj):
                    if "pods" in rule["resources"]:
                        assert set(rule["verbs"]) == {"get", "list", "watch"}


def test_trial_role_allows_only_pods_patch() -> None:
    role = next(o for o in _yaml_docs(DEPLOY / "trial-rbac" / "trial-rbac.yaml") if o["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
    text = (CHART / "templates" / "trial-rbac.yaml").read_text()
    rules = re.findall(r"^\s+- apiGroups:.*$", text, flags=re.M)
    assert len(rules) == 1 and 'verbs: ["patch"]' in text


def test_every_chart_object_gets_the_common_labels() -> None:
    for path in _template_files():
        if path.suffix != ".yaml":
            continue
        text = path.read_text()
        kinds = len(re.findall(r"^kind: ", text, flags=re.M))
        labelled = len(re.findall(r'include "kubetune\.labels"', text))
        assert labelled >= kinds, f"{path.name}: {kinds} objects but {labelled} label blocks"


def test_finalizer_cleanup_script_compiles(tmp_path: Path) -> None:
    py_compile.compile(str(CHART / "files" / "finalizer_cleanup.py"), cfile=str(tmp_path / "x.pyc"), doraise=True)


def test_argocd_files_exist() -> None:
    assert (CHART / "argocd" / "health.lua").is_file()
    assert (CHART / "argocd" / "argocd-cm.yaml").is_file()


# -- deploy/ (kubectl apply -k) ------------------------------------------------------------------------------------


def test_kustomizations_reference_existing_files() -> None:
    for kfile in [DEPLOY / "kustomization.yaml", DEPLOY / "trial-rbac" / "kustomization.yaml",
                  ROOT / "crds" / "kustomization.yaml"]:
        kust = yaml.safe_load(kfile.read_text())
        for res in kust["resources"]:
            target = (kfile.parent / res).resolve()
            assert target.exists(), f"{kfile}: {res} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), f"{res} is a directory without kustomization.yaml"


def test_deploy_has_no_namespace_transformer_and_namespaces_are_explicit() -> None:
    # a `namespace:` field would also be stamped on the cluster-scoped ValidatingAdmissionPolicy
    assert "namespace" not in yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                      "ValidatingAdmissionPolicyBinding", "CustomResourceDefinition"}
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for obj in _yaml_docs(path):
            if obj["kind"] in cluster_scoped:
                assert "namespace" not in obj["metadata"], f"{path.name}: {obj['kind']}"
            else:
                assert obj["metadata"].get("namespace") == "kubetune", f"{path.name}: {obj['kind']}"


def test_deploy_deployment_runs_the_operator_like_the_chart() -> None:
    dep = next(o for o in _yaml_docs(DEPLOY / "deployment.yaml") if o["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["kubetune", "operator"]
    assert "--all-namespaces" in c["args"]
    assert "--leader-election" in c["args"] and "--lease-name=kubetune" in c["args"]
    role = next(o for o in _yaml_docs(DEPLOY / "rbac.yaml") if o["kind"] == "Role")
    assert role["metadata"] == {**role["metadata"], "name": "kubetune-leader-election", "namespace": "kubetune"}
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kubetune"],
         "verbs": ["get", "update"]}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True


# -- Dockerfiles ---------------------------------------------------------------------------------------------------


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        parts = line.split()
        if parts and parts[0].upper() in ("COPY", "ADD") and not any(p.startswith("--from") for p in parts):
            sources += [p for p in parts[1:-1] if not p.startswith("--")]
    return sources


@pytest.mark.parametrize(("dockerfile", "context"), [
    ("operator/Dockerfile", "."),
    ("trial_image/Dockerfile", "trial_image"),
])
def test_dockerfiles_copy_existing_files_and_run_as_non_root(dockerfile: str, context: str) -> None:
    path = ROOT / dockerfile
    text = path.read_text()
    # plain `docker build` gets the official Python image; hack/build-images.sh passes its Debian-made base as BASE
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text, flags=re.M)
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms and all(f == "${BASE}" for f in froms), froms
    sources = _copy_sources(path)
    assert sources
    for src in sources:
        assert (ROOT / context / src).exists(), f"{dockerfile}: COPY {src} (context {context}/) does not exist"
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "the final USER must be a numeric non-root uid (for runAsNonRoot)"


def test_operator_image_entrypoint_and_chart_uid_agree() -> None:
    text = (ROOT / "operator" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["kubetune", "operator"]' in text
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = re.findall(r"^USER\s+(\d+)", text, flags=re.M)[-1]
    assert values["podSecurityContext"]["runAsUser"] == int(uid)


def test_trial_sdk_is_installable_on_its_own_without_dependencies() -> None:
    project = tomllib.loads((ROOT / "trial_image" / "pyproject.toml").read_text())["project"]
    assert project["name"] == "kubetune-trial"
    assert project["dependencies"] == []
    top = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == top["version"]


# -- monitoring: ServiceMonitor and Grafana dashboard ----------------------------------------------------------------


DASHBOARD = CHART / "dashboards" / "kubetune.json"


def test_monitoring_values_are_off_by_default_and_checked_by_the_schema() -> None:
    import jsonschema
    schema, values = _schema_and_values()
    assert values["serviceMonitor"]["enabled"] is False and values["grafanaDashboard"]["enabled"] is False
    assert values["grafanaDashboard"]["labels"] == {"grafana_dashboard": "1"}
    on = {**values, "serviceMonitor": {**values["serviceMonitor"], "enabled": True, "interval": "1m30s",
                                       "scrapeTimeout": "10s", "labels": {"release": "prometheus"}},
          "grafanaDashboard": {**values["grafanaDashboard"], "enabled": True}}
    jsonschema.validate(on, schema)
    for bad in ({"serviceMonitor": {"enabled": True, "interval": "soon"}},
                {"serviceMonitor": {"enabled": "yes"}},
                {"serviceMonitor": {"enabled": True, "namespaceSelector": {}}},
                {"grafanaDashboard": {"enabled": True, "labels": {"grafana_dashboard": 1}}},
                {"grafanaDashboard": {"labels": {}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**values, **bad}, schema)


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_dashboard_queries_only_metrics_the_operator_exports_and_covers_its_histograms() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from kubetune.k8s import prometheus

    families = list(text_string_to_metric_families(prometheus.render()))
    exported = ({s.name for f in families for s in f.samples} | {f.name for f in families}
                | {f"{f.name}_total" for f in families if f.type == "counter"})  # labelled: no sample before use
    exprs = _dashboard_exprs()
    used = {m for e in exprs for m in re.findall(r"\b((?:kubetune|process)_[a-z_]+)\b", e)}
    assert used and used <= exported, sorted(used - exported)
    histograms = {f.name for f in families if f.type == "histogram" and f.name.startswith("kubetune_")}
    assert {h for h in histograms if f"{h}_bucket" in used} == histograms
    assert all('job=~"$job"' in e for e in exprs)


def test_dashboard_is_well_formed_for_grafana() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "kubetune-operator" and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {panel['title']} overlaps another"
        cells |= mine
        assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]


def test_servicemonitor_and_dashboard_templates_match_the_service_and_the_file() -> None:
    monitor = (CHART / "templates" / "servicemonitor.yaml").read_text()
    service = (CHART / "templates" / "service.yaml").read_text()
    assert "{{- if .Values.serviceMonitor.enabled }}" in monitor
    assert "- port: metrics" in monitor and "- name: metrics" in service  # the Service's named port
    for labels in ('include "kubetune.selectorLabels"', "app.kubernetes.io/component: operator"):
        assert labels in monitor and labels in service
    configmap = (CHART / "templates" / "grafana-dashboard.yaml").read_text()
    assert "{{- if .Values.grafanaDashboard.enabled }}" in configmap
    (path,) = re.findall(r'\.Files\.Get "([^"]+)"', configmap)
    assert (CHART / path).resolve() == DASHBOARD.resolve()
    ignored = [line.strip() for line in (CHART / ".helmignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert not any(p.rstrip("/") in ("dashboards", "*.json") for p in ignored)
