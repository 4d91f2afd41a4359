"""Kubernetes building blocks shared by every kind we model (metadata, conditions, selectors).

Every model serialises by its camelCase alias and keeps unknown keys, so an object read from
the API server and dumped again is the same object: fields added by a newer server are not lost.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel


class KubeModel(BaseModel):
    """Base for API types: camelCase aliases, unknown fields kept, field docstrings as schema."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="allow",
        use_attribute_docstrings=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset (None) fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Parse a wire-form object (as the API server returns it)."""
        return cls.model_validate(data)


def _quantity(value: object) -> object:
    # The API server accepts both 4 and "4"; we always carry the canonical string.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
            r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity such as "16Gi" or "8" (integers are accepted)."""

Schemaless = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""An embedded Kubernetes type kept as plain JSON (e.g. a PodTemplateSpec or VolumeSource)."""

ResourceList = dict[str, Quantity]
"""Resource name to quantity, as in resources.requests or status.capacity."""


class OwnerReference(KubeModel):
    """Names the object that owns this one; garbage collection follows these links."""

    api_version: str
    """API version of the owner."""
    kind: str
    """Kind of the owner."""
    name: str
    """Name of the owner."""
    uid: str
    """UID of the owner."""
    controller: bool | None = None
    """True when the owner is the managing controller."""
    block_owner_deletion: bool | None = None
    """When true, the owner cannot be deleted before this object (foreground deletion)."""


class ObjectMeta(KubeModel):
    """Standard object metadata; server-managed fields are kept as they come back."""

    name: str | None = None
    """Object name, unique within its namespace."""
    generate_name: str | None = None
    """Prefix for a server-generated name."""
    namespace: str | None = None
    """Namespace of the object (empty for cluster-scoped kinds)."""
    uid: str | None = None
    """Server-assigned unique id."""
    resource_version: str | None = None
    """Opaque version used for optimistic concurrency and watches."""
    generation: int | None = None
    """Sequence number of the desired state (spec), bumped by the server."""
    creation_timestamp: dt.datetime | None = None
    """When the object was created."""
    deletion_timestamp: dt.datetime | None = None
    """When deletion was requested; set while finalizers run."""
    deletion_grace_period_seconds: int | None = None
    """Grace period granted for deletion."""
    labels: dict[str, str] | None = None
    """Labels: indexed key/value pairs used by selectors."""
    annotations: dict[str, str] | None = None
    """Annotations: unindexed key/value pairs."""
    owner_references: list[OwnerReference] | None = None
    """Owners of this object."""
    finalizers: list[str] | None = None
    """Finalizers that must be removed before the object is deleted."""
    managed_fields: list[dict[str, Any]] | None = None
    """Server-side apply bookkeeping; kept verbatim."""


class LabelSelectorRequirement(KubeModel):
    """One set-based selector term."""

    key: str
    """Label key the requirement applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: list[str] | None = None
    """Values for In/NotIn; empty for Exists/DoesNotExist."""


class LabelSelector(KubeModel):
    """Selects objects by labels; both parts must match."""

    match_labels: dict[str, str] | None = None
    """Exact key/value pairs a node must carry."""
    match_expressions: list[LabelSelectorRequirement] | None = None
    """Set-based requirements a node must satisfy."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubeModel):
    """One aspect of an object's state (metav1.Condition)."""

    type: str = Field(max_length=316)
    """Condition type in CamelCase, e.g. ResourceReady."""
    status: ConditionStatus
    """True, False or Unknown."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this condition was computed from."""
    last_transition_time: dt.datetime
    """When the status last changed."""
    reason: str = Field(max_length=1024)
    """Machine-readable CamelCase reason for the last transition."""
    message: str = Field(max_length=32768)
    """Human-readable details about the transition."""


def utcnow() -> dt.datetime:
    """Now, in UTC and whole seconds (the precision metav1.Time keeps)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def find_condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    """The condition of the given type, if present."""
    for condition in conditions or ():
        if condition.type == type_:
            return condition
    return None


def set_condition(
    conditions: list[Condition] | None,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    observed_generation: int | None = None,
    now: dt.datetime | None = None,
) -> list[Condition]:
    """Return a new list with the condition set; the transition time moves only on a change.

    Keeping lastTransitionTime stable when the status is unchanged lets controllers write
    status only when something really changed (no hot loop of no-op updates).
    """
    result: list[Condition] = []
    found = False
    for existing in conditions or ():
        if existing.type != type_:
            result.append(existing)
            continue
        found = True
        changed_at = existing.last_transition_time
        if existing.status != status:
            changed_at = now or utcnow()
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=observed_generation,
                last_transition_time=changed_at,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=observed_generation,
                last_transition_time=now or utcnow(),
            )
        )
    return result


class Taint(KubeModel):
    """A node taint: pods without a matching toleration are kept off (or evicted)."""

    key: str
    """Taint key."""
    value: str | None = None
    """Taint value."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    """What happens to pods that do not tolerate the taint."""
    time_added: dt.datetime | None = None
    """When a NoExecute taint was added."""


class NodeSelectorRequirement(KubeModel):
    """A node-label requirement (key, operator, values)."""

    key: str = Field(max_length=316)
    """Node label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """How the label relates to the values."""
    values: list[str] | None = Field(default=None, max_length=100)
    """Values; a single integer for Gt/Lt, none for Exists/DoesNotExist."""
