"""InferenceSet gauges, counted from the informer cache when Prometheus scrapes.

``kaito_inferenceset_count{phase}`` is upstream's (succeeded / error / pending / deleting);
``kaito_inferenceset_replicas{inferenceset, inferenceset_namespace, state}`` is ours: desired
(spec.replicas, what the HPA asks), current, ready and updated replicas of each set, which the
Grafana dashboard plots against the vLLM queue that drives the autoscaler.  The set's namespace
label is not ``namespace``: that one is the operator pod's, added by the scrape.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kaito.api import constants as C
from kaito.controllers.diagnosis import condition_of
from kaito.runtime.cache import Cache, InformerNotFound
from kaito.runtime.gvk import GVK

PHASES = ("succeeded", "error", "pending", "deleting")
PROGRESS = frozenset({"inferencesetNotReady"})
"""InferenceSetReady=False reasons that mean "on its way" (pending), not "wrong" (error)."""


def inferenceset_phase(obj: Mapping[str, Any]) -> str:
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return "deleting"
    cond = condition_of(obj, C.ConditionType.INFERENCESET_READY)
    if cond is None:
        return "pending"
    if cond.get("status") == "True":
        return "succeeded"
    if cond.get("status") == "False" and cond.get("reason") not in PROGRESS:
        return "error"
    return "pending"


class InferenceSetCollector(Collector):
    def __init__(self, cache: Cache, gvk: GVK) -> None:
        self.cache = cache
        self.gvk = gvk

    def _objects(self) -> Iterable[dict[str, Any]]:
        try:
            entries = self.cache.entries(self.gvk)
        except InformerNotFound:
            return []
        return (json.loads(e.raw) for e in entries)

    def collect(self) -> Iterable[Metric]:
        phases: Counter[str] = Counter(dict.fromkeys(PHASES, 0))
        replicas = GaugeMetricFamily(
            "kaito_inferenceset_replicas",
            "Replicas of each InferenceSet: desired (spec), current, ready, updated",
            labels=["inferenceset", "inferenceset_namespace", "state"],
        )
        for obj in self._objects():
            phases[inferenceset_phase(obj)] += 1
            meta = obj.get("metadata") or {}
            status = obj.get("status") or {}
            spec = obj.get("spec") or {}
            who = [str(meta.get("name", "")), str(meta.get("namespace", ""))]
            for state, value in (
                ("desired", spec.get("replicas", 1)),
                ("current", status.get("replicas", 0)),
                ("ready", status.get("readyReplicas", 0)),
                ("updated", status.get("updatedReplicas", 0)),
            ):
                replicas.add_metric([*who, state], float(value or 0))
        count = GaugeMetricFamily(
            "kaito_inferenceset_count", "Number of InferenceSets per phase", labels=["phase"]
        )
        for phase, n in sorted(phases.items()):
            count.add_metric([phase], n)
        yield count
        yield replicas
