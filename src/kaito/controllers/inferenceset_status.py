"""The status an InferenceSet should have, computed from its replicas (a pure function).

``InferenceSetReady`` says why a set is not ready (a replica the API refused, nodeCountLimit,
replicas still starting or rolling), ``AutoscalerReady`` what its HPA does or why it cannot;
the counts feed the scale subresource (``replicas``, ``selector``) and the printer columns.
"""

from __future__ import annotations

from typing import Any

from kaito.api import WorkspaceBase, set_condition
from kaito.api import constants as C
from kaito.api.inferenceset import InferenceSet, desired_replicas
from kaito.controllers.inferenceset_objects import replica_ready, selector


def desired_status(
    iset: InferenceSet,
    children: list[WorkspaceBase],
    *,
    digest: str,
    allowed: int,
    blocked_by_nodes: int,
    per_replica: int,
    problem: str | None,
    scaling: tuple[bool, str, str] | None,
) -> dict[str, Any]:
    """The wire-form status; conditions keep their transition time while unchanged."""
    live = [ws for ws in children if ws.metadata.deletion_timestamp is None]
    ready = sum(replica_ready(ws) for ws in live)
    updated = sum(
        (ws.metadata.annotations or {}).get(C.ANNOTATION_INFERENCESET_TEMPLATE_HASH) == digest
        for ws in live
    )
    desired = desired_replicas(iset)
    current = iset.status
    conditions = list(current.conditions or []) if current else []
    generation = iset.metadata.generation
    if problem:
        ok, reason, message = False, "ReplicaRejected", problem
    elif allowed < desired:
        ok, reason = False, "NodeCountLimitReached"
        message = (
            f"{ready}/{desired} replicas ready; nodeCountLimit "
            f"{iset.spec.node_count_limit} allows {allowed} replicas of "
            f"{per_replica} node(s); raise nodeCountLimit or lower replicas"
        )
    elif ready >= desired and updated == len(live) == desired:
        ok, reason, message = True, "inferencesetReady", f"{ready}/{desired} replicas ready"
    else:
        ok, reason = False, "inferencesetNotReady"
        message = f"{ready}/{desired} replicas ready, {updated} on the current template"
        if blocked_by_nodes:
            message += f"; {blocked_by_nodes} waiting for nodes to be released"
    conditions = set_condition(
        conditions,
        C.ConditionType.INFERENCESET_READY,
        "True" if ok else "False",
        reason,
        message,
        observed_generation=generation,
    )
    if scaling is not None:
        conditions = set_condition(
            conditions,
            C.ConditionType.AUTOSCALER_READY,
            "True" if scaling[0] else "False",
            scaling[1],
            scaling[2][:32768],
            observed_generation=generation,
        )
    else:
        conditions = [c for c in conditions if c.type != C.ConditionType.AUTOSCALER_READY]
    new: dict[str, Any] = {
        "replicas": len(live),
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "selector": selector(iset.name),
        "observedGeneration": generation,
        "conditions": [
            c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions
        ],
    }
    return new
