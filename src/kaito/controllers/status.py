"""A Workspace's status, folded from what one reconcile found out and written only on change.

"Changed" is judged against the newest status we know of: the cached Workspace's, unless
the cache has not yet shown our own last write. Comparing with the cache alone loses a
write: a reconcile that writes NotReady, then one that computes Ready while the cache
(its watch behind) still shows the Ready from before, would skip its write; and the
watch event of the NotReady, a status-only change, wakes nobody (the Workspace watch
passes spec, label and annotation changes only), so the Workspace would stay NotReady.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from kaito.api import Condition, WorkspaceBase, set_condition, utcnow
from kaito.api.constants import ConditionType, Reason, WorkspaceState
from kaito.controllers.common import WORKSPACE, Facts
from kaito.runtime.client import Client
from kaito.runtime.errors import NotFound
from kaito.runtime.objects import meta_of

STATUS_SETTLE_S = 3.0
# A status that differs from the last one written only in condition messages (the same
# status and reason everywhere) waits until this long after that write. The scheduler
# rewrites a pending pod's Unschedulable message on every attempt ("49 node(s) had
# untolerated taint(s)", then 48, ...); at N=100 on a stock cluster each attempt cost a
# status patch, 6.3 per Workspace in all.
MESSAGE_REFRESH_S = 10.0
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
# the status fields this controller owns; ``performance`` is written only with a new result
OWNED_FIELDS = ("conditions", "state", "workerNodes", "targetNodeCount")
ERROR_SUFFIX = " (last reconcile error: {})"
_ERROR_SUFFIX = re.compile(r" \(last reconcile error: .*\)$", re.DOTALL)


def with_error(message: str, error: str | None) -> str:
    """A condition message with the last reconcile error after it, as upstream shows it (an
    earlier error's suffix is dropped: a successful reconcile clears it)."""
    message = _ERROR_SUFFIX.sub("", message)
    return message + ERROR_SUFFIX.format(error) if error else message


def _not_older(resource_version: str | None, than: str) -> bool:
    """Whether ``resource_version`` is at least ``than``; False when that cannot be told
    (resourceVersions are opaque; etcd's are increasing integers, which is all we use)."""
    try:
        return int(resource_version or "") >= int(than)
    except ValueError:
        return resource_version == than


class StatusWriter:
    """Writes Workspace status (the workspace reconciler's last step)."""

    def __init__(self, client: Client, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        # uid -> (resourceVersion our last write made, the status it wrote), until the
        # cache shows that write
        self._written: dict[str, tuple[str, dict[str, Any]]] = {}
        self._written_at: dict[str, float] = {}  # uid -> when this process last wrote it

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)
        self._written_at.pop(uid, None)

    def _baseline(self, ws: WorkspaceBase, cached: dict[str, Any]) -> dict[str, Any]:
        """The newest status known: the cached one, or our last write if the cache lags."""
        uid = ws.metadata.uid or ws.name
        written = self._written.get(uid)
        if written is None:
            return cached
        version, status = written
        if status == cached or _not_older(ws.metadata.resource_version, version):
            del self._written[uid]  # the cache has caught up
            return cached
        return status

    async def write(self, ws: WorkspaceBase, facts: Facts) -> float | None:
        """Write the status when it changed; returns seconds to wait when it held a write back.

        A Workspace that is moving fast (KWOK nodes, a cached model) would otherwise pass
        through two or three "still pending" statuses within its first seconds; those are
        held back for STATUS_SETTLE_S after creation, so the first status a user sees is
        often the final one.  Failures are written at once.
        """
        # Conditions not set by this reconcile are carried over from the newest status known,
        # not from the cache alone: a condition set once (the benchmark's) would otherwise be
        # dropped by the next write made while the cache still lags the write that set it.
        owned: tuple[str, ...] = OWNED_FIELDS
        if facts.performance is not None:  # written when a benchmark result was read
            owned = (*OWNED_FIELDS, "performance")
        current = ws.status
        old = current.model_dump(mode="json", by_alias=True, exclude_none=True) if current else {}
        known = self._baseline(ws, {k: old[k] for k in owned if k in old})
        conditions = [Condition.model_validate(c) for c in known.get("conditions") or ()]
        for type_, (status, reason, message) in facts.conditions.items():
            conditions = set_condition(
                conditions,
                type_,
                status,  # type: ignore[arg-type]
                reason,
                message,
                observed_generation=ws.metadata.generation,
            )
        conditions = [
            c.model_copy(update={"message": with_error(c.message or "", facts.error)})
            if facts.error or _ERROR_SUFFIX.search(c.message or "")
            else c
            for c in conditions
        ]
        by_type = {c.type: c.status for c in conditions}
        if facts.state is not None:
            state: str = facts.state
        elif by_type.get(ConditionType.WORKSPACE_SUCCEEDED) == "True":
            state = WorkspaceState.READY
        elif known.get("state") in (WorkspaceState.READY, WorkspaceState.NOT_READY):
            state = WorkspaceState.NOT_READY
        else:
            state = WorkspaceState.PENDING
        desired: dict[str, Any] = {
            "conditions": [
                c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions
            ],
            "state": str(state),
            "workerNodes": facts.worker_nodes or None,
            "targetNodeCount": facts.target
            if facts.target is not None
            else known.get("targetNodeCount"),
        }
        if facts.performance is not None:
            desired["performance"] = facts.performance
        wanted = {k: v for k, v in desired.items() if v is not None}
        if {k: known[k] for k in owned if k in known} == wanted:
            return None
        if (
            state == WorkspaceState.PENDING
            and not facts.error
            and all(reason in PROGRESS_REASONS for _, reason, _ in facts.conditions.values())
        ):
            created = ws.metadata.creation_timestamp
            age = (utcnow() - created).total_seconds() if created else STATUS_SETTLE_S
            if 0 <= age < STATUS_SETTLE_S:
                return STATUS_SETTLE_S - age
        uid = ws.metadata.uid or ws.name
        if not facts.error and _only_messages_differ(known, wanted):
            since = self.clock() - self._written_at.get(uid, -MESSAGE_REFRESH_S)
            if since < MESSAGE_REFRESH_S:
                return MESSAGE_REFRESH_S - since
        # Status belongs to this controller alone and is recomputed in full each time, so it
        # is written without a resourceVersion precondition (no 409 after our own metadata
        # patch). A merge patch deletes the fields sent as null (workerNodes once no node
        # is ready); leaving them out would keep the old value.
        try:
            result = await self.client.patch_status(
                WORKSPACE, ws.namespace, ws.name, {"status": desired}
            )
        except NotFound:
            return None
        version = str(meta_of(result).get("resourceVersion") or "")
        self._written[uid] = (version, wanted)
        self._written_at[uid] = self.clock()
        return None


def _only_messages_differ(known: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Both statuses hold the same conditions with the same status and reason (so the same
    transition times), the same state and nodes; only some condition's message differs."""
    if any(known.get(k) != wanted.get(k) for k in OWNED_FIELDS if k != "conditions"):
        return False
    if "performance" in wanted and known.get("performance") != wanted["performance"]:
        return False

    def without_messages(status: dict[str, Any]) -> list[dict[str, Any]]:
        conditions = status.get("conditions") or ()
        return [{k: v for k, v in c.items() if k != "message"} for c in conditions]

    return without_messages(known) == without_messages(wanted)
