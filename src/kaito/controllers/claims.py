"""A Workspace's nodes: bring-your-own nodes the user labelled, or NodeClaims we make.

Claims are cluster-scoped and named deterministically from the Workspace and an index, so a
restarted operator finds the claims it already made instead of making more.
"""

from __future__ import annotations

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
    """What the workload needs: ``target`` Ready nodes of ``instance_type`` with ``gpus`` each."""

    target: int
    gpus: int
    instance_type: str | None


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
    assert plan.estimate is not None and plan.sku is not None
    if plan.mode == "tuning":  # a tuning Job runs on one node with all of its GPUs
        return NodeNeeds(1, plan.sku.gpu_count, plan.sku.name)
    return NodeNeeds(plan.estimate.node_count, plan.estimate.gpus_per_node, plan.sku.name)


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

    def byo_nodes(self, ws: WorkspaceBase, gpus: int) -> list[dict[str, Any]]:
        """Ready nodes the user labelled for this Workspace, not made by any provisioner.

        Filters on the cache's compact entries first, so the many nodes provisioned for
        other Workspaces (which carry the same user labels) are never decoded.
        """
        wanted = o.sanitized_selector(ws.resource.label_selector.match_labels)
        if not wanted:
            return []
        found = []
        for entry in self.cache.entries(NODE, labels=wanted):
            labels = entry.labels or {}
            if C.LABEL_WORKSPACE_NAME in labels or C.LABEL_KARPENTER_NODEPOOL in labels:
                continue
            instance = labels.get(C.LABEL_INSTANCE_TYPE)
            if ws.resource.instance_type and instance not in (None, ws.resource.instance_type):
                continue
            obj = self.cache.get(NODE, None, entry.name)
            if obj is None:
                continue
            node = to_dict(obj)
            if diagnosis.node_problem(node, entry.name, gpus, gpu_resource(ws)) is None:
                found.append(node)
        return found

    async def reconcile(
        self, ws: WorkspaceBase, owner: o.Owner, needs: NodeNeeds, facts: Facts
    ) -> tuple[bool, bool]:
        """(ready, byo): make sure ``needs.target`` Ready nodes exist."""
        target, gpus = needs.target, needs.gpus
        facts.target = target
        claim_gvk = self.settings.claim_gvk
        existing = {
            to_dict(c)["metadata"]["name"]: to_dict(c)
            for c in self.cache.list(claim_gvk, labels=o.ownership_labels(owner))
        }
        byo = self.byo_nodes(ws, gpus)
        byo_only = self.settings.node_provisioner == "byo" or needs.instance_type is None
        if len(byo) >= target or byo_only:
            await self._delete_extra(ws, existing, set(), target)
            return self._byo_status(byo, needs, facts), True
        wanted = {o.nodeclaim_name(owner, i) for i in range(target)}
        await self._delete_extra(ws, existing, wanted, target)
        existing = {k: v for k, v in existing.items() if k in wanted}
        problems: list[diagnosis.Diagnosis] = []
        ready_nodes: list[str] = []
        for index in range(target):
            name = o.nodeclaim_name(owner, index)
            claim = existing.get(name)
            if claim is None:
                if not self.expectations.pending(None, name):
                    await self._create(ws, owner, index, needs)
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
            node = self.cache.get(NODE, None, node_name)
            problem = diagnosis.node_problem(
                None if node is None else to_dict(node), node_name, gpus, gpu_resource(ws)
            )
            if problem is not None:
                problems.append(problem)
                continue
            ready_nodes.append(node_name)
        facts.worker_nodes = sorted(ready_nodes)
        claims_ready = all(
            diagnosis.is_true(existing.get(o.nodeclaim_name(owner, i), {}), "Ready")
            for i in range(target)
        )
        facts.set(
            ConditionType.NODE_CLAIM_READY,
            claims_ready,
            Reason.NODE_CLAIMS_READY if claims_ready else Reason.NODE_CLAIM_NOT_READY,
            f"{sum(diagnosis.is_true(c, 'Ready') for c in existing.values())}/{target} "
            f"{claim_gvk.kind}s ready",
        )
        if problems:
            first = problems[0]
            facts.set(
                ConditionType.NODES_READY,
                False,
                Reason.NODE_NOT_READY,
                f"{len(ready_nodes)}/{target} nodes ready",
            )
            facts.set(ConditionType.RESOURCE_READY, False, first.reason, first.message)
            return False, False
        facts.set(ConditionType.NODES_READY, True, Reason.NODES_READY, f"{target} node(s) ready")
        facts.set(
            ConditionType.RESOURCE_READY,
            True,
            Reason.RESOURCE_STATUS_SUCCESS,
            f"{target} {needs.instance_type} node(s) ready",
        )
        return True, False

    @staticmethod
    def _byo_status(byo: list[dict[str, Any]], needs: NodeNeeds, facts: Facts) -> bool:
        target = needs.target
        chosen = byo[:target]
        facts.worker_nodes = sorted(n["metadata"]["name"] for n in chosen)
        if len(chosen) < target:
            msg = (
                f"{len(chosen)}/{target} Ready nodes match resource.labelSelector with "
                f"{needs.gpus} GPU(s) each; label more nodes or let the operator provision them"
            )
            facts.set(ConditionType.RESOURCE_READY, False, Reason.NODE_NOT_READY, msg)
            return False
        facts.set(
            ConditionType.NODES_READY,
            True,
            Reason.NODES_READY,
            f"{target} bring-your-own node(s) ready",
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
            name
            for name, claim in existing.items()
            if name not in wanted and not claim["metadata"].get("deletionTimestamp")
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
            node_image_family=(ws.metadata.annotations or {}).get(
                C.ANNOTATION_NODE_IMAGE_FAMILY, self.settings.node_image_family
            ),
            api_version=claim_gvk.api_version,
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
