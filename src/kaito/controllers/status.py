"""A Workspace's status, folded from what one reconcile found out and written only on change."""

from __future__ import annotations

import contextlib

from kaito.api import WorkspaceBase, set_condition, utcnow
from kaito.api.constants import ConditionType, Reason, WorkspaceState
from kaito.controllers.common import WORKSPACE, Facts
from kaito.runtime.client import Client
from kaito.runtime.errors import NotFound

STATUS_SETTLE_S = 3.0
# reasons that mean "on its way", not "something is wrong"
PROGRESS_REASONS = frozenset(
    {
        Reason.WORKSPACE_PENDING,
        Reason.INFERENCE_STATUS_PENDING,
        Reason.INFERENCE_STATUS_SUCCESS,
        Reason.NODE_CLAIM_NOT_READY,
        Reason.NODE_CLAIMS_READY,
        Reason.NODE_NOT_READY,
        Reason.NODES_READY,
        Reason.RESOURCE_STATUS_SUCCESS,
        Reason.TUNING_JOB_PENDING,
        Reason.TUNING_JOB_STARTED,
        "Launching",
        "AwaitingLaunch",
        "AwaitingNode",
        "AwaitingRegistration",
    }
)


class StatusWriter:
    """Writes Workspace status (the workspace reconciler's last step)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def write(self, ws: WorkspaceBase, facts: Facts) -> float | None:
        """Write the status when it changed; returns seconds to wait when it held a write back.

        A Workspace that is moving fast (KWOK nodes, a cached model) would otherwise pass
        through two or three "still pending" statuses within its first seconds; those are
        held back for STATUS_SETTLE_S after creation, so the first status a user sees is
        often the final one.  Failures are written at once.
        """
        current = ws.status
        conditions = list(current.conditions or []) if current else []
        for type_, (status, reason, message) in facts.conditions.items():
            conditions = set_condition(
                conditions,
                type_,
                status,  # type: ignore[arg-type]
                reason,
                message,
                observed_generation=ws.metadata.generation,
            )
        by_type = {c.type: c.status for c in conditions}
        if facts.state is not None:
            state: str = facts.state
        elif by_type.get(ConditionType.WORKSPACE_SUCCEEDED) == "True":
            state = WorkspaceState.READY
        elif current is not None and current.state in (
            WorkspaceState.READY,
            WorkspaceState.NOT_READY,
        ):
            state = WorkspaceState.NOT_READY
        else:
            state = WorkspaceState.PENDING
        new = {
            "conditions": [
                c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions
            ],
            "state": str(state),
            "workerNodes": facts.worker_nodes or None,
            "targetNodeCount": facts.target
            if facts.target is not None
            else (current.target_node_count if current else None),
        }
        new = {k: v for k, v in new.items() if v is not None}
        old = current.model_dump(mode="json", by_alias=True, exclude_none=True) if current else {}
        old_cmp = {k: old.get(k) for k in new}
        if old_cmp == new and set(old) <= set(new) | {"performance"}:
            return None
        if state == WorkspaceState.PENDING and all(
            reason in PROGRESS_REASONS for _, reason, _ in facts.conditions.values()
        ):
            created = ws.metadata.creation_timestamp
            age = (utcnow() - created).total_seconds() if created else STATUS_SETTLE_S
            if 0 <= age < STATUS_SETTLE_S:
                return STATUS_SETTLE_S - age
        # Status belongs to this controller alone and is recomputed in full each time, so it
        # is written without a resourceVersion precondition (no 409 after our own metadata
        # patch); a reconcile from a stale cache is corrected by the event that follows.
        with contextlib.suppress(NotFound):
            await self.client.patch_status(WORKSPACE, ws.namespace, ws.name, {"status": new})
        return None
