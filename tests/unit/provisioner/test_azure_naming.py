"""Agent-pool names and provider IDs."""

from __future__ import annotations

import re

import pytest

from kaito.provisioner.azure.naming import (
    is_valid_pool_name,
    parse_provider_id,
    pool_name,
    provider_id_from_resource_id,
)

AKS_POOL = re.compile(r"^[a-z][a-z0-9]{0,11}$")


@pytest.mark.parametrize("name", ["ws1a2b3c4d5", "a", "gpu01", "abcdefghijk"])
def test_kaito_style_names_are_kept(name: str) -> None:
    assert pool_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "my-workspace-0",
        "WS1A2B3C4D5",
        "0abc",
        "abcdefghijkl",  # 12 chars is the hashed form's length, so it is hashed too
        "phi-3-mini-4k-instruct-abcdef",
        "---",
        "x" * 253,
    ],
)
def test_other_names_become_valid_and_stable(name: str) -> None:
    derived = pool_name(name)
    assert AKS_POOL.match(derived), derived
    assert len(derived) == 12
    assert pool_name(name) == derived
    assert is_valid_pool_name(derived)


def test_readable_prefix() -> None:
    assert pool_name("my-workspace-0").startswith("mywo")


def test_no_collisions_among_similar_names() -> None:
    names = [f"workspace-{i}" for i in range(5000)] + [f"Workspace-{i}" for i in range(5000)]
    derived = {pool_name(n) for n in names}
    assert len(derived) == len(names)


def test_verbatim_and_hashed_forms_never_meet() -> None:
    # verbatim names are at most 11 characters, hashed ones exactly 12
    assert len(pool_name("abcdefghijk")) == 11
    assert len(pool_name("abcdefghijk-")) == 12


def test_provider_id_round_trip() -> None:
    resource_id = (
        "/subscriptions/sub-1/resourceGroups/MC_rg_c_eastus/providers/Microsoft.Compute/"
        "virtualMachineScaleSets/aks-ws1a2b3c4d5-12345678-vmss/virtualMachines/3"
    )
    provider_id = provider_id_from_resource_id(resource_id)
    assert provider_id.startswith("azure:///subscriptions/")
    parsed = parse_provider_id(provider_id)
    assert parsed is not None
    assert parsed.subscription == "sub-1"
    assert parsed.resource_group == "MC_rg_c_eastus"
    assert parsed.vmss == "aks-ws1a2b3c4d5-12345678-vmss"
    assert parsed.instance == "3"
    assert parsed.pool == "ws1a2b3c4d5"


@pytest.mark.parametrize(
    "provider_id",
    [
        "kwok://node-1",
        "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
        "",
        "azure:///subscriptions/s",
    ],
)
def test_foreign_provider_ids(provider_id: str) -> None:
    assert parse_provider_id(provider_id) is None


def test_vmss_not_named_by_aks_has_no_pool() -> None:
    parsed = parse_provider_id(
        "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/"
        "virtualMachineScaleSets/custom-scale-set/virtualMachines/0"
    )
    assert parsed is not None
    assert parsed.pool is None
