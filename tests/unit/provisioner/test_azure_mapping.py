"""NodeRequest → AgentPool body."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kaito.provisioner.azure.mapping import InvalidRequest, build_pool
from kaito.provisioner.base import NodeRequest, Taint


def request(**overrides: Any) -> NodeRequest:
    base: dict[str, Any] = {
        "name": "ws1a2b3c4d5",
        "instance_type": "Standard_NC6s_v3",
        "labels": {"kaito.sh/workspace": "phi", "apps": "phi-3"},
        "taints": (Taint("sku", "gpu", "NoSchedule"),),
        "storage_gib": 1024,
        "node_image_family": None,
        "owner": {"workspace": "phi", "namespace": "team-a"},
    }
    return NodeRequest(**(base | overrides))


def props(req: NodeRequest) -> dict[str, Any]:
    body = build_pool(req, now=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)).body.as_dict()
    result: dict[str, Any] = body["properties"]
    return result


def test_pool_shape() -> None:
    spec = build_pool(request())
    assert spec.name == "ws1a2b3c4d5"
    p = props(request())
    assert p["vmSize"] == "Standard_NC6s_v3"
    assert p["count"] == 1
    assert p["mode"] == "User"
    assert p["osType"] == "Linux"
    assert p["type"] == "VirtualMachineScaleSets"
    assert p["enableAutoScaling"] is False
    assert p["osDiskSizeGB"] == 1024
    assert p["osSKU"] == "Ubuntu"
    assert p["nodeTaints"] == ["sku=gpu:NoSchedule"]


def test_labels_copied_with_machine_type() -> None:
    labels = props(request())["nodeLabels"]
    assert labels == {"kaito.sh/workspace": "phi", "apps": "phi-3", "kaito.sh/machine-type": "gpu"}
    cpu = props(request(instance_type="Standard_D4s_v3"))["nodeLabels"]
    assert cpu["kaito.sh/machine-type"] == "cpu"


def test_tags_tie_the_pool_to_its_request() -> None:
    tags = props(request())["tags"]
    assert tags == {
        "kaito-managed-by": "kaito",
        "kaito-nodeclaim": "ws1a2b3c4d5",
        "kaito-workspace": "phi",
        "kaito-namespace": "team-a",
        "kaito-created": "2025-01-02T03:04:05Z",
        "kaito-attempt": "1",
    }


def test_owner_keys_are_made_valid_tag_names() -> None:
    tags = props(request(owner={"kaito.sh/workspace": "phi"}))["tags"]
    assert tags["kaito-kaito.sh-workspace"] == "phi"


@pytest.mark.parametrize(
    ("family", "sku"),
    [(None, "Ubuntu"), ("ubuntu", "Ubuntu"), ("Ubuntu", "Ubuntu"), ("azurelinux", "AzureLinux"),
     ("AzureLinux", "AzureLinux")],
)  # fmt: skip
def test_os_sku(family: str | None, sku: str) -> None:
    assert props(request(node_image_family=family))["osSKU"] == sku


def test_no_storage_leaves_the_aks_default() -> None:
    assert "osDiskSizeGB" not in props(request(storage_gib=None))


def test_no_taints() -> None:
    assert "nodeTaints" not in props(request(taints=()))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"node_image_family": "windows"}, ["windows", "Ubuntu or AzureLinux"]),
        ({"storage_gib": 0}, ["storage", "0Gi"]),
        ({"storage_gib": 4096}, ["4096Gi", "2048"]),
        ({"instance_type": " "}, ["instance-type"]),
        ({"taints": (Taint("sku", "gpu", "Sometimes"),)}, ["Sometimes", "NoSchedule"]),
    ],
)
def test_invalid_requests_name_the_field(overrides: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_pool(request(**overrides))
    for word in words:
        assert word in str(info.value)
