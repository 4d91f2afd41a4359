"""The API models read and write real API objects without losing or inventing anything."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kaito.api import (
    Condition,
    Machine,
    NodeClaim,
    Workspace,
    WorkspaceV1Alpha1,
    constants,
    find_condition,
    parse_workspace,
    set_condition,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

# A Workspace as the API server returns it: server metadata, status, a field from a newer server.
SERVER_WORKSPACE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {
        "name": "workspace-phi-3-mini",
        "namespace": "default",
        "uid": "d8d7b1b6-f8a5-4f58-9cec-0b55abfd92ad",
        "resourceVersion": "233",
        "generation": 2,
        "creationTimestamp": "2026-01-02T03:04:05Z",
        "labels": {"team": "ml"},
        "annotations": {constants.ANNOTATION_WORKSPACE_HASH: "abc", "x": "y"},
        "finalizers": [constants.FINALIZER_WORKSPACE],
        "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1"}],
        "selfLink": "/unknown/to/us",
    },
    "resource": {
        "count": 1,
        "instanceType": "Standard_NC6s_v3",
        "labelSelector": {
            "matchLabels": {"apps": "phi-3"},
            "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}],
        },
        "preferredNodes": ["n1"],
    },
    "inference": {
        "preset": {
            "name": "phi-3-mini-4k-instruct",
            "accessMode": "public",
            "presetOptions": {"modelAccessSecret": "hf"},
        },
        "config": "my-config",
        "adapters": [
            {
                "source": {"name": "a1", "image": "r/a1:1", "imagePullSecrets": ["s"]},
                "strength": "0.5",
            },
            {
                "source": {
                    "name": "a2",
                    "volumeSource": {"persistentVolumeClaim": {"claimName": "c"}},
                }
            },
        ],
    },
    "status": {
        "workerNodes": ["n1"],
        "state": "Ready",
        "targetNodeCount": 1,
        "conditions": [
            {
                "type": "ResourceReady",
                "status": "True",
                "reason": "workspaceResourceStatusSuccess",
                "message": "ok",
                "lastTransitionTime": "2026-01-02T03:05:00Z",
                "observedGeneration": 2,
            }
        ],
        "performance": {
            "metrics": {"peakTokensPerMinute": {"value": "1200", "unit": "tokens/min"}}
        },
        "futureField": {"kept": True},
    },
}


def test_server_object_round_trips_exactly() -> None:
    ws = Workspace.from_dict(SERVER_WORKSPACE)
    assert ws.to_dict() == SERVER_WORKSPACE
    assert ws.inference is not None and ws.inference.adapters is not None
    assert ws.inference.adapters[0].source is not None
    assert ws.inference.adapters[0].source.image_pull_secrets == ["s"]
    assert ws.metadata.creation_timestamp == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse_and_round_trip(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    ws = parse_workspace(obj)
    expected = WorkspaceV1Alpha1 if obj["apiVersion"].endswith("v1alpha1") else Workspace
    assert type(ws) is expected
    assert ws.to_dict() == obj


def test_v1alpha1_and_v1beta1_share_one_shape() -> None:
    alpha = WorkspaceV1Alpha1.from_dict({**SERVER_WORKSPACE, "apiVersion": "kaito.sh/v1alpha1"})
    beta = Workspace.from_dict(alpha.to_dict() | {"apiVersion": "kaito.sh/v1beta1"})
    assert beta.to_dict() == SERVER_WORKSPACE


def test_wrong_version_is_rejected_by_the_pinned_model() -> None:
    with pytest.raises(ValidationError):
        WorkspaceV1Alpha1.from_dict(SERVER_WORKSPACE)


def test_condition_transition_time_moves_only_on_status_change() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    t1 = t0 + dt.timedelta(minutes=5)
    conds = set_condition(None, "InferenceReady", "False", "Pending", "waiting", now=t0)
    same = set_condition(conds, "InferenceReady", "False", "Pending", "still waiting", now=t1)
    cond = find_condition(same, "InferenceReady")
    assert cond is not None and cond.last_transition_time == t0 and cond.message == "still waiting"
    flipped = set_condition(same, "InferenceReady", "True", "Ready", "ok", now=t1)
    cond = find_condition(flipped, "InferenceReady")
    assert cond is not None and cond.last_transition_time == t1 and len(flipped) == 1


def test_condition_serialises_like_metav1() -> None:
    cond = Condition(
        type="Ready",
        status="True",
        reason="R",
        message="",
        last_transition_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    assert cond.to_dict() == {
        "type": "Ready",
        "status": "True",
        "reason": "R",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


NODECLAIM: dict[str, Any] = {
    "apiVersion": "karpenter.sh/v1",
    "kind": "NodeClaim",
    "metadata": {
        "name": "ws0123abcde",
        "labels": {
            constants.LABEL_KARPENTER_NODEPOOL: constants.KAITO_NODEPOOL,
            constants.LABEL_WORKSPACE_NAME: "w",
            constants.LABEL_WORKSPACE_NAMESPACE: "default",
        },
        "annotations": {
            constants.ANNOTATION_KARPENTER_DO_NOT_DISRUPT: "true",
            constants.ANNOTATION_NODE_IMAGE_FAMILY: "ubuntu",
        },
    },
    "spec": {
        "nodeClassRef": {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"},
        "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        "startupTaints": [{"key": "init", "effect": "NoExecute"}],
        "requirements": [
            {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]},
            {
                "key": "node.kubernetes.io/instance-type",
                "operator": "In",
                "values": ["Standard_NC6s_v3"],
            },
            {
                "key": "karpenter.k8s.aws/instance-gpu-count",
                "operator": "Gt",
                "values": ["0"],
                "minValues": 1,
            },
        ],
        "resources": {"requests": {"storage": "1024Gi"}},
        "expireAfter": "Never",
    },
    "status": {
        "providerID": "azure:///subscriptions/x/vm/0",
        "imageID": "img",
        "nodeName": "aks-ws0123abcde-0",
        "capacity": {"nvidia.com/gpu": "1", "cpu": "6", "memory": "112Gi"},
        "allocatable": {"nvidia.com/gpu": "1"},
        "conditions": [
            {
                "type": t,
                "status": "True",
                "reason": t,
                "message": "",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
            for t in ("Launched", "Registered", "Initialized", "Ready")
        ],
    },
}


def test_nodeclaim_round_trips() -> None:
    claim = NodeClaim.from_dict(NODECLAIM)
    assert claim.to_dict() == NODECLAIM
    assert claim.status is not None and claim.status.provider_id == "azure:///subscriptions/x/vm/0"
    assert claim.spec.requirements[2].min_values == 1
    ready = find_condition(claim.status.conditions, constants.NodeClaimConditionType.READY)
    assert ready is not None and ready.status == "True"


def test_quantities_accept_integers() -> None:
    obj = {**NODECLAIM, "status": {"capacity": {"nvidia.com/gpu": 8}}}
    claim = NodeClaim.from_dict(obj)
    assert claim.status is not None and claim.status.capacity == {"nvidia.com/gpu": "8"}


def test_machine_round_trips() -> None:
    machine = {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": {
            "name": "ws0123abcde",
            "labels": {constants.LABEL_KARPENTER_PROVISIONER_NAME: "default"},
        },
        "spec": {
            "machineTemplateRef": {"name": "default"},
            "requirements": [
                {"key": constants.LABEL_MACHINE_TYPE, "operator": "In", "values": ["gpu"]},
                {"key": constants.LABEL_ARCH, "operator": "In", "values": ["amd64"]},
            ],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "resources": {"requests": {"storage": "120Gi"}},
        },
        "status": {
            "nodeName": "n",
            "providerID": "p",
            "conditions": [{"type": "MachineLaunched", "status": "True", "severity": "Info"}],
        },
    }
    assert Machine.from_dict(machine).to_dict() == machine
