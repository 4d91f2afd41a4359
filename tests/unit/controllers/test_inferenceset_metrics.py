"""kaito_inferenceset_* gauges, computed from a hand-fed informer cache (no cluster)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from kaito.controllers.inferenceset import INFERENCESET
from kaito.controllers.inferenceset_metrics import InferenceSetCollector, inferenceset_phase
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.metrics import Metrics


def iset(name: str, ready: str | None = None, reason: str = "r", **status: int) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {"name": name, "namespace": "team", "uid": f"u-{name}", "resourceVersion": "1"},
        "spec": {"replicas": 3},
        "status": dict(status),
    }
    if ready is not None:
        obj["status"]["conditions"] = [
            {"type": "InferenceSetReady", "status": ready, "reason": reason}
        ]
    return obj


def test_phases_as_upstream_counts_them() -> None:
    assert inferenceset_phase(iset("a")) == "pending"
    assert inferenceset_phase(iset("a", "True")) == "succeeded"
    assert inferenceset_phase(iset("a", "False", "inferencesetNotReady")) == "pending"
    assert inferenceset_phase(iset("a", "False", "NodeCountLimitReached")) == "error"
    deleting = iset("a", "True")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert inferenceset_phase(deleting) == "deleting"


async def test_replica_gauges_per_set() -> None:
    metrics = Metrics()
    client = Client(ClientConfig(host="http://127.0.0.1:9", ssl_context=None), metrics=metrics)
    cache = Cache(client)
    informer = cache.informer(INFERENCESET)
    informer.replace([], "1")
    registry: CollectorRegistry = metrics.registry
    registry.register(InferenceSetCollector(cache, INFERENCESET))
    assert registry.get_sample_value("kaito_inferenceset_count", {"phase": "pending"}) == 0
    informer.apply("ADDED", iset("a", "True", replicas=3, readyReplicas=2, updatedReplicas=1))
    informer.apply("ADDED", iset("b"))
    assert registry.get_sample_value("kaito_inferenceset_count", {"phase": "succeeded"}) == 1
    assert registry.get_sample_value("kaito_inferenceset_count", {"phase": "pending"}) == 1
    who = {"inferenceset": "a", "inferenceset_namespace": "team"}
    for state, value in (("desired", 3), ("current", 3), ("ready", 2), ("updated", 1)):
        sample = registry.get_sample_value("kaito_inferenceset_replicas", {**who, "state": state})
        assert sample == value, state
