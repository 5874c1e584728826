"""The Kubernetes API client, configured once (in-cluster, else the kubeconfig), and small helpers over it.

Every call here is blocking; the reconciler runs them in worker threads so the event loop never waits on them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..spec import GROUP, PLURAL, VERSION

__all__ = ["ApiException", "Api", "api"]


class Api:
    def __init__(self) -> None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.client = client.ApiClient()
        self.core = client.CoreV1Api(self.client)
        self.batch = client.BatchV1Api(self.client)
        self.custom = client.CustomObjectsApi(self.client)

    def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a Job; False when it already exists (trial names are deterministic, so that is harmless)."""
        try:
            self.batch.create_namespaced_job(namespace, body)
            return True
        except ApiException as e:
            if e.status == 409:
                return False
            raise

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )

    def list_configmaps(self, namespace: str, selector: str) -> list[Any]:
        return list(self.core.list_namespaced_config_map(namespace, label_selector=selector).items)

    def upsert_configmap_data(self, namespace: str, body: dict[str, Any]) -> None:
        """Merge ``body['data']`` into the ConfigMap, creating it when missing."""
        name = body["metadata"]["name"]
        try:
            self.core.patch_namespaced_config_map(name, namespace, {"data": body["data"]})
        except ApiException as e:
            if e.status != 404:
                raise
            try:
                self.core.create_namespaced_config_map(namespace, body)
            except ApiException as e2:
                if e2.status != 409:
                    raise
                self.core.patch_namespaced_config_map(name, namespace, {"data": body["data"]})

    def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.core.create_namespaced_event(namespace, body)


@lru_cache(maxsize=1)
def api() -> Api:
    return Api()
