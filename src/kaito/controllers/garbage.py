"""Periodic garbage collection of what no finalizer can protect (leader only).

Two passes, in this order, every interval:

1. NodeClaims whose Workspace no longer exists. Claims are cluster-scoped and have no owner
   reference, so the API server never collects them; the Workspace finalizer normally
   deletes them, but a finalizer removed by hand, or by an operator that read a stale
   cache, leaves them behind, each holding a GPU node.
2. Backend resources (KWOK nodes, AKS agent pools) whose claim no longer exists: the
   machine controller deletes them when a claim goes, unless it was not running then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kaito.api import constants as C
from kaito.controllers.common import WORKSPACE
from kaito.provisioner.base import NodeProvisioner, ProvisionerError
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.errors import ApiError, NotFound
from kaito.runtime.gvk import GVK
from kaito.runtime.objects import meta_of

log = logging.getLogger("kaito.controllers.garbage")


async def collect_orphaned_claims(client: Client, cache: Cache, claim_gvk: GVK) -> list[str]:
    """Delete our NodeClaims whose Workspace is gone; returns their names.

    A claim is only made by a reconcile that found its Workspace in this cache, but the
    cache may lag (or the Workspace may have been recreated): the API server has the
    last word before anything is deleted.
    """
    removed = []
    for entry in cache.entries(claim_gvk, labels={C.LABEL_KARPENTER_NODEPOOL: C.KAITO_NODEPOOL}):
        labels = entry.labels or {}
        name = labels.get(C.LABEL_WORKSPACE_NAME)
        namespace = labels.get(C.LABEL_WORKSPACE_NAMESPACE)
        if not name or not namespace or cache.get(WORKSPACE, namespace, name) is not None:
            continue
        claim = cache.get(claim_gvk, None, entry.name)
        if claim is None or meta_of(claim).get("deletionTimestamp"):
            continue
        try:
            await client.get(WORKSPACE, namespace, name)
            continue
        except NotFound:
            pass
        log.info(
            "deleting %s %s: its Workspace %s/%s no longer exists",
            claim_gvk.kind,
            entry.name,
            namespace,
            name,
        )
        await client.delete(claim_gvk, None, entry.name, ignore_not_found=True)
        removed.append(entry.name)
    return removed


async def collect_backend_resources(
    provisioner: NodeProvisioner, cache: Cache, claim_gvk: GVK
) -> list[str]:
    """Delete backend resources whose claim no longer exists; returns what was removed.

    A backend only creates resources for claims the cache already holds, so a name the
    backend knows but the synced cache lacks belongs to a claim that is gone.
    """
    removed = []
    for name in await provisioner.list_requests():
        if cache.get(claim_gvk, None, name) is None:
            log.info("garbage-collecting node resources of vanished claim %s", name)
            await provisioner.delete(name)
            removed.append(name)
    return removed


async def run_garbage_collector(
    client: Client,
    provisioner: NodeProvisioner,
    cache: Cache,
    claim_gvk: GVK,
    *,
    interval_s: float = 60.0,
    is_leader: Callable[[], bool] = lambda: True,
) -> None:
    """Both passes every ``interval_s`` while this replica leads and the cache is synced."""
    while True:
        await asyncio.sleep(interval_s)
        if not is_leader() or not cache.synced:
            continue
        try:
            await collect_orphaned_claims(client, cache, claim_gvk)
            await collect_backend_resources(provisioner, cache, claim_gvk)
        except (ProvisionerError, ApiError, OSError, TimeoutError) as exc:
            # the cloud or the API server failed (a 5xx, a reset): one line, retried next
            # interval; anything else is a bug and keeps its traceback
            log.warning("garbage collection failed: %s", exc)
        except Exception:
            log.exception("garbage collection failed")
