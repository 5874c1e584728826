"""Warm-start sources on a cluster: the result records of earlier experiments in the same namespace.

Read once per experiment worker (when it loads its own records), page by page, never more than
``MAX_TRIALS_LIMIT`` records per source; :func:`kubetune.warmstart.take_in` keeps at most ``warmStart.maxTrials``
of them. Records are what the operator writes (:mod:`kubetune.k8s.store`), read with the bounds of a results
reader (:meth:`kubetune.results.local.LocalDirectory._trial`); ConfigMaps of an earlier experiment of the same name
(another owner uid) are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from ..results.local import LocalDirectory
from ..spec import GROUP, MAX_TRIALS_LIMIT, PLURAL, VERSION, ExperimentSpec
from ..trials import Trial
from ..warmstart import WarmStartResult, take_in
from .api import Api, ApiException
from .store import selector

PAGE = 10
"""Result ConfigMaps per list request (10 full shards are about 8 MB)."""


class SourceMissing(Exception):
    """A source experiment does not exist (or its spec cannot be read): the message says which."""


def _records(api: Api, namespace: str, name: str, uid: str, spec: ExperimentSpec) -> Iterator[Trial]:
    token: str | None = None
    count = 0
    while True:
        kwargs: dict[str, Any] = {"label_selector": selector(name), "limit": PAGE}
        if token:
            kwargs["_continue"] = token
        page = api.call("list_configmaps", api.core.list_namespaced_config_map, namespace, **kwargs)
        for cm in page.items:
            owners = cm.metadata.owner_references or []
            if owners and all(o.uid != uid for o in owners):
                continue
            for value in (cm.data or {}).values():
                try:
                    doc = json.loads(value)
                except (ValueError, TypeError, RecursionError):
                    continue
                trial = LocalDirectory._trial(doc, spec)
                if trial is None:
                    continue
                count += 1
                if count > MAX_TRIALS_LIMIT:
                    return
                yield trial
        token = page.metadata._continue
        if not token:
            return


def load_cluster(api: Api, namespace: str, spec: ExperimentSpec, *, skip_missing: bool = False) -> WarmStartResult:
    """Take in the trials of ``spec.warmStart.experiments`` in ``namespace``. A source that does not exist raises
    :class:`SourceMissing`, or with ``skip_missing`` is left out (said in the result's sources)."""
    assert spec.warm_start is not None
    sources: list[tuple[str, Any]] = []
    for name in spec.warm_start.experiments:
        try:
            obj = api.call("get_experiment", api.custom.get_namespaced_custom_object, GROUP, VERSION, namespace,
                           PLURAL, name)
            source_spec = ExperimentSpec.model_validate(obj.get("spec") or {})
        except ApiException as e:
            if e.status != 404:
                raise
            if not skip_missing:
                raise SourceMissing(f"warmStart.experiments: {name} not found in namespace {namespace}") from None
            sources.append((f"{name} (not found)", []))
            continue
        except ValidationError as e:
            raise SourceMissing(f"warmStart.experiments: {name} has a spec kubetune cannot read: "
                                f"{str(e).splitlines()[0][:300]}") from None
        uid = (obj.get("metadata") or {}).get("uid", "")
        sources.append((name, _records(api, namespace, name, uid, source_spec)))
    return take_in(spec, sources)
