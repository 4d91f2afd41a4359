"""The InferenceSet status computed from its replicas: counts, selector and the conditions."""

from __future__ import annotations

from typing import Any

from kaito.api.inferenceset import parse_inferenceset, template_hash
from kaito.api.v1beta1 import Workspace
from kaito.controllers.inferenceset_objects import serving_since
from kaito.controllers.inferenceset_status import desired_status

SET: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "InferenceSet",
    "metadata": {"name": "phi", "namespace": "t", "uid": "u", "generation": 3},
    "spec": {
        "replicas": 2,
        "nodeCountLimit": 1,
        "labelSelector": {"matchLabels": {"apps": "phi"}},
        "template": {"inference": {"preset": {"name": "phi-4-mini-instruct"}}},
    },
}


def replica(name: str, digest: str, ready: bool, deleting: bool = False) -> Workspace:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "t",
        "generation": 1,
        "annotations": {"inferenceset.kaito.sh/template-hash": digest},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    cond = {
        "type": "WorkspaceSucceeded",
        "status": "True" if ready else "False",
        "reason": "r",
        "message": "m",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    return Workspace.model_validate(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": meta,
            "resource": {"labelSelector": {}},
            "inference": {"preset": {"name": "x"}},
            "status": {"conditions": [cond]},
        }
    )


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def status_for(children: list[Workspace], **kw: Any) -> dict[str, Any]:
    iset = parse_inferenceset(SET)
    args: dict[str, Any] = {
        "digest": template_hash(iset),
        "allowed": 2,
        "blocked_by_nodes": 0,
        "per_replica": 1,
        "problem": None,
        "scaling": None,
    }
    return desired_status(iset, children, **(args | kw))


def test_counts_selector_and_ready() -> None:
    digest = template_hash(parse_inferenceset(SET))
    status = status_for(
        [
            replica("phi-0", digest, True),
            replica("phi-1", digest, True),
            replica("phi-2", "x", True, deleting=True),
        ]
    )
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (2, 2, 2)
    assert status["selector"] == "inferenceset.kaito.sh/created-by=phi"
    assert status["observedGeneration"] == 3
    ready = conditions(status)["InferenceSetReady"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "True",
        "inferencesetReady",
        "2/2 replicas ready",
    )


def test_not_ready_says_how_far_and_what_waits() -> None:
    digest = template_hash(parse_inferenceset(SET))
    status = status_for(
        [replica("phi-0", digest, True), replica("phi-1", "old", False)], blocked_by_nodes=1
    )
    cond = conditions(status)["InferenceSetReady"]
    assert cond["reason"] == "inferencesetNotReady"
    assert cond["message"] == (
        "1/2 replicas ready, 1 on the current template; 1 waiting for nodes to be released"
    )


def test_node_count_limit_and_refused_replicas_are_named() -> None:
    cond = conditions(status_for([], allowed=1))["InferenceSetReady"]
    assert cond["reason"] == "NodeCountLimitReached"
    assert "nodeCountLimit 1 allows 1 replicas of 1 node(s)" in cond["message"]
    cond = conditions(status_for([], problem="replica phi-0 was refused: no"))["InferenceSetReady"]
    assert (cond["reason"], cond["message"]) == ("ReplicaRejected", "replica phi-0 was refused: no")


def test_autoscaler_condition_comes_and_goes_with_the_annotations() -> None:
    status = status_for([], scaling=(False, "FailedGetPodsMetric", "no adapter"))
    assert conditions(status)["AutoscalerReady"]["reason"] == "FailedGetPodsMetric"
    later = dict(SET, status=status)
    iset = parse_inferenceset(later)
    again = desired_status(
        iset,
        [],
        digest=template_hash(iset),
        allowed=2,
        blocked_by_nodes=0,
        per_replica=1,
        problem=None,
        scaling=None,
    )
    assert "AutoscalerReady" not in conditions(again)


def test_a_set_serves_since_its_first_ready_replica_became_ready() -> None:
    digest = template_hash(parse_inferenceset(SET))
    assert serving_since([replica("phi-0", digest, False)]) is None
    since = serving_since([replica("phi-0", digest, True), replica("phi-1", digest, False)])
    assert since is not None and since.isoformat().startswith("2026-01-01T00:00:00")
    assert serving_since([replica("phi-0", digest, True, deleting=True)]) is None
