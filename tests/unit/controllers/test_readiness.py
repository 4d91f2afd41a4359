"""A Workspace is Ready once its pods of the StatefulSet's current revision are Ready.

The StatefulSet controller's ``readyReplicas`` trails the pods by seconds when many
StatefulSets change at once; the pods' own Ready (what the endpoints follow) is enough,
as long as they belong to the revision being rolled out.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from kaito.api import WorkspaceBase, parse_workspace, utcnow
from kaito.api.constants import ConditionType
from kaito.controllers.common import Facts
from kaito.controllers.workload import SCHEDULER_GRACE_S, Workload, current_ready_pods


def sts(generation: int, observed: int, revision: str, ready: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": "ws", "namespace": "ns", "generation": generation},
        "status": {
            "observedGeneration": observed,
            "updateRevision": revision,
            "currentRevision": "ws-old",
            "replicas": 2,
            "readyReplicas": ready,
            "updatedReplicas": ready,
        },
    }


def pod(index: int, revision: str, ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"ws-{index}",
        "namespace": "ns",
        "labels": {"controller-revision-hash": revision, "kaito.sh/workspace": "ws"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {"metadata": meta, "status": {"conditions": [condition]}}


def test_only_ready_pods_of_the_update_revision_count() -> None:
    pods = [pod(0, "ws-new"), pod(1, "ws-old"), pod(2, "ws-new", ready=False)]
    assert current_ready_pods(sts(2, 2, "ws-new"), pods) == 1
    assert current_ready_pods(sts(2, 2, "ws-new"), [pod(0, "ws-new", deleting=True)]) == 0


def test_nothing_counts_before_the_controller_has_seen_the_generation() -> None:
    # a rollout just started: updateRevision still names the revision being left
    assert current_ready_pods(sts(3, 2, "ws-old"), [pod(0, "ws-old"), pod(1, "ws-old")]) == 0
    assert current_ready_pods({}, [pod(0, "ws-old")]) == 0


class Cache:
    def __init__(self, statefulset: dict[str, Any] | None, pods: list[dict[str, Any]]) -> None:
        self.statefulset = statefulset
        self.pods = pods

    def get(self, *_: Any) -> dict[str, Any] | None:
        return self.statefulset

    def list(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        return self.pods


def workspace() -> WorkspaceBase:
    doc = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "ns", "uid": "u"},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    return cast(WorkspaceBase, parse_workspace(doc))


def readiness(statefulset: dict[str, Any] | None, pods: list[dict[str, Any]]) -> str:
    workload = Workload(
        cast(Any, Cache(statefulset, pods)), cast(Any, None), cast(Any, None), cast(Any, None)
    )
    facts = Facts()
    workload.readiness(workspace(), 2, facts)
    status, _, message = facts.conditions[ConditionType.INFERENCE_READY]
    return f"{status}: {message}"


def test_ready_from_the_pods_before_the_statefulset_status_says_so() -> None:
    pods = [pod(0, "ws-new"), pod(1, "ws-new")]
    assert readiness(sts(1, 1, "ws-new", ready=0), pods) == "True: 2/2 inference pod(s) ready"
    one = readiness(sts(1, 1, "ws-new", ready=0), pods[:1])
    assert one == "False: 1/2 inference pod(s) ready"


def test_the_statefulset_status_alone_still_makes_it_ready() -> None:
    assert readiness(sts(1, 1, "ws-new", ready=2), []).startswith("True")
    assert not readiness(None, [pod(0, "ws-new"), pod(1, "ws-new")]).startswith("True")


def unschedulable(index: int) -> dict[str, Any]:
    refused = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/40 nodes are available: 40 node(s) didn't match node affinity",
    }
    found = pod(index, "ws-new", ready=False)
    found["status"]["conditions"].append(refused)
    return found


def test_the_scheduler_s_verdict_from_before_the_nodes_is_not_shown_at_once() -> None:
    """A pod written ahead of its node was refused while no node matched: right after the
    node's Ready that verdict is stale (the scheduler retries), so the status does not flap
    to Unschedulable and back; after the grace it is shown."""
    workload = Workload(
        cast(Any, Cache(sts(1, 1, "ws-new"), [unschedulable(0), unschedulable(1)])),
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
    )
    fresh, old = Facts(), Facts()
    now = utcnow()
    workload.readiness(workspace(), 2, fresh, nodes_ready_at=now - dt.timedelta(seconds=2))
    assert fresh.conditions[ConditionType.INFERENCE_READY][1] != "Unschedulable"
    assert fresh.recheck_after is not None and 0 < fresh.recheck_after <= SCHEDULER_GRACE_S - 2
    workload.readiness(workspace(), 2, old, nodes_ready_at=now - dt.timedelta(minutes=1))
    assert old.conditions[ConditionType.INFERENCE_READY][1] == "Unschedulable"
    assert old.recheck_after is None
    unknown = Facts()  # nodes not ours, or their Ready time unknown: shown at once
    workload.readiness(workspace(), 2, unknown)
    assert unknown.conditions[ConditionType.INFERENCE_READY][1] == "Unschedulable"
