"""The KWOK backend's decisions, with an in-memory Node store standing in for the API."""

from __future__ import annotations

import copy
from typing import Any

from kaito.provisioner.base import NODECLAIM_LABEL, NodeProvisioner, NodeRequest, Phase, Taint
from kaito.provisioner.kwok import KwokProvisioner
from kaito.provisioner.kwok_node import agent_pool_name, fake_gpu_node


class MemoryNodes:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.creates = 0

    async def create_node(self, node: dict[str, Any]) -> None:
        self.creates += 1
        self.nodes.setdefault(node["metadata"]["name"], copy.deepcopy(node))

    async def get_node(self, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.nodes.get(name))

    async def delete_node(self, name: str) -> None:
        self.nodes.pop(name, None)

    async def list_nodes(self, label_selector: str) -> list[dict[str, Any]]:
        key, _, value = label_selector.partition("=")
        return [n for n in self.nodes.values() if n["metadata"]["labels"].get(key) == value]


SHAPES = {"Standard_NC12s_v3": (2, 12, 224)}


def provisioner() -> tuple[KwokProvisioner, MemoryNodes]:
    store = MemoryNodes()
    return KwokProvisioner(store, SHAPES.get), store


REQUEST = NodeRequest(
    name="ws0a1b2c3d",
    instance_type="Standard_NC12s_v3",
    labels={"kaito.sh/workspace": "phi"},
    taints=(Taint("sku", "gpu", "NoSchedule"),),
)


async def test_create_makes_a_gpu_node_shaped_like_the_sku() -> None:
    prov, store = provisioner()
    assert isinstance(prov, NodeProvisioner)
    status = await prov.create(REQUEST)
    assert status.phase is Phase.LAUNCHED
    assert status.node_name == "ws0a1b2c3d"
    node = store.nodes["ws0a1b2c3d"]
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert node["status"]["capacity"]["memory"] == "224Gi"
    labels = node["metadata"]["labels"]
    assert labels["kaito.sh/workspace"] == "phi"
    assert labels["node.kubernetes.io/instance-type"] == "Standard_NC12s_v3"
    assert labels[NODECLAIM_LABEL] == "ws0a1b2c3d"
    assert labels["type"] == "kwok"
    assert node["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert status.provider_id == "kwok://ws0a1b2c3d"


async def test_create_is_idempotent() -> None:
    prov, store = provisioner()
    await prov.create(REQUEST)
    again = await prov.create(REQUEST)
    assert again.phase is Phase.LAUNCHED
    assert store.creates == 1


async def test_unknown_instance_type_fails_with_a_reason() -> None:
    prov, store = provisioner()
    status = await prov.create(NodeRequest(name="x", instance_type="Standard_Nope"))
    assert status.phase is Phase.FAILED
    assert status.reason == "UnknownInstanceType"
    assert "Standard_Nope" in status.message
    assert not store.nodes


async def test_delete_reports_done_only_when_the_node_is_gone() -> None:
    prov, _ = provisioner()
    await prov.create(REQUEST)
    assert await prov.get(REQUEST) is not None
    assert await prov.delete(REQUEST.name) is False
    assert await prov.delete(REQUEST.name) is True
    assert await prov.get(REQUEST) is None


async def test_list_requests_names_only_our_nodes() -> None:
    prov, store = provisioner()
    await prov.create(REQUEST)
    store.nodes["someone-elses"] = fake_gpu_node(
        "someone-elses", "Standard_NC6s_v3", gpus=1, cpu=6, memory_gib=112
    )
    assert await prov.list_requests() == ["ws0a1b2c3d"]


def test_agent_pool_names_are_short_lowercase_alphanumerics() -> None:
    assert agent_pool_name("Workspace-Phi-3-Mini-0") == "workspacephi"
    assert agent_pool_name("---") == "pool"


def test_nodes_carry_the_os_and_arch_labels_a_kubelet_registers() -> None:
    """The node lifecycle controller adds the beta os/arch labels to a node that lacks them,
    through the rate-limited client that also lifts the not-ready taint; a node made with
    them leaves it that taint alone to do (issue 21: half the taint throughput before)."""
    labels = fake_gpu_node("n", "Standard_NC12s_v3", gpus=2, cpu=12, memory_gib=224)["metadata"][
        "labels"
    ]
    for stable, beta in (
        ("kubernetes.io/os", "beta.kubernetes.io/os"),
        ("kubernetes.io/arch", "beta.kubernetes.io/arch"),
    ):
        assert labels[beta] == labels[stable]
