"""Karpenter's node requests: karpenter.sh/v1 NodeClaim and the legacy v1alpha5 Machine.

The schema follows Karpenter's own, so the objects our machine controller reconciles could be
acted on by a real Karpenter or gpu-provisioner.  Both kinds are cluster-scoped.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from kaito.api.meta import (
    Condition,
    KubeModel,
    NodeSelectorRequirement,
    ObjectMeta,
    ResourceList,
    Schemaless,
    Taint,
)

DURATION_PATTERN = r"^(([0-9]+(s|m|h))+|Never)$"


class NodeSelectorRequirementWithMinValues(NodeSelectorRequirement):
    """A node requirement, optionally asking for a minimum number of distinct values."""

    min_values: int | None = Field(default=None, ge=1, le=50)
    """At least this many distinct values of the key must remain schedulable."""


class NodeClassReference(KubeModel):
    """Points at the provider-specific node class (for Kaito: kaito.sh/KaitoNodeClass default)."""

    group: str = Field(min_length=1, max_length=253)
    """API group of the node class."""
    kind: str = Field(min_length=1, max_length=63)
    """Kind of the node class."""
    name: str = Field(min_length=1, max_length=253)
    """Name of the node class."""


class ResourceRequirements(KubeModel):
    """Minimum resources the node must offer."""

    requests: ResourceList | None = None
    """Resource name to quantity, e.g. storage: 1024Gi."""


class NodeClaimSpec(KubeModel):
    """What node is wanted; immutable once created, as in Karpenter."""

    taints: list[Taint] | None = None
    """Taints the node is created with."""
    startup_taints: list[Taint] | None = None
    """Taints expected to be removed by a daemon once the node is initialised."""
    requirements: list[NodeSelectorRequirementWithMinValues] = Field(max_length=100)
    """Node-label requirements: instance type, OS, capacity type, ..."""
    resources: ResourceRequirements | None = None
    """Resources the node must have (e.g. OS disk storage)."""
    node_class_ref: NodeClassReference
    """The provider node class to launch with."""
    expire_after: str | None = Field(
        default=None, pattern=DURATION_PATTERN, json_schema_extra={"default": "720h"}
    )
    """Lifetime after which the node is replaced, e.g. 720h, or Never."""
    termination_grace_period: str | None = Field(default=None, pattern=r"^([0-9]+(s|m|h))+$")
    """Longest time draining may take before the node is forcibly removed."""


class NodeClaimStatus(KubeModel):
    """Observed state of the node request."""

    node_name: str | None = None
    """Name of the Node that registered for this claim."""
    provider_id: str | None = Field(default=None, alias="providerID")
    """Cloud provider id of the instance."""
    image_id: str | None = Field(default=None, alias="imageID")
    """Image the instance booted from."""
    capacity: ResourceList | None = None
    """Resources of the instance."""
    allocatable: ResourceList | None = None
    """Resources schedulable on the instance."""
    conditions: list[Condition] | None = None
    """Launched, Registered, Initialized, Ready (and provider-specific ones)."""
    last_pod_event_time: dt.datetime | None = None
    """Last time a pod was scheduled or removed on the node."""


class NodeClaim(KubeModel):
    """A request for one node, fulfilled by a cloud provider (Karpenter's NodeClaim)."""

    api_version: Literal["karpenter.sh/v1"] = "karpenter.sh/v1"
    """karpenter.sh/v1."""
    kind: Literal["NodeClaim"] = "NodeClaim"
    """Kind: NodeClaim."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: NodeClaimSpec = Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec is immutable"}
            ]
        }
    )
    """The node wanted."""
    status: NodeClaimStatus | None = None
    """Observed state."""


class MachineTemplateRef(KubeModel):
    """Points at the provider template of a v1alpha5 Machine."""

    api_version: str | None = None
    """API version of the template."""
    kind: str | None = None
    """Kind of the template."""
    name: str
    """Name of the template."""


class MachineCondition(KubeModel):
    """A knative-style condition as v1alpha5 Machines carry them."""

    model_config: ClassVar[ConfigDict] = ConfigDict()

    type: str
    """Condition type, e.g. MachineLaunched."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    severity: str | None = None
    """Error, Warning or Info (empty means Error)."""
    last_transition_time: dt.datetime | None = None
    """When the status last changed."""
    reason: str | None = None
    """Machine-readable reason."""
    message: str | None = None
    """Human-readable details."""


class MachineSpec(KubeModel):
    """What node is wanted (v1alpha5)."""

    taints: list[Taint] | None = None
    """Taints the node is created with."""
    startup_taints: list[Taint] | None = None
    """Taints removed by a daemon once the node is initialised."""
    requirements: list[NodeSelectorRequirement] | None = Field(default=None, max_length=100)
    """Node-label requirements: instance type, provisioner name, machine type, ..."""
    resources: ResourceRequirements | None = None
    """Resources the node must have."""
    kubelet: Schemaless | None = None
    """Kubelet settings (kept verbatim)."""
    machine_template_ref: MachineTemplateRef | None = None
    """Provider template to launch with."""


class MachineStatus(KubeModel):
    """Observed state of a v1alpha5 Machine."""

    node_name: str | None = None
    """Name of the Node that registered for this machine."""
    provider_id: str | None = Field(default=None, alias="providerID")
    """Cloud provider id of the instance."""
    capacity: ResourceList | None = None
    """Resources of the instance."""
    allocatable: ResourceList | None = None
    """Resources schedulable on the instance."""
    conditions: list[MachineCondition] | None = None
    """MachineLaunched, MachineRegistered, MachineInitialized, Ready."""


class Machine(KubeModel):
    """Legacy Karpenter node request (karpenter.sh/v1alpha5), watched by old gpu-provisioners."""

    api_version: Literal["karpenter.sh/v1alpha5"] = "karpenter.sh/v1alpha5"
    """karpenter.sh/v1alpha5."""
    kind: Literal["Machine"] = "Machine"
    """Kind: Machine."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: MachineSpec = Field(default_factory=MachineSpec)
    """The node wanted."""
    status: MachineStatus | None = None
    """Observed state."""
