"""Run ``kubetune operator`` with its Kubernetes API requests counted (for benchmarks/operator_scale.py).

``python -m benchmarks._operator_probe operator ARGS...`` wraps the two HTTP clients the operator uses (the
``kubernetes`` client's REST layer and kopf's aiohttp session) to count every request in
``kubetune_bench_api_requests_total{client,verb,resource}`` on the operator's own metrics registry, so the
benchmark reads them from the operator's metrics endpoint. Nothing else changes.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import Counter


def classify(method: str, url: str) -> tuple[str, str]:
    """(verb, resource) of a request in the API server's terms: list/watch/get/create/patch/update/delete, and
    ``resource[/subresource]``."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments[:1] == ["api"]:
        rest = segments[2:]
    elif segments[:1] == ["apis"]:
        rest = segments[3:]
    else:
        return method.lower(), "/" + "/".join(segments[:2])
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    method = method.upper()
    if method == "GET":
        if "true" in parse_qs(parts.query).get("watch", []):
            verb = "watch"
        else:
            verb = "get" if name else "list"
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())
    return verb, resource


def install() -> None:
    import aiohttp
    from kubernetes.client import rest

    from kubetune.k8s.prometheus import REGISTRY

    requests = Counter("kubetune_bench_api_requests", "Kubernetes API requests the operator sent.",
                       ["client", "verb", "resource"], registry=REGISTRY)
    original_request: Any = rest.RESTClientObject.request

    def request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        requests.labels("kubernetes", *classify(method, url)).inc()
        return original_request(self, method, url, *args, **kwargs)

    rest.RESTClientObject.request = request  # type: ignore[method-assign]
    original_aio = aiohttp.ClientSession._request

    async def aio_request(self: Any, method: str, str_or_url: Any, *args: Any, **kwargs: Any) -> Any:
        url = str(str_or_url)
        params = kwargs.get("params")
        if params:
            url += ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in dict(params).items())
        requests.labels("kopf", *classify(method, url)).inc()
        return await original_aio(self, method, str_or_url, *args, **kwargs)

    aiohttp.ClientSession._request = aio_request  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    install()
    from kubetune.cli import main as cli_main

    return int(cli_main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
