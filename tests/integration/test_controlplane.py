"""Tests proving the integration harness: real apiserver, real controllers, fake node."""

from __future__ import annotations

import json
import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import urllib3
from controlplane import K8S_VERSION, ControlPlane
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from node_agent import NodeAgent

T = TypeVar("T")
Obj = dict[str, Any]


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """Poll *check* until it returns a truthy value; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def python_job(name: str, code: str, *, env: list[Obj] | None = None,
               backoff_limit: int = 0, **pod_spec: Any) -> Obj:
    """A batch/v1 Job running ``python -c code`` once."""
    container = {"name": "main", "image": "python:3.11-slim",
                 "command": ["python", "-c", textwrap.dedent(code)], "env": env or []}
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": backoff_limit, "template": {"spec": {
            "restartPolicy": "Never", "containers": [container], **pod_spec}}},
    }


def python_pod(name: str, code: str, *, env: list[Obj] | None = None, **extra: Any) -> Obj:
    """A bare Pod running ``python -c code``; *extra* goes into metadata/spec keys."""
    meta = {"name": name, **extra.pop("metadata", {})}
    container = {"name": "main", "image": "python:3.11-slim",
                 "command": ["python", "-c", textwrap.dedent(code)], "env": env or []}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"restartPolicy": "Never", "containers": [container], **extra}}


def job_condition(batch: client.BatchV1Api, ns: str, name: str, ctype: str) -> bool:
    job = batch.read_namespaced_job(name, ns)
    return any(c.type == ctype and c.status == "True" for c in job.status.conditions or [])


def job_pods(core: client.CoreV1Api, ns: str, job: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items


def pod_phase(core: client.CoreV1Api, ns: str, name: str, *phases: str) -> client.V1Pod | None:
    pod = core.read_namespaced_pod(name, ns)
    return pod if pod.status.phase in phases else None


@pytest.fixture
def core(kube_api: client.ApiClient, node_agent: NodeAgent) -> client.CoreV1Api:
    """CoreV1Api (requesting it also starts the node agent)."""
    return client.CoreV1Api(kube_api)


@pytest.fixture
def batch(kube_api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(kube_api)


def test_apiserver_answers(control_plane: ControlPlane, kube_api: client.ApiClient) -> None:
    version = client.VersionApi(kube_api).get_code()
    assert version.git_version == K8S_VERSION
    out = control_plane.kubectl("version", "-o", "json").stdout
    versions = json.loads(out)
    assert versions["clientVersion"]["gitVersion"] == K8S_VERSION
    assert versions["serverVersion"]["gitVersion"] == K8S_VERSION
    groups = {g.name for g in client.ApisApi(kube_api).get_api_versions().groups}
    assert {"batch", "admissionregistration.k8s.io", "coordination.k8s.io"} <= groups


def test_helm_and_etcd_binaries_run(control_plane: ControlPlane) -> None:
    import subprocess

    helm = subprocess.run([str(control_plane.bin_dir / "helm"), "version", "--short"],
                          check=True, capture_output=True, text=True).stdout
    assert helm.startswith("v3.")
    etcd = subprocess.run([str(control_plane.bin_dir / "etcd"), "--version"],
                          check=True, capture_output=True, text=True).stdout
    assert "etcd Version: 3.6." in etcd


def test_node_is_registered_ready(core: client.CoreV1Api, node_agent: NodeAgent) -> None:
    node = core.read_node(node_agent.node_name)
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert not node.spec.taints
    lease = client.CoordinationV1Api(core.api_client).read_namespaced_lease(
        node_agent.node_name, "kube-node-lease")
    assert lease.spec.holder_identity == node_agent.node_name


class ExpiredWatch(watch.Watch):
    """A watch whose stream fails like the python client does on an ERROR 410 event."""

    def stream(self, func: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        raise ApiException(status=410, reason="Expired: too old resource version")


def test_node_agent_survives_expired_watch(core: client.CoreV1Api, node_agent: NodeAgent,
                                          namespace: str) -> None:
    """A watch ending in 410 Gone makes the agent relist (a fresh cluster never expires one)."""
    assert node_agent.sync_once(new_watch=ExpiredWatch) == "expired"
    assert node_agent.sync_once(timeout=1) == "timeout"  # the relist + watch the loop does next
    core.create_namespaced_pod(namespace, python_pod("after-expiry", "pass"))
    wait_for(lambda: pod_phase(core, namespace, "after-expiry", "Succeeded"), "pod Succeeded")


def test_node_agent_retries_a_cut_response_body(node_agent: NodeAgent) -> None:
    """A response whose body a restarting API server cuts short (``IncompleteRead`` while reading it) is retried like
    a refused connection: the body is read inside the retried call (a token request once failed this way)."""
    body = json.dumps({"status": {"token": "x" * 900}}).encode()
    served: list[int] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for _ in range(2):
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n" \
                       "Connection: close\r\n\r\n"
                cut = len(body) // 2 if not served else len(body)  # the first answer stops half way
                conn.sendall(head.encode() + body[:cut])
                served.append(cut)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/token"

    def request(*, _preload_content: bool, _request_timeout: Any) -> Any:
        return urllib3.request("GET", url, preload_content=_preload_content, timeout=10.0, retries=False)

    before = node_agent.faults.get("cut body", 0)
    assert node_agent.call_body("cut body", request) == json.loads(body)
    thread.join(10)
    server.close()
    assert served == [len(body) // 2, len(body)]
    assert node_agent.faults["cut body"] == before + 1


def test_job_completes_and_sees_env(core: client.CoreV1Api, batch: client.BatchV1Api,
                                    namespace: str, tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    code = """
        import json, os, sys
        keys = ["GREETING", "POD_NAME", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
                "KUBETUNE_SERVICEACCOUNT_DIR", "KUBETUNE_TERMINATION_LOG"]
        data = {k: os.environ.get(k) for k in keys}
        data["executable"] = sys.executable
        open(os.environ["OUT"], "w").write(json.dumps(data))
    """
    env = [{"name": "OUT", "value": str(out)}, {"name": "GREETING", "value": "hello $(OUT)"},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    batch.create_namespaced_job(namespace, python_job("env", code, env=env))
    wait_for(lambda: job_condition(batch, namespace, "env", "Complete"), "Job Complete")

    (pod,) = job_pods(core, namespace, "env")
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    data = json.loads(out.read_text())
    assert data["GREETING"] == f"hello {out}"
    assert data["POD_NAME"] == pod.metadata.name
    assert data["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    sa_dir = Path(data["KUBETUNE_SERVICEACCOUNT_DIR"])
    assert (sa_dir / "namespace").read_text() == namespace
    assert (sa_dir / "token").read_text().count(".") == 2  # a JWT


def test_python_is_the_test_interpreter(core: client.CoreV1Api, namespace: str,
                                        tmp_path: Path) -> None:
    import sys

    out = tmp_path / "prefix"
    pod = python_pod("which-python", f"import sys; open({str(out)!r}, 'w').write(sys.prefix)")
    core.create_namespaced_pod(namespace, pod)
    wait_for(lambda: pod_phase(core, namespace, "which-python", "Succeeded"), "pod Succeeded")
    assert out.read_text() == sys.prefix


def test_field_ref_env(core: client.CoreV1Api, namespace: str, tmp_path: Path) -> None:
    out = tmp_path / "fields.json"
    paths = {
        "NAME": "metadata.name", "NS": "metadata.namespace", "UID": "metadata.uid",
        "LABEL": "metadata.labels['app']", "ANNOTATION": "metadata.annotations['note']",
        "NODE": "spec.nodeName", "SA": "spec.serviceAccountName", "IP": "status.podIP",
    }
    env = [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": p}}} for k, p in paths.items()]
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    core.create_namespaced_pod(namespace, python_pod(
        "fields", code, env=env,
        metadata={"labels": {"app": "trial"}, "annotations": {"note": "hi there"}}))
    pod = wait_for(lambda: pod_phase(core, namespace, "fields", "Succeeded"), "pod Succeeded")
    seen = json.loads(out.read_text())
    assert {k: seen[k] for k in paths} == {
        "NAME": "fields", "NS": namespace, "UID": pod.metadata.uid, "LABEL": "trial",
        "ANNOTATION": "hi there", "NODE": pod.spec.node_name, "SA": "default",
        "IP": "127.0.0.1",
    }
    assert pod.status.pod_ip == "127.0.0.1" and pod.status.start_time is not None


PATCH_SELF = """
    import json, os, ssl, sys, urllib.request, urllib.error
    sa = os.environ["KUBETUNE_SERVICEACCOUNT_DIR"]
    token = open(os.path.join(sa, "token")).read()
    ns = open(os.path.join(sa, "namespace")).read()
    ctx = ssl.create_default_context(cafile=os.path.join(sa, "ca.crt"))
    base = "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"],
                               os.environ["KUBERNETES_SERVICE_PORT"])

    def call(method, path, body, ctype="application/merge-patch+json"):
        req = urllib.request.Request(base + path, json.dumps(body).encode(), method=method,
            headers={"Authorization": "Bearer " + token, "Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, context=ctx) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    review = call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                  {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                  "application/json")[1]["status"]["userInfo"]
    me = os.environ["POD_NAME"]
    own, _ = call("PATCH", "/api/v1/namespaces/%s/pods/%s" % (ns, me),
                  {"metadata": {"annotations": {"kubetune.io/result": "0.93"}}})
    other, body = call("PATCH", "/api/v1/namespaces/%s/pods/%s" % (ns, os.environ["OTHER"]),
                       {"metadata": {"annotations": {"kubetune.io/result": "forged"}}})
    json.dump({"user": review, "own": own, "other": other, "other_body": body},
              open(os.environ["OUT"], "w"))
"""


def test_pod_patches_itself_with_bound_token_under_vap(
        kube_api: client.ApiClient, core: client.CoreV1Api, node_agent: NodeAgent,
        namespace: str, tmp_path: Path) -> None:
    """Bound token carries pod-name; RBAC allows pods/patch; a VAP pins it to the own pod."""
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "trial"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "trial"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trial"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]})
    admission = client.AdmissionregistrationV1Api(kube_api)
    policy = f"own-pod-only-{namespace}"
    admission.create_validating_admission_policy({
        "metadata": {"name": policy},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                "resources": ["pods"]}]},
            "matchConditions": [{"name": "service-accounts",
                                 "expression": "request.userInfo.username.startsWith("
                                               "'system:serviceaccount:')"}],
            "validations": [{
                "expression": "'authentication.kubernetes.io/pod-name' in request.userInfo.extra"
                              " && request.userInfo.extra['authentication.kubernetes.io/pod-name']"
                              "[0] == object.metadata.name",
                "message": "a trial may only patch its own pod"}]}})
    admission.create_validating_admission_policy_binding({
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": namespace}}}}})
    try:
        core.create_namespaced_pod(namespace, python_pod("victim", "import time; time.sleep(60)"))
        wait_for(lambda: policy_enforced(kube_api, namespace, "victim"), "policy enforced", 30)
        out = tmp_path / "result.json"
        env = [{"name": "OUT", "value": str(out)}, {"name": "OTHER", "value": "victim"},
               {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        name = "patcher"
        core.create_namespaced_pod(namespace, python_pod(name, PATCH_SELF, env=env))
        wait_for(lambda: pod_phase(core, namespace, name, "Succeeded", "Failed"), "pod finished")
        result = json.loads(out.read_text())
        pod = core.read_namespaced_pod(name, namespace)
        assert pod.status.phase == "Succeeded", describe(core, node_agent, namespace, name)
        assert result["own"] == 200
        assert pod.metadata.annotations["kubetune.io/result"] == "0.93"
        assert result["other"] in (403, 422), result["other_body"]
        assert "only patch its own pod" in result["other_body"]["message"]
        victim = core.read_namespaced_pod("victim", namespace)
        assert "kubetune.io/result" not in (victim.metadata.annotations or {})
        user = result["user"]
        assert user["username"] == f"system:serviceaccount:{namespace}:default"
        assert user["extra"]["authentication.kubernetes.io/pod-name"] == [name]
        assert user["extra"]["authentication.kubernetes.io/pod-uid"] == [pod.metadata.uid]
    finally:
        admission.delete_validating_admission_policy_binding(policy)
        admission.delete_validating_admission_policy(policy)


def policy_enforced(kube_api: client.ApiClient, namespace: str, victim: str) -> bool:
    """Whether the API denies (dry-run) a patch of *victim* by another pod's token.

    Impersonates the ServiceAccount with a different pod-name in its extra, as
    a bound token of another pod would carry.
    """
    probe = client.ApiClient(kube_api.configuration)
    probe.set_default_header("Impersonate-User", f"system:serviceaccount:{namespace}:default")
    probe.set_default_header("Impersonate-Extra-authentication.kubernetes.io%2fpod-name", "other")
    try:
        client.CoreV1Api(probe).patch_namespaced_pod(
            victim, namespace, {"metadata": {"annotations": {"kubetune.io/result": "x"}}},
            dry_run="All")
        return False
    except ApiException as exc:
        return exc.status in (403, 422) and "only patch its own pod" in str(exc.body)
    finally:
        probe.close()


def describe(core: client.CoreV1Api, agent: NodeAgent, namespace: str, name: str) -> str:
    """The pod's container status plus its process output, for assertion messages."""
    pod = core.read_namespaced_pod(name, namespace)
    log = agent.log_path(namespace, name)
    return f"status={pod.status.container_statuses}\nlog:\n{log.read_text() if log else ''}"


def test_failing_job_fails_with_exit_code(core: client.CoreV1Api, batch: client.BatchV1Api,
                                          namespace: str) -> None:
    batch.create_namespaced_job(namespace, python_job(
        "boom", "import sys; print('about to fail'); sys.exit(3)"))
    wait_for(lambda: job_condition(batch, namespace, "boom", "Failed"), "Job Failed")
    (pod,) = job_pods(core, namespace, "boom")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")


def test_pod_log_is_kept(core: client.CoreV1Api, node_agent: NodeAgent, namespace: str) -> None:
    core.create_namespaced_pod(namespace, python_pod(
        "chatty", "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"))
    wait_for(lambda: pod_phase(core, namespace, "chatty", "Succeeded"), "pod Succeeded")
    log = node_agent.log_path(namespace, "chatty")
    assert log is not None
    text = log.read_text()
    assert "to stdout" in text and "to stderr" in text


def test_background_delete_garbage_collects_pods(
        core: client.CoreV1Api, batch: client.BatchV1Api, node_agent: NodeAgent,
        namespace: str) -> None:
    batch.create_namespaced_job(namespace, python_job("sleeper", "import time; time.sleep(300)"))
    pod = wait_for(lambda: [p for p in job_pods(core, namespace, "sleeper")
                            if p.status.phase == "Running"], "Job pod Running")[0]
    worker = node_agent.worker(namespace, pod.metadata.name)
    assert worker is not None and worker.proc is not None
    batch.delete_namespaced_job("sleeper", namespace, propagation_policy="Background")
    wait_for(lambda: not job_pods(core, namespace, "sleeper"), "pods garbage-collected", 90)
    assert worker.proc.poll() is not None  # the process was stopped, not leaked


def test_suspending_a_job_stops_its_pod(core: client.CoreV1Api, batch: client.BatchV1Api,
                                        namespace: str) -> None:
    batch.create_namespaced_job(namespace, python_job("pausable", "import time; time.sleep(300)"))
    wait_for(lambda: [p for p in job_pods(core, namespace, "pausable")
                      if p.status.phase == "Running"], "Job pod Running")
    batch.patch_namespaced_job("pausable", namespace, {"spec": {"suspend": True}})
    wait_for(lambda: job_condition(batch, namespace, "pausable", "Suspended"), "Job Suspended")
    wait_for(lambda: not job_pods(core, namespace, "pausable"), "pod deleted", 60)
    assert batch.read_namespaced_job("pausable", namespace).status.active in (None, 0)


def test_grace_period_then_sigkill(core: client.CoreV1Api, namespace: str,
                                   tmp_path: Path) -> None:
    marker = tmp_path / "started"
    code = f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(marker)!r}, "w").close()
        time.sleep(300)
    """
    core.create_namespaced_pod(namespace, python_pod("stubborn", code,
                                                     terminationGracePeriodSeconds=1))
    wait_for(marker.exists, "process started")
    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("stubborn", namespace)
            return False
        except ApiException as exc:
            return exc.status == 404
    wait_for(gone, "pod deleted", 30)
    assert 0.9 < time.monotonic() - started < 20


def test_active_deadline_exceeded(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, python_pod(
        "slow", "import time; time.sleep(300)", activeDeadlineSeconds=2))
    pod = wait_for(lambda: pod_phase(core, namespace, "slow", "Failed"), "pod Failed", 30)
    assert pod.status.reason == "DeadlineExceeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 143  # SIGTERM


def test_termination_message(core: client.CoreV1Api, batch: client.BatchV1Api,
                             namespace: str) -> None:
    code = """
        import json, os
        with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as f:
            json.dump({"objective": 0.25, "step": 7}, f)
    """
    batch.create_namespaced_job(namespace, python_job("reporter", code))
    wait_for(lambda: job_condition(batch, namespace, "reporter", "Complete"), "Job Complete")
    (pod,) = job_pods(core, namespace, "reporter")
    message = pod.status.container_statuses[0].state.terminated.message
    assert json.loads(message) == {"objective": 0.25, "step": 7}


def test_termination_message_is_capped(core: client.CoreV1Api, namespace: str) -> None:
    code = "import os; open(os.environ['KUBETUNE_TERMINATION_LOG'], 'w').write('x' * 5000)"
    core.create_namespaced_pod(namespace, python_pod("long-message", code))
    pod = wait_for(lambda: pod_phase(core, namespace, "long-message", "Succeeded"), "Succeeded")
    assert pod.status.container_statuses[0].state.terminated.message == "x" * 4096


def test_service_account_kubeconfig_is_rbac_restricted(
        control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str) -> None:
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "default")
    denied = control_plane.kubectl("get", "pods", "-n", namespace,
                                   kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "reader"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]})
    allowed = control_plane.kubectl("auth", "can-i", "list", "pods", "-n", namespace,
                                    kubeconfig=kubeconfig, check=False)
    assert allowed.stdout.strip() == "yes"
    user_cfg = control_plane.make_kubeconfig("alice", ["kubetune-users"])
    whoami = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json",
                                              kubeconfig=user_cfg).stdout)
    assert whoami["status"]["userInfo"]["username"] == "alice"
    assert "kubetune-users" in whoami["status"]["userInfo"]["groups"]
