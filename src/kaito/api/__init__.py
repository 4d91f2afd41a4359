"""The kaito.sh and karpenter.sh API types as pydantic models (pure, no I/O).

``Workspace`` is the storage version (v1beta1); ``WorkspaceV1Alpha1`` has the same fields.
Use :func:`parse_workspace` to read an object of either version.
"""

from __future__ import annotations

from typing import Any

from kaito.api import constants
from kaito.api.karpenter import (
    Machine,
    MachineCondition,
    MachineSpec,
    MachineStatus,
    MachineTemplateRef,
    NodeClaim,
    NodeClaimSpec,
    NodeClaimStatus,
    NodeClassReference,
    NodeSelectorRequirementWithMinValues,
    ResourceRequirements,
)
from kaito.api.meta import (
    Condition,
    KubeModel,
    LabelSelector,
    LabelSelectorRequirement,
    NodeSelectorRequirement,
    ObjectMeta,
    OwnerReference,
    Taint,
    find_condition,
    set_condition,
    utcnow,
)
from kaito.api.v1alpha1 import Workspace as WorkspaceV1Alpha1
from kaito.api.v1beta1 import Workspace
from kaito.api.workspace import (
    AdapterSpec,
    DataDestination,
    DataSource,
    InferenceSpec,
    Metric,
    PartitionSpec,
    Performance,
    PresetOptions,
    PresetSpec,
    ResourceSpec,
    TuningSpec,
    WorkspaceBase,
    WorkspaceStatus,
)


def parse_workspace(obj: dict[str, Any]) -> WorkspaceBase:
    """Parse a Workspace of any served version (the shapes are identical)."""
    if obj.get("apiVersion") == WorkspaceV1Alpha1.model_fields["api_version"].default:
        return WorkspaceV1Alpha1.model_validate(obj)
    return Workspace.model_validate(obj)


__all__ = [
    "AdapterSpec",
    "Condition",
    "DataDestination",
    "DataSource",
    "InferenceSpec",
    "KubeModel",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Machine",
    "MachineCondition",
    "MachineSpec",
    "MachineStatus",
    "MachineTemplateRef",
    "Metric",
    "NodeClaim",
    "NodeClaimSpec",
    "NodeClaimStatus",
    "NodeClassReference",
    "NodeSelectorRequirement",
    "NodeSelectorRequirementWithMinValues",
    "ObjectMeta",
    "OwnerReference",
    "PartitionSpec",
    "Performance",
    "PresetOptions",
    "PresetSpec",
    "ResourceRequirements",
    "ResourceSpec",
    "Taint",
    "TuningSpec",
    "Workspace",
    "WorkspaceBase",
    "WorkspaceStatus",
    "WorkspaceV1Alpha1",
    "constants",
    "find_condition",
    "parse_workspace",
    "set_condition",
    "utcnow",
]
