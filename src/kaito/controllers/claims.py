"""A Workspace's nodes: nodes the user brought, and NodeClaims we make for the rest.

Nodes already in the cluster come first, as upstream's bring-your-own path and its older
"qualified nodes" selection do: a Ready node that matches ``resource.labelSelector`` (and
the instance type, unless it is one of ``resource.preferredNodes``) and belongs to no other
Workspace counts towards the target, so only the shortfall is provisioned. Preferred nodes
are chosen first, then the nodes the Workspace already runs on, then by name. With node
auto-provisioning off (the ``byo`` provisioner, or no instance type) nothing is made: the
Workspace waits, with a condition saying so, until enough nodes are there.

Claims are cluster-scoped and named deterministically from the Workspace and an index, so a
restarted operator finds the claims it already made instead of making more. A claim already
made is kept when user nodes appear later: its node may run a pod, and a node that is
provisioned is not worth a restart to save.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kaito.api import WorkspaceBase
from kaito.api import constants as C
from kaito.api.constants import ConditionType, Reason
from kaito.controllers import diagnosis
from kaito.controllers import objects as o
from kaito.controllers.common import Facts, WorkspaceSettings, gpu_resource
from kaito.controllers.expectations import CreateExpectations
from kaito.presets import SpecError, get_sku
from kaito.presets.plan import Plan
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.errors import AlreadyExists
from kaito.runtime.events import EventRecorder
from kaito.runtime.gvk import NODE, STATEFULSET
from kaito.runtime.objects import to_dict


@dataclass(frozen=True)
class NodeNeeds:
    """What the workload needs: ``target`` Ready nodes of ``instance_type`` with ``gpus`` each.

    ``instance_type`` is None for bring-your-own nodes (nothing to provision); ``disk`` is the
    OS disk a provisioned node gets (the model's weights plus headroom, as upstream sizes it).
    """

    target: int
    gpus: int
    instance_type: str | None
    disk: str = C.DEFAULT_NODE_DISK


@dataclass(frozen=True)
class Placement:
    """The nodes a reconcile found for a Workspace, and how its pods are to select them."""

    ready: bool
    provisioned: bool = False
    """Nodes made for the Workspace (its ownership labels) are among them."""
    pinned_nodes: tuple[str, ...] = ()
    """The user's own nodes chosen next to provisioned ones, selected by name."""
    preferred_nodes: tuple[str, ...] = ()
    nodes_ready_at: dt.datetime | None = None
    """When the last of the Workspace's own nodes became Ready (None: not known)."""

    @property
    def only_own_nodes(self) -> bool:
        """Every node the pods may use is one being made for this Workspace.

        The pods' node affinity is then fixed before any node exists (the ownership labels),
        so the workload can be written ahead of the nodes and its pods wait in the scheduler.
        """
        return self.provisioned and not self.pinned_nodes


def node_needs(ws: WorkspaceBase, plan: Plan) -> NodeNeeds:
    """The nodes a plan needs; SpecError on ``resource.instanceType`` if it is unknown.

    A pod-template Workspace has no estimate: ``resource.count`` nodes (1 by default) of
    its instance type, each with all of that type's GPUs, as upstream sizes it; without an
    instance type only bring-your-own nodes can serve it.
    """
    if plan.mode == "template":
        name = ws.resource.instance_type
        sku = get_sku(name) if name else None
        if name and sku is None:
            raise SpecError(
                "resource.instanceType",
                f"unknown instance type {name!r}; `kaito skus` lists the known ones",
            )
        return NodeNeeds(
            ws.resource.count or 1, sku.gpu_count if sku else 0, sku.name if sku else None
        )
    assert plan.estimate is not None and plan.sku is not None and plan.preset is not None
    # bring-your-own nodes are sized from their labels (a Sku named "byo"): nothing to make
    instance_type = plan.sku.name if ws.resource.instance_type else None
    if plan.mode == "tuning":  # a tuning Job runs on one node with all of its GPUs
        return NodeNeeds(1, plan.sku.gpu_count, instance_type)
    disk = f"{plan.preset.node_disk_gib}Gi"
    return NodeNeeds(plan.estimate.node_count, plan.estimate.gpus_per_node, instance_type, disk)


def _order(nodes: list[dict[str, Any]], preferred: list[str], previous: list[str]) -> None:
    """Upstream's choice among qualified nodes: preferred first (in the user's order), then
    the ones the Workspace already runs on, then by name."""

    def key(node: dict[str, Any]) -> tuple[int, int, str]:
        name = str(node["metadata"]["name"])
        rank = preferred.index(name) if name in preferred else len(preferred)
        return (rank, 0 if name in previous else 1, name)

    nodes.sort(key=key)


class NodeClaims:
    """Makes sure a Workspace has its Ready nodes (called by the workspace reconciler)."""

    def __init__(
        self, client: Client, cache: Cache, recorder: EventRecorder, settings: WorkspaceSettings
    ) -> None:
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.settings = settings
        self.expectations = CreateExpectations()

    def candidate_nodes(
        self, ws: WorkspaceBase, gpus: int, *, own: bool = False
    ) -> list[dict[str, Any]]:
        """Ready nodes the Workspace may use beside any it gets provisioned, best first.

        A node qualifies when it matches ``resource.labelSelector``, has the GPUs, belongs
        to no other Workspace (nor to a Karpenter node pool) and, with an instance type set,
        is of that type, unless it is a preferred node. ``own``: nodes provisioned for this
        Workspace count too (auto-provisioning off: they were made before it was switched
        off). Filters on the cache's compact entries first, so the many nodes provisioned
        for other Workspaces (which carry the same user labels) are never decoded.
        """
        wanted = o.sanitized_selector(ws.resource.label_selector.match_labels)
        if not wanted:
            return []
        preferred = list(ws.resource.preferred_nodes or ())
        instance_type = (ws.resource.instance_type or "").lower()
        found = []
        for entry in self.cache.entries(NODE, labels=wanted):
            labels = entry.labels or {}
            mine = labels.get(C.LABEL_WORKSPACE_NAME) == ws.name and (
                labels.get(C.LABEL_WORKSPACE_NAMESPACE) == ws.namespace
            )
            if mine and not own:
                continue  # a node of our claims: counted through the claim
            if not mine and (
                C.LABEL_WORKSPACE_NAME in labels or C.LABEL_KARPENTER_NODEPOOL in labels
            ):
                continue
            node_type = labels.get(C.LABEL_INSTANCE_TYPE)
            if (
                instance_type
                and node_type is not None
                and node_type.lower() != instance_type
                and entry.name not in preferred
            ):
                continue
            obj = self.cache.get(NODE, None, entry.name)
            if obj is None:
                continue
            node = to_dict(obj)
            if diagnosis.node_problem(node, entry.name, gpus, gpu_resource(ws)) is None:
                found.append(node)
        previous = list(ws.status.worker_nodes or ()) if ws.status else []
        _order(found, preferred, previous)
        return found

    async def reconcile(
        self, ws: WorkspaceBase, owner: o.Owner, needs: NodeNeeds, facts: Facts
    ) -> Placement:
        """Make sure ``needs.target`` Ready nodes exist: the user's first, claims for the rest."""
        target, gpus = needs.target, needs.gpus
        facts.target = target
        preferred = tuple(ws.resource.preferred_nodes or ())
        if self.settings.node_provisioner == "byo" or needs.instance_type is None:
            nodes = self.candidate_nodes(ws, gpus, own=True)[:target]
            ready = self._byo_status(ws, nodes, needs, facts)
            return Placement(ready, preferred_nodes=preferred)
        claim_gvk = self.settings.claim_gvk
        existing = {
            to_dict(c)["metadata"]["name"]: to_dict(c)
            for c in self.cache.list(claim_gvk, labels=o.ownership_labels(owner))
        }
        candidates = self.candidate_nodes(ws, gpus)
        names = [o.nodeclaim_name(owner, i) for i in range(target)]
        live = [n for n in names if n in existing and not _deleting(existing[n])]
        count = max(target - len(candidates), len(live))
        free = [n for n in names if n not in existing]
        wanted = live + free[: count - len(live)]
        chosen = [n["metadata"]["name"] for n in candidates[: target - count]]
        await self._delete_extra(ws, existing, set(wanted), target)
        problems: list[diagnosis.Diagnosis] = []
        ready_nodes: list[str] = []
        ready_at: dt.datetime | None = None
        for name in wanted:
            claim = existing.get(name)
            if claim is None:
                if not self.expectations.pending(None, name):
                    await self._create(ws, owner, names.index(name), needs)
                problems.append(
                    diagnosis.Diagnosis(
                        Reason.NODE_CLAIM_NOT_READY,
                        f"{claim_gvk.kind} {name} created, waiting for its node",
                    )
                )
                continue
            self.expectations.forget(None, name)
            if not diagnosis.is_true(claim, "Ready"):
                problems.append(diagnosis.claim_problem(claim))
                continue
            node_name = (claim.get("status") or {}).get("nodeName") or name
            node_obj = self.cache.get(NODE, None, node_name)
            node = None if node_obj is None else to_dict(node_obj)
            problem = diagnosis.node_problem(node, node_name, gpus, gpu_resource(ws))
            if problem is not None:
                problems.append(problem)
                continue
            if node is not None and gpus:
                await self._label_accelerator(node)
            ready_nodes.append(node_name)
            since = diagnosis.transition_time(node, "Ready") if node is not None else None
            if since is not None and (ready_at is None or since > ready_at):
                ready_at = since
        facts.worker_nodes = sorted(ready_nodes + chosen)
        self._claims_condition(existing, wanted, len(chosen), facts)
        placement = Placement(
            not problems and len(wanted) + len(chosen) >= target,
            provisioned=bool(wanted),
            pinned_nodes=tuple(sorted(chosen)),
            preferred_nodes=preferred,
            nodes_ready_at=ready_at,
        )
        if problems or not placement.ready:
            first = problems[0] if problems else None
            facts.set(
                ConditionType.NODES_READY,
                False,
                Reason.NODE_NOT_READY,
                f"{len(ready_nodes) + len(chosen)}/{target} nodes ready",
            )
            if first is not None:
                facts.set(ConditionType.RESOURCE_READY, False, first.reason, first.message)
            return placement
        mix = f" ({len(chosen)} already in the cluster)" if chosen else ""
        facts.set(
            ConditionType.NODES_READY, True, Reason.NODES_READY, f"{target} node(s) ready{mix}"
        )
        facts.set(
            ConditionType.RESOURCE_READY,
            True,
            Reason.RESOURCE_STATUS_SUCCESS,
            f"{target} {needs.instance_type} node(s) ready{mix}",
        )
        return placement

    def _claims_condition(
        self, existing: dict[str, dict[str, Any]], wanted: list[str], found: int, facts: Facts
    ) -> None:
        kind = self.settings.claim_gvk.kind
        if not wanted:
            facts.set(
                ConditionType.NODE_CLAIM_READY,
                True,
                Reason.NODE_CLAIMS_READY,
                f"no {kind} needed: {found} matching node(s) already in the cluster",
            )
            return
        ready = sum(diagnosis.is_true(existing.get(n, {}), "Ready") for n in wanted)
        facts.set(
            ConditionType.NODE_CLAIM_READY,
            ready == len(wanted),
            Reason.NODE_CLAIMS_READY if ready == len(wanted) else Reason.NODE_CLAIM_NOT_READY,
            f"{ready}/{len(wanted)} {kind}s ready",
        )

    async def _label_accelerator(self, node: dict[str, Any]) -> None:
        """Upstream's GPU-node readiness step: ``accelerator=nvidia`` on a provisioned GPU
        node, written by the controller when the node came up without it."""
        meta = node["metadata"]
        if (meta.get("labels") or {}).get(C.LABEL_ACCELERATOR) == C.ACCELERATOR_NVIDIA:
            return
        await self.client.patch(
            NODE,
            None,
            meta["name"],
            {"metadata": {"labels": {C.LABEL_ACCELERATOR: C.ACCELERATOR_NVIDIA}}},
        )

    def _byo_status(
        self,
        ws: WorkspaceBase,
        chosen: list[dict[str, Any]],
        needs: NodeNeeds,
        facts: Facts,
    ) -> bool:
        target = needs.target
        names = [n["metadata"]["name"] for n in chosen]
        facts.worker_nodes = sorted(names)
        missing = [p for p in ws.resource.preferred_nodes or () if p not in names]
        if len(chosen) < target:
            selector = ",".join(
                f"{k}={v}"
                for k, v in sorted(
                    o.sanitized_selector(ws.resource.label_selector.match_labels).items()
                )
            )
            msg = (
                f"waiting for nodes: {len(chosen)}/{target} Ready node(s) match "
                f"resource.labelSelector ({selector}) with {needs.gpus} GPU(s) each; label "
                "your GPU nodes, or let the operator provision them (resource.instanceType)"
            )
            if missing:
                msg += f"; preferred node(s) {', '.join(missing)} not Ready or not matching"
            facts.set(ConditionType.NODES_READY, False, Reason.NODE_NOT_READY, msg)
            facts.set(ConditionType.RESOURCE_READY, False, Reason.NODE_NOT_READY, msg)
            return False
        note = f"; preferred node(s) {', '.join(missing)} not used" if missing else ""
        facts.set(
            ConditionType.NODES_READY,
            True,
            Reason.NODES_READY,
            f"{target} bring-your-own node(s) ready{note}",
        )
        facts.set(
            ConditionType.RESOURCE_READY,
            True,
            Reason.RESOURCE_STATUS_SUCCESS,
            "bring-your-own nodes are ready",
        )
        return True

    async def _delete_extra(
        self,
        ws: WorkspaceBase,
        existing: dict[str, dict[str, Any]],
        wanted: set[str],
        target: int,
    ) -> None:
        """Delete the claims beyond the target (it fell: a changed inference config needs
        fewer GPUs), once the StatefulSet no longer runs pods on more nodes than that."""
        extra = [
            name for name, claim in existing.items() if name not in wanted and not _deleting(claim)
        ]
        if not extra:
            return
        sts = self.cache.get(STATEFULSET, ws.namespace, ws.name)
        if sts is not None:
            obj = to_dict(sts)
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            if spec.get("replicas", 1) > target or status.get("replicas", 0) > target:
                return  # its scale-down event brings us back
        kind = self.settings.claim_gvk.kind
        for name in extra:
            await self.client.delete(self.settings.claim_gvk, None, name, ignore_not_found=True)
            self.recorder.event(
                ws, "Normal", "NodeClaimDeleted", f"deleted {kind} {name}: {target} node(s) needed"
            )

    async def _create(
        self, ws: WorkspaceBase, owner: o.Owner, index: int, needs: NodeNeeds
    ) -> None:
        claim_gvk = self.settings.claim_gvk
        instance_type = needs.instance_type
        assert instance_type is not None
        body = o.nodeclaim(
            owner,
            index,
            instance_type=instance_type,
            match_labels=ws.resource.label_selector.match_labels,
            storage=needs.disk,
            node_image_family=(ws.metadata.annotations or {}).get(
                C.ANNOTATION_NODE_IMAGE_FAMILY, self.settings.node_image_family
            ),
            api_version=claim_gvk.api_version,
            gpu=needs.gpus > 0,
        )
        if self.settings.claims_finalized_by_us:
            # saves the machine controller a patch per claim
            body["metadata"]["finalizers"] = [C.FINALIZER_KARPENTER_TERMINATION]
        name = body["metadata"]["name"]
        # expected before the request: the create's watch event may beat its response
        self.expectations.expect(None, name)
        try:
            await self.client.create(body)
        except AlreadyExists:
            return
        except BaseException:
            self.expectations.forget(None, name)
            raise
        self.recorder.event(
            ws, "Normal", "NodeClaimCreated", f"created {claim_gvk.kind} {name} ({instance_type})"
        )


def _deleting(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))
