"""Reconciler defects that need a late watch event, reproduced on every run.

The operator runs in the test's event loop (``inprocess``) against the real control plane,
and a test holds back the events of one informer exactly where a slow watch would.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import yaml

from kaito.controllers import objects as o
from kaito.controllers.common import NODECLAIM, WORKSPACE
from kaito.runtime.gvk import NODE, STATEFULSET
from kaito.runtime.objects import to_dict

from ..conftest import REPO, Cluster
from .inprocess import InProcessOperator, eventually, running_operator

pytestmark = pytest.mark.e2e


def example(filename: str, namespace: str, name: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "examples" / filename).read_text())
    doc["metadata"]["namespace"] = namespace
    if name is not None:
        doc["metadata"]["name"] = name
    return doc


async def workspace(op: InProcessOperator, namespace: str, name: str) -> dict[str, Any]:
    return to_dict(await op.client.get(WORKSPACE, namespace, name))


async def state(op: InProcessOperator, namespace: str, name: str) -> str | None:
    status = (await workspace(op, namespace, name)).get("status") or {}
    return status.get("state")


async def finalize_all(op: InProcessOperator, namespace: str, names: list[str]) -> None:
    for name in names:
        await op.client.delete(WORKSPACE, namespace, name, ignore_not_found=True)
    for name in names:

        async def gone(name: str = name) -> bool:
            return not [
                w
                for w in await op.client.list(WORKSPACE, namespace)
                if to_dict(w)["metadata"]["name"] == name
            ]

        await eventually(f"Workspace {name} finalized", gone)


async def test_a_status_written_while_the_workspace_watch_lags_is_not_left_stale(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    """Defect 12: StatefulSet deleted and recreated, Workspace NotReady although it serves.

    The reconcile after the delete writes NotReady; the reconciles the recreated
    StatefulSet's events wake compute Ready, but compare it with the cached Workspace,
    which (its watch behind) still shows the old Ready: no write. When the watch catches
    up, the NotReady it delivers is a status-only change, which the Workspace watch's
    predicate drops, so nothing wakes the Workspace again.
    """
    name = "workspace-phi-3-mini"
    async with running_operator(cluster) as op:
        await op.client.create(example("workspace-phi-3-mini.yaml", namespace))
        await eventually("Ready", lambda: _is(state(op, namespace, name), "Ready"))
        old_uid = to_dict(await op.client.get(STATEFULSET, namespace, name))["metadata"]["uid"]
        hold = op.hold(WORKSPACE)
        await op.client.delete(STATEFULSET, namespace, name)
        await eventually("NotReady written", lambda: _is(state(op, namespace, name), "NotReady"))

        async def recreated_and_ready() -> bool:
            sts = to_dict(await op.client.get(STATEFULSET, namespace, name))
            return (
                sts["metadata"]["uid"] != old_uid
                and (sts.get("status") or {}).get("readyReplicas") == 1
            )

        await eventually("the recreated StatefulSet serving", recreated_and_ready)
        await op.settle()
        hold.release()
        await eventually("Ready again", lambda: _is(state(op, namespace, name), "Ready"), 30)
        await finalize_all(op, namespace, [name])


async def _is(value: Any, wanted: Any) -> bool:
    return bool(await value == wanted)


async def test_worker_nodes_are_cleared_and_not_ready_nodes_cost_no_status_writes(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    """Defect 8: status.workerNodes kept its node after the node went NotReady (a merge patch
    drops a missing key instead of deleting it), and every reconcile while the node stayed
    NotReady sent the same status patch again."""
    label = f"byo-{uuid.uuid4().hex[:6]}"
    node_name = f"node-{label}"
    await asyncio.to_thread(cluster.add_node, node_name, "Standard_NC6s_v3", {"apps": label})
    name = "byo-status"
    try:
        async with running_operator(cluster, "--node-provisioner=byo") as op:
            doc = example("workspace-phi-3-mini.yaml", namespace, name=name)
            doc["resource"]["labelSelector"]["matchLabels"] = {"apps": label}
            await op.client.create(doc)

            async def serving() -> bool:
                status = (await workspace(op, namespace, name)).get("status") or {}
                return status.get("state") == "Ready" and status.get("workerNodes") == [node_name]

            await eventually("Ready on the labelled node", serving)
            # KWOK lets go of the node, and the node reports NotReady
            await op.client.patch(NODE, None, node_name, {"metadata": {"labels": {"type": None}}})
            await op.client.patch_status(
                NODE,
                None,
                node_name,
                {
                    "status": {
                        "conditions": [{"type": "Ready", "status": "False", "reason": "Test"}]
                    }
                },
                patch_type="strategic",
            )

            async def cleared() -> dict[str, Any] | None:
                status = (await workspace(op, namespace, name)).get("status") or {}
                ok = status.get("state") == "NotReady" and "workerNodes" not in status
                return status if ok else None

            await eventually("workerNodes cleared", cleared)
            patches = op.requests(method="PATCH")
            for i in range(3):  # reconciles while nothing the status shows changes
                done = op.reconciles()
                await op.client.patch(
                    WORKSPACE, namespace, name, {"metadata": {"labels": {"touch": str(i)}}}
                )
                await eventually("a reconcile", lambda done=done: op.reconciles() > done)
            assert op.requests(method="PATCH") == patches
            await finalize_all(op, namespace, [name])
    finally:
        await asyncio.to_thread(cluster.kubectl, "delete", "node", node_name, "--wait=false")


async def test_a_workspace_woken_before_its_claim_reaches_the_cache_creates_no_second_claim(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    """Defect 14: at N=100, 23 NodeClaim creates came back 409 AlreadyExists: the Workspace
    was reconciled again before the watch event of its own claim arrived, and created again."""
    name = "phi-expect"
    async with running_operator(cluster) as op:
        hold = op.hold(NODECLAIM)
        await op.client.create(example("workspace-phi-3-mini.yaml", namespace, name))
        await eventually("its NodeClaim created", lambda: hold.held)
        for i in range(3):  # woken again while the claim's watch event is still on its way
            done = op.reconciles()
            await op.client.patch(
                WORKSPACE, namespace, name, {"metadata": {"labels": {"touch": str(i)}}}
            )
            await eventually("a reconcile", lambda done=done: op.reconciles() > done)
        assert op.requests(code="409") == 0
        hold.release()
        await eventually("Ready", lambda: _is(state(op, namespace, name), "Ready"))
        assert op.requests(code="409") == 0
        await finalize_all(op, namespace, [name])


async def claims_of(op: InProcessOperator, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={namespace}"
    return [to_dict(c) for c in await op.client.list(NODECLAIM, label_selector=selector)]


async def test_a_workspace_deleted_before_its_claim_reaches_the_cache_waits_for_the_claim(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    """Defect 2: the finalizer was dropped as soon as the cache showed no claims, so a claim
    created moments before (its watch event not yet in) was left behind with its node."""
    name = "phi-gone-early"
    async with running_operator(cluster) as op:
        hold = op.hold(NODECLAIM)
        await op.client.create(example("workspace-phi-3-mini.yaml", namespace, name))
        await eventually("its NodeClaim created", lambda: hold.held)
        await op.client.delete(WORKSPACE, namespace, name)

        async def claim_deleting() -> bool:
            claims = await claims_of(op, namespace, name)
            return bool(claims) and all(c["metadata"].get("deletionTimestamp") for c in claims)

        await eventually("the claim deleted by the finalizer", claim_deleting)
        await asyncio.sleep(3)  # the finalizer polls every second meanwhile
        ws = to_dict(await op.client.get(WORKSPACE, namespace, name))
        assert ws["metadata"]["finalizers"] == ["workspace.finalizer.kaito.sh"]
        hold.release()  # the machine controller now sees the claim and lets it go

        async def all_gone() -> bool:
            left = [w for w in await op.client.list(WORKSPACE, namespace)]
            return not left and not await claims_of(op, namespace, name)

        await eventually("the Workspace and its claim gone", all_gone)


async def test_claims_whose_workspace_no_longer_exists_are_collected(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    """Defect 2: a claim whose Workspace is gone (finalizer removed by hand, or by an
    operator that read a stale cache) was never deleted, and neither was its node."""
    async with running_operator(cluster) as op:
        await op.client.create(example("workspace-phi-3-mini.yaml", namespace, "kept"))
        await eventually("Ready", lambda: _is(state(op, namespace, "kept"), "Ready"))
        orphan = o.nodeclaim(o.Owner("gone", namespace, "0"), 0, instance_type="Standard_NC6s_v3")
        orphan["metadata"]["finalizers"] = ["karpenter.sh/termination"]
        await op.client.create(orphan)
        node_name = orphan["metadata"]["name"]

        async def collected() -> bool:
            return not await claims_of(op, namespace, "gone") and not [
                n for n in await op.client.list(NODE) if to_dict(n)["metadata"]["name"] == node_name
            ]

        await eventually("the orphaned claim and its node gone", collected)
        kept = await claims_of(op, namespace, "kept")
        assert len(kept) == 1 and not kept[0]["metadata"].get("deletionTimestamp")
        assert await state(op, namespace, "kept") == "Ready"
        await finalize_all(op, namespace, ["kept"])
