"""What an InferenceSet owns and reads, built and judged as plain data (pure functions).

The Service ``<set>`` normally selects the leader pod (pod index 0) of every replica, so the
endpoints controller spreads requests over the ready replicas; a scale-to-zero set's Service is
an ExternalName for the activator (:mod:`kaito.controllers.activator`) instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from kaito.api import WorkspaceBase, find_condition
from kaito.api import constants as C
from kaito.api.inferenceset import InferenceSet, owner_reference
from kaito.controllers.objects import POD_INDEX_LABEL

SERVING_PORT = 5000


def selector(set_name: str) -> str:
    """The scale subresource's selector: every pod of every replica."""
    return f"{C.LABEL_INFERENCESET_CREATED_BY}={set_name}"


def service(iset: InferenceSet, activator_host: str | None = None) -> dict[str, Any]:
    """``<set>``: port 80 → 5000 on the leader pod of each replica, ready pods only; or, with
    `activator_host` (a scale-to-zero set), an ExternalName for the activator's Service."""
    annotations = (iset.spec.template.metadata or {}).get("annotations") or {}
    kind = "LoadBalancer" if annotations.get(C.ANNOTATION_ENABLE_LB) == "True" else "ClusterIP"
    spec: dict[str, Any] = {
        "type": kind,
        "selector": {C.LABEL_INFERENCESET_CREATED_BY: iset.name, POD_INDEX_LABEL: "0"},
        "ports": [{"name": "http", "port": 80, "targetPort": SERVING_PORT, "protocol": "TCP"}],
    }
    if activator_host:
        spec = {
            "type": "ExternalName",
            "externalName": activator_host,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": iset.name,
            "namespace": iset.namespace,
            "labels": {C.LABEL_INFERENCESET_CREATED_BY: iset.name},
            "ownerReferences": [owner_reference(iset)],
        },
        "spec": spec,
    }


def replica_ready(ws: WorkspaceBase) -> bool:
    """WorkspaceSucceeded=True, computed for the replica's current spec."""
    cond = find_condition(ws.status.conditions if ws.status else None, "WorkspaceSucceeded")
    if cond is None or cond.status != "True":
        return False
    generation = ws.metadata.generation
    return (
        cond.observed_generation is None
        or generation is None
        or (cond.observed_generation >= generation)
    )


def patchable(current: WorkspaceBase, desired: Mapping[str, Any]) -> bool:
    """Can the replica take the new template in place (the Workspace API allows the change)?

    A Workspace cannot change its instance type, node selector, partition or model, nor
    switch between a preset and a pod template; those changes replace the replica.
    """
    resource = current.resource.to_dict()
    want = desired["resource"]
    for key in ("instanceType", "labelSelector", "partition"):
        if resource.get(key) != want.get(key):
            return False
    inference = current.inference.to_dict() if current.inference else {}
    new = desired["inference"]
    if ("preset" in inference) != ("preset" in new):
        return False
    old_preset = (inference.get("preset") or {}).get("name")
    return old_preset == (new.get("preset") or {}).get("name")


def serving_since(children: Iterable[WorkspaceBase]) -> dt.datetime | None:
    """When the set last went from no ready replica to one: the earliest ready replica's
    WorkspaceSucceeded transition (None while no replica is ready)."""
    times = []
    for ws in children:
        if ws.metadata.deletion_timestamp is None and replica_ready(ws):
            cond = find_condition(ws.status.conditions if ws.status else None, "WorkspaceSucceeded")
            if cond is not None:
                times.append(cond.last_transition_time)
    return min(times) if times else None
