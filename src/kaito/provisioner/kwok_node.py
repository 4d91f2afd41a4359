"""The shape of a KWOK-managed Node that passes for an AKS GPU node.

Standard library only: ``hack/cluster add-node`` imports it before any virtual
environment exists, and the KWOK backend builds the same Node for a NodeClaim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

KWOK_MANAGED_LABEL = ("type", "kwok")  # what our kwok process selects nodes by
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
GPU_RESOURCE = "nvidia.com/gpu"


def agent_pool_name(node_name: str) -> str:
    """AKS agent pool names are at most 12 lowercase alphanumerics."""
    return "".join(ch for ch in node_name.lower() if ch.isalnum())[:12] or "pool"


def fake_gpu_node(
    name: str,
    instance_type: str,
    *,
    gpus: int,
    cpu: int,
    memory_gib: int,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, str]] = (),
    provider_id: str | None = None,
) -> dict[str, Any]:
    """A Node object (as a dict) with GPU capacity, ready to be created through the API.

    Nodes are the one kind whose status is accepted on create, so capacity travels with it
    and KWOK's node-initialize stage keeps it.

    The labels are those a kubelet registers, the deprecated beta os/arch pair included: the
    controller-manager's node lifecycle controller adds that pair to any node without it,
    one GET and one PATCH per node through the same client (20 requests/s at the stock
    profile) that lifts the not-ready taint, so a node registered without them waits twice as
    long for its pods to be schedulable.
    """
    all_labels = {
        KWOK_MANAGED_LABEL[0]: KWOK_MANAGED_LABEL[1],
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": instance_type,
        "beta.kubernetes.io/instance-type": instance_type,
        "kubernetes.azure.com/agentpool": agent_pool_name(name),
    }
    if gpus:
        all_labels |= {
            "accelerator": "nvidia",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.count": str(gpus),
        }
    all_labels |= dict(labels or {})
    capacity = {
        "cpu": str(cpu),
        "memory": f"{memory_gib}Gi",
        "pods": "110",
        "ephemeral-storage": "1Ti",
    }
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1]},
        },
        "spec": {
            "providerID": provider_id or f"kwok://{name}",
            "taints": [dict(t) for t in taints],
        },
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }
