"""NodeRequest → AKS agent pool: the facts gpu-provisioner established, as a pure function."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from azure.mgmt.containerservice.models import (
    AgentPool,
    AgentPoolManagedClusterAgentPoolProfileProperties,
)

from kaito.provisioner.azure.naming import pool_name
from kaito.provisioner.base import NodeRequest

MACHINE_TYPE_LABEL = "kaito.sh/machine-type"
AGENTPOOL_LABEL = "kubernetes.azure.com/agentpool"

# Azure tag names may not contain ``<>%&\?/``, so these are not Kubernetes-style keys.
TAG_MANAGED_BY = "kaito-managed-by"
TAG_REQUEST = "kaito-nodeclaim"
TAG_CREATED = "kaito-created"
TAG_ATTEMPT = "kaito-attempt"  # 1 for the first pool of a request, 2 after one failed, ...
TAG_OWNER_PREFIX = "kaito-"
MANAGED_BY = "kaito"

OS_DISK_MAX_GIB = 2048  # AKS limit for osDiskSizeGB
_OS_SKUS = {"ubuntu": "Ubuntu", "azurelinux": "AzureLinux"}
_TAINT_EFFECTS = {"NoSchedule", "PreferNoSchedule", "NoExecute"}
_TAG_NAME_BAD = re.compile(r"[<>%&\\?/]")


class InvalidRequest(ValueError):
    """The request cannot become an agent pool; the message names the field and the fix."""


@dataclass(frozen=True)
class PoolSpec:
    name: str
    body: AgentPool


def machine_type(vm_size: str) -> str:
    """``gpu`` for the N-series (the only Azure GPU family), else ``cpu``."""
    return "gpu" if vm_size.lower().startswith("standard_n") else "cpu"


def os_sku(node_image_family: str | None) -> str:
    if not node_image_family:
        return "Ubuntu"
    try:
        return _OS_SKUS[node_image_family.strip().lower()]
    except KeyError:
        raise InvalidRequest(
            f"node image family {node_image_family!r} is not supported; "
            "set kaito.sh/node-image-family to Ubuntu or AzureLinux"
        ) from None


def owner_tags(request: NodeRequest) -> dict[str, str]:
    tags = {
        TAG_MANAGED_BY: MANAGED_BY,
        TAG_REQUEST: request.name,
    }
    for key, value in request.owner.items():
        tags[TAG_OWNER_PREFIX + _TAG_NAME_BAD.sub("-", key)] = value
    return tags


def build_pool(request: NodeRequest, now: datetime | None = None, attempt: int = 1) -> PoolSpec:
    """The agent pool AKS should create for `request` (count 1, User mode, VMSS)."""
    if not request.instance_type.strip():
        raise InvalidRequest("the NodeClaim has no node.kubernetes.io/instance-type requirement")
    vm_size = request.instance_type.strip()
    if request.storage_gib is not None and not 0 < request.storage_gib <= OS_DISK_MAX_GIB:
        raise InvalidRequest(
            f"storage request {request.storage_gib}Gi is outside the AKS OS disk range "
            f"1-{OS_DISK_MAX_GIB}Gi; change resources.requests.storage"
        )
    taints = []
    for taint in request.taints:
        if taint.effect not in _TAINT_EFFECTS:
            raise InvalidRequest(
                f"taint {taint.key!r} has effect {taint.effect!r}; "
                f"use one of {', '.join(sorted(_TAINT_EFFECTS))}"
            )
        taints.append(f"{taint.key}={taint.value}:{taint.effect}")
    labels = dict(request.labels)
    labels[MACHINE_TYPE_LABEL] = machine_type(vm_size)
    created = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    properties = AgentPoolManagedClusterAgentPoolProfileProperties(
        count=1,
        vm_size=vm_size,
        mode="User",
        os_type="Linux",
        os_sku=os_sku(request.node_image_family),
        type_properties_type="VirtualMachineScaleSets",
        enable_auto_scaling=False,
        os_disk_size_gb=request.storage_gib,
        node_labels=labels,
        node_taints=taints or None,
        tags=owner_tags(request) | {TAG_CREATED: created, TAG_ATTEMPT: str(attempt)},
    )
    body = AgentPool(properties=properties)
    return PoolSpec(name=pool_name(request.name), body=body)
