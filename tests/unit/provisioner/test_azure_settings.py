"""Configuration from flags and the environment."""

from __future__ import annotations

import argparse

import pytest

from kaito.provisioner.azure.settings import AzureSettings
from kaito.provisioner.base import ProvisionerError

ENV = {
    "AZURE_SUBSCRIPTION_ID": "sub",
    "AZURE_RESOURCE_GROUP": "rg",
    "AZURE_CLUSTER_NAME": "aks",
    "AZURE_LOCATION": "eastus",
}


def test_from_env() -> None:
    s = AzureSettings.from_env(ENV | {"AZURE_ARM_ENDPOINT": "https://127.0.0.1:8443"})
    assert (s.subscription_id, s.resource_group, s.cluster_name, s.location) == (
        "sub",
        "rg",
        "aks",
        "eastus",
    )
    assert s.arm_endpoint == "https://127.0.0.1:8443"
    assert s.connection_verify is True


def test_upstream_variable_names() -> None:
    s = AzureSettings.from_env(
        {
            "ARM_SUBSCRIPTION_ID": "s",
            "ARM_RESOURCE_GROUP": "r",
            "AZURE_CLUSTER_NAME": "c",
            "LOCATION": "westus2",
        }
    )
    assert (s.subscription_id, s.resource_group, s.location) == ("s", "r", "westus2")


def test_missing_settings_are_named() -> None:
    with pytest.raises(ProvisionerError) as info:
        AzureSettings.from_env({"AZURE_SUBSCRIPTION_ID": "s"})
    assert info.value.reason == "InvalidConfiguration"
    for flag in ("--azure-resource-group", "--azure-cluster-name", "--azure-location"):
        assert flag in info.value.message
    assert "--azure-subscription-id" not in info.value.message


def test_endpoint_must_be_https() -> None:
    with pytest.raises(ProvisionerError, match="https"):
        AzureSettings.from_env(ENV | {"AZURE_ARM_ENDPOINT": "http://127.0.0.1"})


def test_ca_bundle_and_verify() -> None:
    assert AzureSettings.from_env(ENV, ca_bundle="/ca.pem").connection_verify == "/ca.pem"
    assert AzureSettings.from_env(ENV, verify_tls=False).connection_verify is False


def test_flags_win_over_environment() -> None:
    parser = argparse.ArgumentParser()
    AzureSettings.add_arguments(parser)
    args = parser.parse_args(["--azure-cluster-name", "other", "--azure-ca-bundle", "/ca.pem"])
    s = AzureSettings.from_args(args, ENV)
    assert s.cluster_name == "other"
    assert s.ca_bundle == "/ca.pem"
    assert s.resource_group == "rg"
