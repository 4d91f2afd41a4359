"""Where the Azure backend talks to and how hard it retries.

Every field can come from an operator flag or from the environment, so the same image runs
against public Azure (workload identity) and against the local ARM test server (a custom
endpoint and CA bundle).  Secrets are never a field here: azure-identity reads them itself.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass

from kaito.provisioner.base import ProvisionerError


@dataclass(frozen=True)
class _Option:
    flag: str
    env: tuple[str, ...]  # first one set wins; later ones are upstream gpu-provisioner's names
    help: str


_OPTIONS: dict[str, _Option] = {
    "subscription_id": _Option(
        "--azure-subscription-id",
        ("AZURE_SUBSCRIPTION_ID", "ARM_SUBSCRIPTION_ID"),
        "subscription that holds the AKS cluster",
    ),
    "resource_group": _Option(
        "--azure-resource-group",
        ("AZURE_RESOURCE_GROUP", "ARM_RESOURCE_GROUP"),
        "resource group of the AKS cluster",
    ),
    "cluster_name": _Option(
        "--azure-cluster-name", ("AZURE_CLUSTER_NAME",), "name of the AKS managed cluster"
    ),
    "location": _Option(
        "--azure-location", ("AZURE_LOCATION", "LOCATION"), "Azure region of the cluster"
    ),
    "arm_endpoint": _Option(
        "--azure-arm-endpoint",
        ("AZURE_ARM_ENDPOINT",),
        "Azure Resource Manager URL (default: public cloud)",
    ),
    "ca_bundle": _Option(
        "--azure-ca-bundle",
        ("AZURE_CA_BUNDLE",),
        "PEM file of CAs trusted for the ARM endpoint and the token authority",
    ),
}
_REQUIRED = ("subscription_id", "resource_group", "cluster_name", "location")


@dataclass(frozen=True)
class AzureSettings:
    """Configuration of :class:`~kaito.provisioner.azure.AzureProvisioner`."""

    subscription_id: str
    resource_group: str
    cluster_name: str
    location: str
    arm_endpoint: str | None = None  # SDK ``base_url``; None = the public cloud's ARM
    ca_bundle: str | None = None  # SDK ``connection_verify``; None = system trust store
    verify_tls: bool = True  # only False for throwaway local experiments
    api_version: str | None = None  # None = the SDK's default
    polling_interval_s: float = 10.0  # LRO poll period when ARM sends no Retry-After
    max_retries: int = 3  # SDK retries per call on 429/5xx/connection errors
    retry_backoff_s: float = 0.8  # exponential backoff factor between those retries
    retry_backoff_max_s: float = 30.0
    max_retry_after_s: float = 30.0  # a longer Retry-After is reported, not slept through
    gc_min_age_s: float = 30.0  # younger pools are never offered for garbage collection
    max_create_attempts: int = 3  # pools of one request created before a failure is final

    def __post_init__(self) -> None:
        missing = [
            _OPTIONS[name].flag for name in _REQUIRED if not str(getattr(self, name)).strip()
        ]
        if missing:
            raise ProvisionerError(
                "InvalidConfiguration",
                "the azure node provisioner needs " + ", ".join(missing)
                + " (or the environment variables "
                + ", ".join(_OPTIONS[n].env[0] for n in _REQUIRED)
                + ")",
            )  # fmt: skip
        if self.arm_endpoint and not self.arm_endpoint.startswith("https://"):
            raise ProvisionerError(
                "InvalidConfiguration",
                f"--azure-arm-endpoint must be an https:// URL, got {self.arm_endpoint!r}",
            )
        if self.max_retries < 0:
            raise ProvisionerError("InvalidConfiguration", "max_retries must be >= 0")

    @property
    def connection_verify(self) -> bool | str:
        """The azure-core transport option: a CA bundle path, or True/False."""
        if not self.verify_tls:
            return False
        return self.ca_bundle or True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> AzureSettings:
        """Read the documented environment variables; keyword arguments win over them."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, option in _OPTIONS.items():
            for var in option.env:
                if env.get(var):
                    values[name] = env[var]
                    break
        values.setdefault("arm_endpoint", None)
        values.setdefault("ca_bundle", None)
        for name in _REQUIRED:
            values.setdefault(name, "")
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add the ``--azure-*`` flags (used with ``--node-provisioner=azure``)."""
        group = parser.add_argument_group("azure node provisioner")
        for name, option in _OPTIONS.items():
            group.add_argument(
                option.flag,
                dest=f"azure_{name}",
                default=None,
                help=f"{option.help} (env {option.env[0]})",
            )

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, env: Mapping[str, str] | None = None
    ) -> AzureSettings:
        """Flags first, then the environment."""
        overrides = {
            name: getattr(args, f"azure_{name}")
            for name in _OPTIONS
            if getattr(args, f"azure_{name}", None)
        }
        return cls.from_env(env, **overrides)
