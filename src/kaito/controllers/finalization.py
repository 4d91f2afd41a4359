"""A deleted Workspace lets go only after its NodeClaims are gone.

While it waits, its status says so (condition WorkspaceDeleting, as upstream sets it).

NodeClaims are cluster-scoped and carry no owner reference (a namespaced owner cannot own
them), so the API server's garbage collector never removes them: the Workspace finalizer
is what stands between a deleted Workspace and a leaked GPU node. The cache alone cannot
say "no claims left": a claim created moments before (its watch event not in yet, or the
claim watch reconnecting) is missing from it, so the API server is asked before the
finalizer goes. ``garbage.collect_orphaned_claims`` catches what escapes anyway.
"""

from __future__ import annotations

from kaito.api import WorkspaceBase
from kaito.api import constants as C
from kaito.controllers import objects as o
from kaito.controllers.common import WORKSPACE, WorkspaceSettings, remove_finalizer
from kaito.controllers.expectations import FinalWrites
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.objects import to_dict
from kaito.runtime.request import Result

CLAIMS_GONE_POLL_S = 1.0


class Finalizer:
    """Deletes a Workspace's claims, then removes its finalizer."""

    def __init__(self, client: Client, cache: Cache, settings: WorkspaceSettings) -> None:
        self.client = client
        self.cache = cache
        self.settings = settings
        self._released = FinalWrites()  # Workspaces whose finalizer we removed

    def released(self, ws: WorkspaceBase) -> bool:
        """Our finalizer came off this Workspace already; a cached copy showing it is stale."""
        return self._released.sent(ws.metadata.uid or "")

    async def finalize(self, ws: WorkspaceBase, owner: o.Owner) -> tuple[bool, Result | None]:
        """(released, result): released once the finalizer is off (or was never on)."""
        finalizers = list(ws.metadata.finalizers or [])
        if C.FINALIZER_WORKSPACE not in finalizers:
            return False, None
        claim_gvk = self.settings.claim_gvk
        owned = o.ownership_labels(owner)
        claims = [to_dict(c) for c in self.cache.list(claim_gvk, labels=owned)]
        if not claims:
            selector = ",".join(f"{k}={v}" for k, v in sorted(owned.items()))
            claims = [
                to_dict(c) for c in await self.client.list(claim_gvk, label_selector=selector)
            ]
        for claim in claims:
            if not claim["metadata"].get("deletionTimestamp"):
                await self.client.delete(
                    claim_gvk, None, claim["metadata"]["name"], ignore_not_found=True
                )
        if claims and self.settings.node_provisioner != "byo":
            return False, Result(requeue_after=CLAIMS_GONE_POLL_S)  # claim events also wake us
        # with node auto-provisioning off no controller of ours releases a claim made before
        # it was switched off: its deletion is asked for, not waited on (upstream's BYO
        # provisioner leaves such claims behind altogether)
        await remove_finalizer(
            self.client,
            WORKSPACE,
            ws.namespace,
            ws.name,
            finalizers=finalizers,
            finalizer=C.FINALIZER_WORKSPACE,
        )
        self._released.mark(ws.metadata.uid or "")
        return True, None
