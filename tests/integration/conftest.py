"""Fixtures for integration tests against a real (local) Kubernetes control plane.

* ``control_plane`` (session): etcd + kube-apiserver + kube-controller-manager,
  see ``tests/support/controlplane.py``.  The binaries are built from Go modules
  on first use and cached; ``KUBETUNE_K8S_BIN_DIR`` can point at prebuilt ones.
  Missing binaries FAIL the tests: they are never skipped.
* ``node_agent`` (session): a fake node running pods as local processes
  (``tests/support/node_agent.py``).
* ``kube_api`` (session): an admin ``kubernetes.client.ApiClient``.
* ``namespace`` (function): a fresh namespace (with its ``default``
  ServiceAccount ready), deleted afterwards.
* ``crd`` (module): the TuningExperiment CRD applied as the docs say and
  established (per module, since the chart tests install and remove it).
* ``trial_namespace`` (function): ``namespace`` with the trial ServiceAccount
  and its Role (pods: patch only), as the chart makes them.
* ``ns`` and ``op`` (module): one such namespace for all tests of a module,
  and a ``kubetune operator`` process watching it (a module may define its
  own ``op``).

Every test in this directory gets the ``integration`` marker.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SUPPORT_DIR = Path(__file__).resolve().parents[1] / "support"
if str(SUPPORT_DIR) not in sys.path:
    sys.path.insert(0, str(SUPPORT_DIR))

from controlplane import BIN_DIR_ENV, BINARIES, ControlPlane, ensure_binaries  # noqa: E402
from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402
from node_agent import NodeAgent  # noqa: E402

HERE = Path(__file__).resolve().parent
CRD_FILE = HERE.parents[1] / "crds" / "tuningexperiments.kubetune.io.yaml"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs against a real local Kubernetes control plane")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane(pytestconfig: pytest.Config) -> Iterator[ControlPlane]:
    """A running control plane for the whole session."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    try:
        # The first build takes minutes: show its progress lines instead of capturing them.
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            bin_dir = ensure_binaries()
        problem = ""
    except RuntimeError as exc:
        problem = str(exc)
    if problem:  # outside `except`: no chained traceback in the report
        pytest.fail(
            f"Kubernetes control-plane binaries are not available: {problem}\n"
            f"Provide them by setting {BIN_DIR_ENV} to a directory containing "
            f"{', '.join(BINARIES)}, or install Go (>= 1.25) with access to the Go module "
            "proxy and run `python tests/support/controlplane.py build` (cached afterwards).",
            pytrace=False,
        )
    with ControlPlane(bin_dir) as cp:
        print(f"\n[controlplane] up in {cp.startup_seconds:.1f} s at {cp.server}; "
              f"logs: {cp.logs_dir}", file=sys.stderr)
        yield cp


@pytest.fixture(scope="session")
def node_agent(control_plane: ControlPlane) -> Iterator[NodeAgent]:
    """The fake node that binds and runs every pod of the session."""
    agent = NodeAgent(control_plane.kubeconfig).start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(autouse=True)
def _node_agent_stays_healthy(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test during which the node agent recorded an internal error."""
    if "node_agent" not in request.fixturenames:
        yield
        return
    agent: NodeAgent = request.getfixturevalue("node_agent")
    before = len(agent.errors)
    yield
    new = agent.errors[before:]
    assert not new, "node agent errors:\n" + "\n".join(new)


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """A ``kubernetes.client.ApiClient`` authenticated as cluster admin."""
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        yield api
    finally:
        api.close()


def new_namespace(api: client.ApiClient, prefix: str = "kt", trial_rbac: bool = False) -> str:
    """Create a namespace named ``PREFIX-<random>`` and wait for its ``default`` ServiceAccount (pods are rejected
    until the serviceaccount controller made it); with ``trial_rbac`` also the trial's (:func:`create_trial_rbac`)."""
    core = client.CoreV1Api(api)
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"kubetune.io/test": "true"}}})
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    if trial_rbac:
        create_trial_rbac(api, name)
    return name


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace whose ``default`` ServiceAccount exists; deleted afterwards."""
    name = new_namespace(kube_api)
    try:
        yield name
    finally:
        client.CoreV1Api(kube_api).delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane) -> None:
    """The CRD applied with the docs' command (`-f crds/` would also read crds/kustomization.yaml and fail)."""
    applied = control_plane.kubectl("apply", "--server-side", "-f", str(CRD_FILE), check=False)
    assert applied.returncode == 0, f"kubectl apply of the CRD failed: {applied.stderr}"
    # Established read from the API (kubectl wait also needs discovery, which a just-started API server may not
    # serve for the new group yet)
    ext = client.ApiextensionsV1Api(config.new_client_from_config(str(control_plane.kubeconfig)))
    deadline = time.monotonic() + 120
    while True:
        conditions = ext.read_custom_resource_definition("tuningexperiments.kubetune.io").status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        assert time.monotonic() < deadline, f"the CRD is not Established after 120 s: {conditions}"
        time.sleep(0.1)


def create_trial_rbac(api: client.ApiClient, namespace: str) -> None:
    """The trial ServiceAccount and its Role (pods: patch only) with their binding, as the chart makes them."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "kubetune-trial"}})
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "kubetune-trial"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}],
    })
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "kubetune-trial"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kubetune-trial"},
        "subjects": [{"kind": "ServiceAccount", "name": "kubetune-trial", "namespace": namespace}],
    })


@pytest.fixture
def trial_namespace(namespace: str, kube_api: client.ApiClient, crd: None) -> str:
    """A fresh namespace with the trial ServiceAccount and its Role."""
    create_trial_rbac(kube_api, namespace)
    return namespace


@pytest.fixture(scope="module")
def ns(kube_api: client.ApiClient, crd: None, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace with the trial ServiceAccount and its Role for all tests of one module; deleted afterwards."""
    prefix = "kt-" + request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")[:20]
    name = new_namespace(kube_api, prefix.rstrip("-"), trial_rbac=True)
    try:
        yield name
    finally:
        client.CoreV1Api(kube_api).delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def op(control_plane: ControlPlane, ns: str, node_agent: NodeAgent,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``kubetune operator -n <ns>`` as its own process (an ``OperatorProcess``), for one module."""
    from operator_process import OperatorProcess

    proc = OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("op"),
                           extra_args=["-n", ns]).start()
    try:
        yield proc
    finally:
        proc.stop()
