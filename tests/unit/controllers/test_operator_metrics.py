"""kaito_* operator metrics, computed from a hand-fed informer cache (no cluster)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from kaito.controllers import metrics as m
from kaito.controllers.common import NODECLAIM, WORKSPACE
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.metrics import Metrics

CREATED = "2025-01-01T00:00:00Z"


def cond(type_: str, status: str, reason: str = "r", at: str = CREATED) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "lastTransitionTime": at}


def workspace(
    name: str,
    conditions: list[dict[str, Any]] | None = None,
    preset: str | None = "phi-3-mini-4k-instruct",
    rv: str = "1",
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "uid": f"u-{name}",
        "resourceVersion": rv,
        "creationTimestamp": CREATED,
    }
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T01:00:00Z"
    ws: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": meta,
        "resource": {"instanceType": "Standard_NC6s_v3"},
        "inference": {"preset": {"name": preset}} if preset else {"template": {}},
    }
    if conditions is not None:
        ws["status"] = {"conditions": conditions}
    return ws


def claim(name: str, *true: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"u-{name}", "resourceVersion": "1"}
    if deleting:
        meta["deletionTimestamp"] = CREATED
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": meta,
        "status": {"conditions": [cond(t, "True") for t in true]},
    }


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    value = registry.get_sample_value(name, labels)
    return value


async def make(leader: bool = True) -> tuple[CollectorRegistry, Cache]:
    metrics = Metrics()
    client = Client(ClientConfig(host="http://127.0.0.1:9", ssl_context=None), metrics=metrics)
    cache = Cache(client)
    for gvk in (WORKSPACE, NODECLAIM):
        cache.informer(gvk).replace([], "1")
    m.register(
        metrics.registry, cache, workspace=WORKSPACE, claim=NODECLAIM, is_leader=lambda: leader
    )
    return metrics.registry, cache


def test_phase_follows_upstream_but_keeps_waiting_workspaces_pending() -> None:
    succeeded = "WorkspaceSucceeded"
    assert m.workspace_phase(workspace("a")) == "pending"
    assert m.workspace_phase(workspace("a", [cond(succeeded, "True")])) == "succeeded"
    assert m.workspace_phase(workspace("a", [cond(succeeded, "False", "workspacePending")])) == (
        "pending"
    )
    assert m.workspace_phase(workspace("a", [cond(succeeded, "False", "workspaceFailed")])) == (
        "error"
    )
    assert m.workspace_phase(workspace("a", [cond(succeeded, "True")], deleting=True)) == (
        "deleting"
    )
    assert m.claim_state(claim("c")) == "pending"
    assert m.claim_state(claim("c", "Launched", "Registered")) == "registered"
    assert m.claim_state(claim("c", "Launched", "Ready")) == "ready"
    assert m.claim_state(claim("c", "Ready", deleting=True)) == "deleting"
    legacy = claim("c", "MachineLaunched", "MachineInitialized")
    assert m.claim_state(legacy) == "initialized"


async def test_gauges_are_counted_from_the_cache_at_scrape_time() -> None:
    registry, cache = await make()
    assert sample(registry, "kaito_workspace_count", phase="pending") == 0
    assert sample(registry, "kaito_nodeclaim_count", state="ready") == 0
    ws = cache.informer(WORKSPACE)
    ws.apply("ADDED", workspace("a"))
    ws.apply("ADDED", workspace("b", [cond("WorkspaceSucceeded", "True")]))
    ws.apply("ADDED", workspace("c", [cond("WorkspaceSucceeded", "True")], preset="falcon-7b"))
    ws.apply("ADDED", workspace("d", preset=None))
    cache.informer(NODECLAIM).apply("ADDED", claim("n1", "Launched", "Ready"))
    cache.informer(NODECLAIM).apply("ADDED", claim("n2"))
    assert sample(registry, "kaito_workspace_count", phase="pending") == 2
    assert sample(registry, "kaito_workspace_count", phase="succeeded") == 2
    assert sample(registry, "kaito_workspace_count", phase="error") == 0
    assert (
        sample(registry, "kaito_workspace_preset_count", preset_name="phi-3-mini-4k-instruct") == 2
    )
    assert sample(registry, "kaito_workspace_preset_count", preset_name="falcon-7b") == 1
    assert sample(registry, "kaito_nodeclaim_count", state="ready") == 1
    assert sample(registry, "kaito_nodeclaim_count", state="pending") == 1
    ws.apply("DELETED", workspace("a"))
    assert sample(registry, "kaito_workspace_count", phase="pending") == 1
    text = generate_latest(registry).decode()
    assert "# TYPE kaito_workspace_count gauge" in text


async def test_latency_is_observed_once_per_transition_from_condition_times() -> None:
    registry, cache = await make()
    inf = cache.informer(WORKSPACE)
    name = "kaito_workspace_provisioning_duration_seconds"
    ready_name = "kaito_workspace_inference_ready_duration_seconds"
    preset = {"preset_name": "phi-3-mini-4k-instruct"}
    inf.apply("ADDED", workspace("a", [cond("ResourceReady", "False")], rv="1"))
    resource_ready = cond("ResourceReady", "True", at="2025-01-01T00:01:30Z")
    inf.apply("MODIFIED", workspace("a", [resource_ready], rv="2"))
    assert sample(registry, f"{name}_count", **preset) == 1
    assert sample(registry, f"{name}_sum", **preset) == 90.0
    assert sample(registry, f"{ready_name}_count", **preset) is None
    # a later status write that keeps ResourceReady True is not a new transition
    succeeded = cond("WorkspaceSucceeded", "True", at="2025-01-01T00:05:00Z")
    inf.apply("MODIFIED", workspace("a", [resource_ready, succeeded], rv="3"))
    assert sample(registry, f"{name}_count", **preset) == 1
    assert sample(registry, f"{ready_name}_sum", **preset) == 300.0
    # losing and regaining readiness (a node replaced) is not a second provisioning
    inf.apply("MODIFIED", workspace("a", [cond("ResourceReady", "False")], rv="4"))
    inf.apply("MODIFIED", workspace("a", [cond("ResourceReady", "True")], rv="5"))
    assert sample(registry, f"{name}_count", **preset) == 1
    # a Workspace first seen already Ready (operator restart) is not observed
    inf.apply("ADDED", workspace("b", [resource_ready], rv="6"))
    assert sample(registry, f"{name}_count", **preset) == 1


async def test_standby_replicas_observe_nothing() -> None:
    registry, cache = await make(leader=False)
    inf = cache.informer(WORKSPACE)
    inf.apply("ADDED", workspace("a", [], rv="1"))
    inf.apply("MODIFIED", workspace("a", [cond("ResourceReady", "True")], rv="2"))
    name = "kaito_workspace_provisioning_duration_seconds_count"
    assert sample(registry, name, preset_name="phi-3-mini-4k-instruct") is None
