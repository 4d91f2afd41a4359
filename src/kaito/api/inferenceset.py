"""The kaito.sh InferenceSet: `replicas` Workspaces made from one template, scalable by an HPA.

Upstream Kaito (v0.12) serves both kaito.sh/v1alpha1 and kaito.sh/v1beta1 (storage) with
conversion None; the shapes differ only in ``spec.template.resource.partition`` (v1beta1).  The
``scale`` subresource maps ``.spec.replicas``/``.status.replicas``/``.status.selector``, so a
HorizontalPodAutoscaler (or ``kubectl scale``) drives the replica count.  Structural rules are
CEL in the CRD; rules that need the model catalog run in the webhook against the Workspace an
InferenceSet would create (:func:`kaito.api.inferenceset.child_workspace`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, WithJsonSchema

from kaito.api import constants as C
from kaito.api.meta import Condition, KubeModel, LabelSelector, ObjectMeta, Schemaless
from kaito.api.workspace import InferenceSpec, PartitionSpec, Performance, _rule, _rules

MAX_NAME = 58
"""Children are named ``<set>-<ordinal>`` and a Workspace name is at most 63 characters."""
DEFAULT_UPDATE_STRATEGY: dict[str, Any] = {
    "type": "RollingUpdate",
    "rollingUpdate": {"maxUnavailable": 1},
}


class InferenceSetResourceSpec(KubeModel):
    """The nodes of every replica (v1alpha1: the instance type only)."""

    instance_type: str | None = Field(default=None, max_length=256)
    """GPU VM size each replica gets; required with node auto-provisioning, empty for BYO nodes."""


class InferenceSetResourceSpecV1Beta1(InferenceSetResourceSpec):
    """The nodes of every replica: instance type, and GPU partitioning on BYO nodes."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        json_schema_extra=_rules(
            _rule(
                "has(self.partition) == has(oldSelf.partition) && "
                "(!has(self.partition) || self.partition == oldSelf.partition)",
                "template.resource.partition is immutable; create a new InferenceSet to change "
                "how GPUs are partitioned",
                field_path=".partition",
            )
        )
    )

    partition: PartitionSpec | None = None
    """GPU partition (MIG slice or accelerator share) each replica runs on (BYO nodes)."""


class _TemplateBase(KubeModel):
    metadata: Schemaless | None = None
    """Labels and annotations every replica Workspace gets (kept as written)."""
    inference: InferenceSpec
    """What every replica serves; the same fields as a Workspace's inference."""


class InferenceSetTemplate(_TemplateBase):
    """A Workspace without its name and node selector: what each replica is made from."""

    resource: InferenceSetResourceSpec | None = None
    """Nodes of each replica."""


class InferenceSetTemplateV1Beta1(_TemplateBase):
    """A Workspace without its name and node selector: what each replica is made from."""

    resource: InferenceSetResourceSpecV1Beta1 | None = None
    """Nodes of each replica."""


class MaintenanceWindow(KubeModel):
    """When automatic base-image upgrades may start (5-field cron, UTC)."""

    schedule: str = Field(min_length=1, max_length=128)
    """Cron expression of when the window opens, e.g. "0 2 * * 6"."""
    duration: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$",
        json_schema_extra={"default": "4h"},
    )
    """How long the window stays open after each tick, e.g. 4h."""


class AutoUpgradePolicy(KubeModel):
    """Upstream's automatic base-image upgrade settings (accepted; see docs/inferenceset.md)."""

    enabled: bool | None = Field(default=None, json_schema_extra={"default": False})
    """Upgrade replicas when the operator ships a newer base image."""
    strategy: Literal["InPlace", "Surge"] | None = Field(
        default=None, json_schema_extra={"default": "InPlace"}
    )
    """InPlace rolls each replica's pods; Surge adds a new replica before removing an old one."""
    maintenance_window: MaintenanceWindow | None = None
    """Restricts when upgrades start; any time when absent."""


IntOrString = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True}),
]
_KEEP_UNKNOWN: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


class RollingUpdate(KubeModel):
    """Rolling update settings (a StatefulSet's; other keys are kept as written)."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        json_schema_extra={
            **_KEEP_UNKNOWN,
            **_rules(
                _rule(
                    "!has(self.maxUnavailable) || (type(self.maxUnavailable) == int ? "
                    "self.maxUnavailable >= 1 : "
                    "string(self.maxUnavailable).matches('^([1-9][0-9]?|100)%$'))",
                    'maxUnavailable must be a whole number >= 1 or a percentage such as "25%"',
                    field_path=".maxUnavailable",
                )
            ),
        }
    )

    max_unavailable: IntOrString | None = None
    """Replicas that may be unready while the template rolls out: a count or a percentage."""


class UpdateStrategy(KubeModel):
    """How replicas move to a changed template (upstream: a StatefulSetUpdateStrategy)."""

    model_config: ClassVar[ConfigDict] = ConfigDict(json_schema_extra=_KEEP_UNKNOWN)

    type: Literal["RollingUpdate", "OnDelete"] | None = None
    """RollingUpdate replaces or patches replicas one step at a time; OnDelete leaves them."""
    rolling_update: RollingUpdate | None = None
    """maxUnavailable for RollingUpdate."""


class _SpecBase(KubeModel):
    replicas: int | None = Field(
        default=None, ge=0, json_schema_extra={"default": 1, "format": "int32"}
    )
    """Desired number of replica Workspaces (the scale subresource's spec.replicas)."""
    node_count_limit: int | None = Field(default=None, ge=0)
    """At most this many GPU nodes for all replicas together; no limit when absent or 0."""
    label_selector: LabelSelector
    """Becomes every replica's resource.labelSelector (matchLabels are put on its nodes)."""
    update_strategy: UpdateStrategy | None = Field(
        default=None, json_schema_extra={"default": DEFAULT_UPDATE_STRATEGY}
    )
    """How replicas move to a changed template: RollingUpdate (maxUnavailable) or OnDelete."""
    auto_upgrade: AutoUpgradePolicy | None = None
    """Automatic base-image upgrades (upstream's field)."""


class InferenceSetSpec(_SpecBase):
    """Desired state: the template, how many replicas, and how they are updated."""

    template: InferenceSetTemplate
    """What each replica Workspace is made from."""


class InferenceSetSpecV1Beta1(_SpecBase):
    """Desired state: the template, how many replicas, and how they are updated."""

    template: InferenceSetTemplateV1Beta1
    """What each replica Workspace is made from."""


class AutoUpgradeStatus(KubeModel):
    """Observed state of automatic base-image upgrades."""

    num_drifted_workspaces: int | None = None
    """Replicas still on an older base image (absent when autoUpgrade is off)."""
    last_successful_upgrade_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    """When the last replica finished upgrading."""


class InferenceSetStatus(KubeModel):
    """Observed state, written by the InferenceSet controller."""

    replicas: int | None = None
    """Replica Workspaces that exist and are not being deleted (the scale subresource's)."""
    ready_replicas: int | None = None
    """Replicas whose Workspace is ready to serve."""
    updated_replicas: int | None = None
    """Replicas made from the current template."""
    selector: str | None = None
    """Label selector of the replicas' pods, for the HorizontalPodAutoscaler."""
    observed_generation: int | None = None
    """The spec generation this status describes."""
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """InferenceSetReady and, with an auto-provisioned autoscaler, AutoscalerReady."""
    performance: Performance | None = None
    """Benchmark figures summed over the replicas."""
    auto_upgrade: AutoUpgradeStatus | None = None
    """Automatic base-image upgrade progress."""


class InferenceSetBase(KubeModel):
    """Fields shared by both served versions."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        json_schema_extra=_rules(
            _rule(
                f"!has(self.metadata.name) || self.metadata.name.size() <= {MAX_NAME}",
                f"metadata.name must be at most {MAX_NAME} characters: replicas are named "
                "<name>-<ordinal> and a Workspace name is at most 63",
            ),
        )
    )

    api_version: str
    """kaito.sh/v1alpha1 or kaito.sh/v1beta1."""
    kind: Literal["InferenceSet"] = "InferenceSet"
    """Kind: InferenceSet."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata; scaledobject.kaito.sh/* annotations configure autoscaling."""
    status: InferenceSetStatus | None = None
    """Observed state."""

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or ""


class InferenceSetV1Alpha1(InferenceSetBase):
    """Replicas of one Workspace template (kaito.sh/v1alpha1)."""

    api_version: Literal["kaito.sh/v1alpha1"] = "kaito.sh/v1alpha1"
    """kaito.sh/v1alpha1."""
    spec: InferenceSetSpec
    """Desired state."""


class InferenceSet(InferenceSetBase):
    """Replicas of one Workspace template (kaito.sh/v1beta1, the storage version)."""

    api_version: Literal["kaito.sh/v1beta1"] = "kaito.sh/v1beta1"
    """kaito.sh/v1beta1."""
    spec: InferenceSetSpecV1Beta1
    """Desired state."""


def parse_inferenceset(obj: dict[str, Any]) -> InferenceSet:
    """Any served version, read as the v1beta1 shape (a superset; conversion is None)."""
    return InferenceSet.model_validate({**obj, "apiVersion": "kaito.sh/v1beta1"})


def desired_replicas(iset: InferenceSet) -> int:
    return 1 if iset.spec.replicas is None else iset.spec.replicas


def update_strategy(iset: InferenceSet) -> tuple[str, str | int]:
    """(type, maxUnavailable) with upstream's defaults filled in."""
    strategy = iset.spec.update_strategy or UpdateStrategy()
    rolling = strategy.rolling_update or RollingUpdate()
    limit = 1 if rolling.max_unavailable is None else rolling.max_unavailable
    return strategy.type or "RollingUpdate", limit


def template_hash(iset: InferenceSet) -> str:
    """sha256 of what a replica is made of (template + label selector), first 10 hex digits.

    Replicas carry it (``inferenceset.kaito.sh/template-hash``); one whose hash differs from
    the set's is outdated and is rolled to the new template.
    """
    spec = iset.spec.model_dump(
        mode="json", by_alias=True, exclude_none=True, include={"template", "label_selector"}
    )
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def owner_reference(iset: InferenceSet) -> dict[str, Any]:
    """The controller reference every object the set owns carries (garbage collection)."""
    return {
        "apiVersion": iset.api_version,
        "kind": C.INFERENCESET_KIND,
        "name": iset.name,
        "uid": iset.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_workspace(
    iset: InferenceSet, name: str, *, byo: bool = False, digest: str | None = None
) -> dict[str, Any]:
    """The kaito.sh/v1beta1 Workspace replica ``name`` of the set, as a wire-form dict.

    Labels and annotations come from ``template.metadata`` plus the set's own bookkeeping;
    the instance type is left out with bring-your-own nodes, as upstream does.
    """
    template = iset.spec.template
    meta = template.metadata or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels[C.LABEL_INFERENCESET_CREATED_BY] = iset.name
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    annotations[C.ANNOTATION_INFERENCESET_TEMPLATE_HASH] = digest or template_hash(iset)
    resource: dict[str, Any] = {
        "labelSelector": iset.spec.label_selector.to_dict(),
    }
    if template.resource is not None:
        if template.resource.instance_type and not byo:
            resource["instanceType"] = template.resource.instance_type
        if template.resource.partition is not None:
            resource["partition"] = template.resource.partition.to_dict()
    return {
        "apiVersion": f"{C.GROUP}/{C.V1BETA1}",
        "kind": C.WORKSPACE_KIND,
        "metadata": {
            "name": name,
            "namespace": iset.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(iset)],
        },
        "resource": resource,
        "inference": template.inference.to_dict(),
    }
