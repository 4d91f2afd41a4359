"""The local backend: a NodeClaim becomes a KWOK-managed Node with GPU capacity.

It plays the part a cloud node provisioner plays in production, against the real
apiserver, so everything above it (scheduling, readiness, deletion) is exercised for real.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from kaito.provisioner.base import NODECLAIM_LABEL, NodeRequest, NodeStatus, Phase
from kaito.provisioner.kwok_node import fake_gpu_node

PROVISIONED_BY_LABEL = "kaito.sh/provisioned-by"

# instance type -> (GPUs, vCPU, memory GiB); None when the type is unknown
ShapeLookup = Callable[[str], tuple[int, int, int] | None]


class NodeAPI(Protocol):
    """The few Node operations the backend needs; the operator adapts its client to it."""

    async def create_node(self, node: dict[str, Any]) -> None:
        """Create; an existing node of that name is not an error."""
        ...

    async def get_node(self, name: str) -> dict[str, Any] | None: ...

    async def delete_node(self, name: str) -> None:
        """Delete; a missing node is not an error."""
        ...

    async def list_nodes(self, label_selector: str) -> list[dict[str, Any]]: ...


class KwokProvisioner:
    """NodeProvisioner that creates fake GPU nodes named after their NodeClaim."""

    name = "kwok"
    on_settled: Callable[[str], None] | None = None  # nothing runs in the background here

    def __init__(self, nodes: NodeAPI, shape: ShapeLookup) -> None:
        self._nodes = nodes
        self._shape = shape

    async def create(self, request: NodeRequest) -> NodeStatus:
        existing = await self._nodes.get_node(request.name)
        if existing is not None:
            return self._status(existing)
        shape = self._shape(request.instance_type)
        if shape is None:
            return NodeStatus(
                Phase.FAILED,
                reason="UnknownInstanceType",
                message=f"instance type {request.instance_type!r} is not in the SKU table",
            )
        gpus, cpu, memory_gib = shape
        labels = dict(request.labels) | {
            PROVISIONED_BY_LABEL: self.name,
            NODECLAIM_LABEL: request.name,
        }
        node = fake_gpu_node(
            request.name,
            request.instance_type,
            gpus=gpus,
            cpu=cpu,
            memory_gib=memory_gib,
            labels=labels,
            taints=[{"key": t.key, "value": t.value, "effect": t.effect} for t in request.taints],
        )
        await self._nodes.create_node(node)
        return NodeStatus(
            Phase.LAUNCHED, provider_id=node["spec"]["providerID"], node_name=request.name
        )

    async def get(self, request: NodeRequest) -> NodeStatus | None:
        node = await self._nodes.get_node(request.name)
        return None if node is None else self._status(node)

    async def delete(self, request_name: str) -> bool:
        if await self._nodes.get_node(request_name) is None:
            return True
        await self._nodes.delete_node(request_name)
        return False

    async def list_requests(self) -> list[str]:
        nodes = await self._nodes.list_nodes(f"{PROVISIONED_BY_LABEL}={self.name}")
        return sorted(
            n["metadata"]["labels"][NODECLAIM_LABEL]
            for n in nodes
            if NODECLAIM_LABEL in n["metadata"].get("labels", {})
        )

    async def close(self) -> None:
        return None

    @staticmethod
    def _status(node: dict[str, Any]) -> NodeStatus:
        return NodeStatus(
            Phase.LAUNCHED,
            provider_id=node.get("spec", {}).get("providerID"),
            node_name=node["metadata"]["name"],
        )
