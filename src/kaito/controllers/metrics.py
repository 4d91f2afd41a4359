"""Kaito's own operator metrics, beside the runtime's controller-runtime ones.

The gauges are computed from the shared informer cache when Prometheus scrapes (a custom
collector), so they can never drift from what the controllers see and cost nothing between
scrapes.  The two latency histograms are fed by a cache listener that notices a Workspace's
``ResourceReady`` / ``WorkspaceSucceeded`` condition turning True; the latency is that
condition's ``lastTransitionTime`` minus the Workspace's ``creationTimestamp``, so a slow watch
or an operator restart does not skew it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kaito.api import constants as C
from kaito.controllers.diagnosis import condition_of, is_true, timestamp
from kaito.runtime.cache import Cache, InformerNotFound
from kaito.runtime.gvk import GVK
from kaito.runtime.informer import DELETED, MODIFIED, InformerEvent

WORKSPACE_PHASES = ("succeeded", "error", "pending", "deleting")
"""Upstream's ``kaito_workspace_count`` phases."""
CLAIM_STATES = ("pending", "launched", "registered", "initialized", "ready", "deleting")
"""Karpenter's lifecycle in order; a claim is in the furthest state whose condition is True."""
LATENCY_BUCKETS = (
    1, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600, 900, 1200, 1800, 2700, 3600, 5400,
    7200,
)  # fmt: skip
"""Seconds: KWOK nodes take seconds, cloud GPU nodes minutes, a large model's download an hour."""
NO_PRESET = ""


def workspace_phase(ws: Mapping[str, Any]) -> str:
    """succeeded / error / pending / deleting, as upstream counts them.

    Upstream reads any ``WorkspaceSucceeded=False`` as an error; ours also writes False while a
    Workspace is merely waiting (reason ``workspacePending``), which stays "pending" here.
    """
    if (ws.get("metadata") or {}).get("deletionTimestamp") or is_true(
        ws, C.ConditionType.WORKSPACE_DELETING
    ):
        return "deleting"
    cond = condition_of(ws, C.ConditionType.WORKSPACE_SUCCEEDED)
    if cond is None:
        return "pending"
    if cond.get("status") == "True":
        return "succeeded"
    if cond.get("status") == "False" and cond.get("reason") != C.Reason.WORKSPACE_PENDING:
        return "error"
    return "pending"


def workspace_preset(ws: Mapping[str, Any]) -> str:
    """The preset a Workspace serves or tunes; "" for a custom pod template."""
    for section in ("inference", "tuning"):
        preset = (ws.get(section) or {}).get("preset") or {}
        if preset.get("name"):
            return str(preset["name"])
    return NO_PRESET


def claim_state(claim: Mapping[str, Any]) -> str:
    """Where a NodeClaim (or legacy Machine) is in Karpenter's lifecycle."""
    if (claim.get("metadata") or {}).get("deletionTimestamp"):
        return "deleting"
    conditions = {
        str(c.get("type", "")).removeprefix("Machine"): c.get("status")
        for c in (claim.get("status") or {}).get("conditions") or ()
    }
    for state in ("Ready", "Initialized", "Registered", "Launched"):
        if conditions.get(state) == "True":
            return state.lower()
    return "pending"


class OperatorCollector(Collector):
    """Workspace and NodeClaim gauges, counted from the cache at scrape time."""

    def __init__(self, cache: Cache, workspace: GVK, claim: GVK) -> None:
        self.cache = cache
        self.workspace = workspace
        self.claim = claim

    def _objects(self, gvk: GVK) -> Iterable[dict[str, Any]]:
        try:
            entries = self.cache.entries(gvk)
        except InformerNotFound:
            return []
        return (json.loads(e.raw) for e in entries)

    def collect(self) -> Iterable[Metric]:
        phases: Counter[str] = Counter(dict.fromkeys(WORKSPACE_PHASES, 0))
        presets: Counter[str] = Counter()
        for ws in self._objects(self.workspace):
            phases[workspace_phase(ws)] += 1
            preset = workspace_preset(ws)
            if preset:
                presets[preset] += 1
        count = GaugeMetricFamily(
            "kaito_workspace_count", "Number of Workspaces per phase", labels=["phase"]
        )
        for phase, n in sorted(phases.items()):
            count.add_metric([phase], n)
        yield count
        preset_count = GaugeMetricFamily(
            "kaito_workspace_preset_count",
            "Number of Workspaces per preset model",
            labels=["preset_name"],
        )
        for preset, n in sorted(presets.items()):
            preset_count.add_metric([preset], n)
        yield preset_count
        states: Counter[str] = Counter(dict.fromkeys(CLAIM_STATES, 0))
        for claim in self._objects(self.claim):
            states[claim_state(claim)] += 1
        claims = GaugeMetricFamily(
            "kaito_nodeclaim_count",
            "Number of Kaito NodeClaims per lifecycle state",
            labels=["state"],
        )
        for state, n in sorted(states.items()):
            claims.add_metric([state], n)
        yield claims


class ReadinessLatency:
    """Histograms of Workspace creation → nodes ready and → ready to serve."""

    def __init__(self, registry: CollectorRegistry, is_leader: Callable[[], bool]) -> None:
        self.is_leader = is_leader
        self.provisioning = Histogram(
            "kaito_workspace_provisioning_duration_seconds",
            "Seconds from Workspace creation until its nodes are ready (ResourceReady=True)",
            ["preset_name"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_ready = Histogram(
            "kaito_workspace_inference_ready_duration_seconds",
            "Seconds from Workspace creation until it serves (WorkspaceSucceeded=True)",
            ["preset_name"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._seen: set[tuple[str, str]] = set()  # (uid, condition) already observed
        self._pairs = (
            (C.ConditionType.RESOURCE_READY, self.provisioning),
            (C.ConditionType.WORKSPACE_SUCCEEDED, self.inference_ready),
        )

    def on_event(self, event: InformerEvent) -> None:
        """Informer listener: observe each condition's first False/absent → True step.

        Only the leader observes, so replicas do not count one Workspace twice; events
        replayed from a relist are skipped, they are not transitions this process saw; a
        Workspace that loses and regains readiness (a node replaced) is not counted again.
        """
        new = event.obj
        uid = str((new.get("metadata") or {}).get("uid", ""))
        if event.type == DELETED:
            for type_, _ in self._pairs:
                self._seen.discard((uid, type_))
            return
        if event.type != MODIFIED or event.initial or event.old is None:
            return
        fresh = [(t, h) for t, h in self._pairs if is_true(new, t)]
        if not fresh or not self.is_leader():
            return
        old = event.old.decode()
        created = timestamp((new.get("metadata") or {}).get("creationTimestamp"))
        if created is None:
            return
        preset = workspace_preset(new)
        for type_, histogram in fresh:
            if is_true(old, type_) or (uid, type_) in self._seen:
                continue
            self._seen.add((uid, type_))
            cond = condition_of(new, type_) or {}
            at = timestamp(cond.get("lastTransitionTime"))
            if at is not None:
                histogram.labels(preset_name=preset).observe(
                    max(0.0, (at - created).total_seconds())
                )


def register(
    registry: CollectorRegistry,
    cache: Cache,
    *,
    workspace: GVK,
    claim: GVK,
    is_leader: Callable[[], bool],
) -> ReadinessLatency:
    """Add Kaito's metrics to `registry`; the Workspace informer must already exist."""
    registry.register(OperatorCollector(cache, workspace, claim))
    latency = ReadinessLatency(registry, is_leader)
    cache.informer(workspace).add_listener(latency.on_event)
    return latency
