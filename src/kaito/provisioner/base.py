"""The one interface every node backend implements.

The machine controller turns a NodeClaim (or a legacy Machine) into a :class:`NodeRequest`
and drives a backend through these calls.  Every call is idempotent and keyed by the
request's name, so a restarted operator converges instead of creating a second node.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

NODECLAIM_LABEL = "kaito.sh/nodeclaim"
"""On every node a backend makes: the name of the claim it was made for."""


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str  # NoSchedule | PreferNoSchedule | NoExecute


@dataclass(frozen=True)
class NodeRequest:
    """What a NodeClaim asks for, free of any Kubernetes client type."""

    name: str  # the NodeClaim's name; backends derive their resource names from it
    instance_type: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Taint] = ()
    storage_gib: int | None = None
    node_image_family: str | None = None  # Ubuntu | AzureLinux (kaito.sh/node-image-family)
    owner: Mapping[str, str] = field(default_factory=dict)  # workspace name/namespace, for tags


class Phase(enum.StrEnum):
    PENDING = "Pending"  # accepted, still being created
    LAUNCHED = "Launched"  # cloud resource exists; node may not have joined yet
    FAILED = "Failed"  # terminal for this attempt; reason/message say why
    THROTTLED = "Throttled"  # the cloud asked us to slow down; retry later


@dataclass(frozen=True)
class NodeStatus:
    """A backend's view of one request."""

    phase: Phase
    provider_id: str | None = None
    node_name: str | None = None
    reason: str = ""
    message: str = ""
    retry_after_s: float | None = None


class ProvisionerError(Exception):
    """A failure with a machine-readable reason, copied into NodeClaim conditions."""

    def __init__(self, reason: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s


@runtime_checkable
class NodeProvisioner(Protocol):
    """A node backend (kwok, azure, ...)."""

    name: str
    on_settled: Callable[[str], None] | None
    """Set by the operator; a backend that follows cloud operations in the background calls
    it with the request's name when one ends, so the claim is looked at now, not at its
    next poll."""

    async def create(self, request: NodeRequest) -> NodeStatus:
        """Start creating the node for `request`, or report the one already there."""
        ...

    async def get(self, request: NodeRequest) -> NodeStatus | None:
        """Current state, or None when the backend has nothing for this request."""
        ...

    async def delete(self, request_name: str) -> bool:
        """Start deleting; True once nothing of the request is left."""
        ...

    async def list_requests(self) -> list[str]:
        """Names of all requests the backend holds resources for (garbage collection)."""
        ...

    async def close(self) -> None:
        """Release clients and connections."""
        ...
