"""Durable trial records in ConfigMaps, so results outlive trial Jobs and pods.

Records are sharded: trial ``n`` lives in ConfigMap ``<experiment>-results-<n // SHARD_SIZE>`` under key
``t<n>``. A record is bounded (its learning curve is thinned to a fixed number of points), so every ConfigMap stays
far below the 1 MiB object limit however long the experiment runs, and no single object grows without bound.
Each ConfigMap is owned by the experiment, so deleting the experiment deletes its records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..trials import Trial
from . import labels as L
from .api import Api
from .jobs import owner_reference

SHARD_SIZE = 50


def shard_name(experiment: str, number: int) -> str:
    return f"{experiment}-results-{number // SHARD_SIZE:03d}"


def results_prefix(experiment: str) -> str:
    return f"{experiment}-results-"


def record_key(number: int) -> str:
    return f"t{number:05d}"


def selector(experiment: str) -> str:
    return f"{L.MANAGED_BY}={L.MANAGED_BY_VALUE},{L.EXPERIMENT}={experiment},{L.RESULTS}=true"


class TrialStore:
    def __init__(self, api: Api, experiment: Mapping[str, Any]) -> None:
        self.api = api
        self.experiment = experiment
        self.name = experiment["metadata"]["name"]
        self.namespace = experiment["metadata"]["namespace"]
        self.shards: set[str] = set()
        """Shards known to exist (loaded or written): a record of another shard is written by a create first."""

    def load(self) -> dict[int, Trial]:
        out: dict[int, Trial] = {}
        for cm in self.api.list_configmaps(self.namespace, selector(self.name)):
            owners = cm.metadata.owner_references or []
            if owners and all(o.uid != self.experiment["metadata"]["uid"] for o in owners):
                continue  # left over from an earlier experiment of the same name
            self.shards.add(cm.metadata.name)
            for _key, value in (cm.data or {}).items():
                try:
                    trial = Trial.from_record(json.loads(value))
                except (ValueError, KeyError, TypeError):
                    continue
                out[trial.number] = trial
        return out

    def save(self, trials: list[Trial]) -> None:
        by_shard: dict[str, dict[str, str]] = {}
        for t in trials:
            by_shard.setdefault(shard_name(self.name, t.number), {})[record_key(t.number)] = json.dumps(
                t.to_record(), separators=(",", ":")
            )
        for shard, data in sorted(by_shard.items()):
            self.api.upsert_configmap_data(self.namespace, {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": shard,
                    "namespace": self.namespace,
                    "labels": {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.EXPERIMENT: self.name, L.RESULTS: "true"},
                    "ownerReferences": [owner_reference(self.experiment)],
                },
                "data": data,
            }, exists=shard in self.shards)
            self.shards.add(shard)
