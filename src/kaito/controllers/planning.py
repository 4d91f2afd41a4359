"""The plan of each Workspace spec: model, instance type and node count, computed once per
version of the spec and of its inference ConfigMap.

Planning reads what the spec alone cannot say: an instance type Kaito's table lacks (from the
labels of nodes of that type, or the cloud's SKU list), the GPU Feature Discovery labels of
bring-your-own nodes, and a model named by a hub id (from the model hub). What depends on
something no watch sees (the hub, the cloud) is not memoised, so it is asked again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kaito.api import WorkspaceBase
from kaito.api import constants as C
from kaito.controllers import configs, hub_models
from kaito.controllers import objects as o
from kaito.controllers.claims import NodeClaims
from kaito.controllers.common import WorkspaceSettings
from kaito.hub import HubPresets
from kaito.presets import FitError, Sku, SpecError, get_sku, sku_from_node_labels
from kaito.presets.partition import partitioned
from kaito.presets.plan import Plan, plan_workspace
from kaito.presets.skus import LearnedSku, learn_from_nodes
from kaito.presets.vllm_config import parse_inference_config
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.events import EventRecorder
from kaito.runtime.gvk import NODE
from kaito.runtime.objects import to_dict


class Planner:
    """Plans Workspaces for their reconciler, one memoised plan per Workspace."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        recorder: EventRecorder,
        settings: WorkspaceSettings,
        claims: NodeClaims,
        *,
        cloud_skus: Callable[[str], Awaitable[LearnedSku | None]] | None,
        hub: HubPresets,
    ) -> None:
        """`cloud_skus` sizes instance types the table lacks (Azure's resource SKU list);
        `hub` sizes models named by a hub id the catalog lacks."""
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.settings = settings
        self.claims = claims
        self.cloud_skus = cloud_skus
        self.hub = hub
        # (uid, spec hash, inference ConfigMap resourceVersion, performance mode) -> plan,
        # one per Workspace
        self._plans: dict[tuple[str, str, str, str], Plan | SpecError] = {}
        self.learned: dict[str, LearnedSku] = {}  # uid → an instance type the table lacks

    def forget(self, uid: str) -> None:
        """Drop what was planned and learned for a deleted Workspace."""
        self._plans = {k: v for k, v in self._plans.items() if k[0] != uid}
        self.learned.pop(uid, None)

    async def plan(self, ws: WorkspaceBase, digest: str) -> tuple[Plan | SpecError, float | None]:
        """The plan of this spec (and inference config), computed once per version of both.

        The second item says when to look again: None when an event brings the change that
        could settle it (the spec, its ConfigMap, a node); seconds for what no watch sees
        (the model hub, the modelAccessSecret).
        """
        config: dict[str, Any] | None = None
        version = ""
        if ws.inference is not None and ws.inference.config:
            try:
                text, version = configs.config_text(
                    self.cache,
                    ws.namespace,
                    ws.inference.config,
                    key=o.CONFIG_KEY,
                    field="inference.config",
                )
            except SpecError as exc:
                return exc, None  # its ConfigMap's arrival wakes the Workspace
        uid = ws.metadata.uid or ws.name
        mode = (ws.metadata.annotations or {}).get(C.ANNOTATION_PERFORMANCE_MODE, "")
        key = (uid, digest, version, mode)
        found = self._plans.get(key)
        if found is not None:
            return found, None
        try:
            sku = await self._node_sku(ws)
        except SpecError as exc:
            return exc, None  # not memoised: nodes may be labelled, the cloud may answer later
        doc = ws.model_dump(mode="json", by_alias=True, exclude_none=True)
        try:
            hub_presets = await hub_models.presets_for(self.client, self.hub, ws, doc)
        except SpecError as exc:
            # not memoised: the hub, the model or the Secret may change, and none is watched
            return exc, hub_models.recheck_after(exc)
        try:
            if version:
                config = parse_inference_config(text)
            plan: Plan | SpecError = plan_workspace(
                doc,
                inference_config=config,
                sku=sku,
                hub_presets=hub_presets,
                hub_endpoint=self.settings.hub_endpoint,
            )
        except (SpecError, FitError) as exc:
            plan = (
                exc if isinstance(exc, SpecError) else SpecError("resource.instanceType", str(exc))
            )
            self.recorder.event(ws, "Warning", "InvalidSpec", str(plan))
        self._plans = {k: v for k, v in self._plans.items() if k[0] != uid}
        self._plans[key] = plan
        return plan, None

    async def _node_sku(self, ws: WorkspaceBase) -> Sku | None:
        """The nodes' figures when the table cannot give them (None: the table's)."""
        uid = ws.metadata.uid or ws.name
        name = ws.resource.instance_type
        if name is not None:
            if get_sku(name) is not None:
                return None
            learned = learn_from_nodes(
                name,
                (to_dict(n) for n in self.cache.list(NODE, labels={C.LABEL_INSTANCE_TYPE: name})),
            )
            if learned is None and self.cloud_skus is not None:
                try:
                    learned = await self.cloud_skus(name)
                except Exception as exc:  # the cloud's words go into the condition
                    raise SpecError(
                        "resource.instanceType",
                        f"{name} is not in Kaito's table and the cloud's SKU list could not be "
                        f"read: {exc}",
                    ) from None
            if learned is None:
                return None  # plan_workspace names the unknown instance type
            self.learned[uid] = learned
            return learned.sku
        if ws.api_version.endswith(C.V1ALPHA1) or (ws.inference and ws.inference.template):
            return None
        return self._byo_sku(ws)

    def _byo_sku(self, ws: WorkspaceBase) -> Sku:
        """Bring-your-own nodes sized as upstream sizes them: from the GPU Feature Discovery
        labels of the first Ready node the Workspace would choose (preferred nodes first).

        AwaitingNodes until such a node is there: the Workspace was admitted before its nodes
        (they may be created or labelled later; a node's change wakes the Workspace).
        """
        selector = o.sanitized_selector(ws.resource.label_selector.match_labels)
        nodes = self.claims.candidate_nodes(ws, 0, own=True)
        for node in nodes:
            sku = sku_from_node_labels(node["metadata"].get("labels") or {})
            if sku is None:
                continue
            part = ws.resource.partition
            if part is None:
                return sku
            return partitioned(sku, part.mode, profile=part.profile, count=part.count)
        shown = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        found = (
            f"Ready node(s) {', '.join(n['metadata']['name'] for n in nodes[:5])} match "
            f"resource.labelSelector ({shown}) but lack the GPU Feature Discovery labels "
            f"{', '.join(C.GPU_LABELS)}"
            if nodes
            else f"no Ready node matches resource.labelSelector ({shown}) yet"
        )
        raise AwaitingNodes(
            "resource.labelSelector",
            f"waiting for nodes: {found}; label your GPU nodes (GPU Feature Discovery does) "
            "and the Workspace starts on them",
        )


class AwaitingNodes(SpecError):
    """Bring-your-own nodes are not there (or not labelled) yet: wait, nothing is wrong."""
