"""Helm pre-delete hook of the kubetune chart (finalizerCleanup.enabled).

1. Scale the operator Deployment to 0 and wait until its pods are gone, so it cannot add its finalizer again.
2. Remove the operator's finalizer from every TuningExperiment it watched, so experiments can still be deleted
   once the operator is uninstalled. Experiments, their trial Jobs and results are kept.

Environment: RELEASE_NAMESPACE, DEPLOYMENT, POD_SELECTOR, FINALIZER, WATCH_NAMESPACES (comma-separated; empty:
all namespaces). Runs in the operator image (it has the `kubernetes` client). Credentials: in-cluster (or the
directory KUBETUNE_SERVICEACCOUNT_DIR, as for the trial SDK), else KUBECONFIG.
"""

import os
import sys
import time

from kubernetes import client, config
from kubernetes.client.rest import ApiException

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "tuningexperiments"


def log(message):
    print(f"kubetune finalizer cleanup: {message}", flush=True)


def stop_operator(apps, core, namespace, deployment, selector, timeout=120.0):
    try:
        apps.patch_namespaced_deployment(deployment, namespace, {"spec": {"replicas": 0}})
        log(f"scaled deployment {namespace}/{deployment} to 0")
    except ApiException as e:
        if e.status != 404:
            raise
        log(f"deployment {namespace}/{deployment} not found")
    deadline = time.monotonic() + timeout
    while True:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        if not pods:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"operator pods still present after {timeout:.0f} s: {[p.metadata.name for p in pods]}")
        time.sleep(2)


def experiments(custom, namespaces):
    if not namespaces:
        try:
            yield from custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        except ApiException as e:
            if e.status != 404:  # 404: the CRD is gone, nothing to release
                raise
        return
    for ns in namespaces:
        try:
            yield from custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        except ApiException as e:
            if e.status != 404:
                raise


def remove_finalizer(custom, obj, finalizer):
    meta = obj["metadata"]
    for attempt in range(5):
        finalizers = meta.get("finalizers") or []
        if finalizer not in finalizers:
            return False
        # A merge patch of the whole list, guarded by resourceVersion (409 Conflict if it changed meanwhile).
        patch = {"metadata": {"finalizers": [f for f in finalizers if f != finalizer],
                              "resourceVersion": meta["resourceVersion"]}}
        try:
            custom.patch_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            if e.status != 409 or attempt == 4:
                raise
            try:
                meta = custom.get_namespaced_custom_object(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])["metadata"]
            except ApiException as e2:
                if e2.status == 404:
                    return False
                raise
    return False


def load_config():
    sa_dir = os.environ.get("KUBETUNE_SERVICEACCOUNT_DIR")
    if sa_dir:  # the same override of the service-account directory the trial SDK honours
        from kubernetes.config.incluster_config import InClusterConfigLoader

        InClusterConfigLoader(token_filename=os.path.join(sa_dir, "token"),
                              cert_filename=os.path.join(sa_dir, "ca.crt")).load_and_set()
        return
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def main():
    load_config()
    namespace = os.environ["RELEASE_NAMESPACE"]
    finalizer = os.environ.get("FINALIZER", "kubetune.io/finalizer")
    watch = [ns for ns in os.environ.get("WATCH_NAMESPACES", "").split(",") if ns]
    apps, core, custom = client.AppsV1Api(), client.CoreV1Api(), client.CustomObjectsApi()
    stop_operator(apps, core, namespace, os.environ["DEPLOYMENT"], os.environ["POD_SELECTOR"])
    removed = 0
    for obj in list(experiments(custom, watch)):
        if remove_finalizer(custom, obj, finalizer):
            removed += 1
            log(f"removed {finalizer} from {obj['metadata']['namespace']}/{obj['metadata']['name']}")
    log(f"done: {removed} experiment(s) released")
    return 0


if __name__ == "__main__":
    sys.exit(main())
