"""Fixtures for the azure backend: the fake ARM server as a process, and provisioners on it.

The server registers joining nodes in the session's local cluster (`cluster` fixture), and
its token endpoint only accepts :data:`CLIENT_SECRET`, so the real azure-identity flow runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.identity.aio import ClientSecretCredential

from hack.fake_arm import FakeArmAdmin
from kaito.provisioner.azure import AzureProvisioner, AzureSettings

TENANT_ID = "72f988bf-0000-0000-0000-000000000001"
CLIENT_ID = "kaito-e2e-client"
CLIENT_SECRET = "s3cr3t-" + uuid.uuid4().hex
SUBSCRIPTION_ID = "00000000-0000-0000-0000-00000000abcd"
RESOURCE_GROUP = "kaito-rg"
CLUSTER_NAME = "kaito-aks"
LOCATION = "eastus"
REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class FakeArmProcess:
    url: str
    ca_file: str
    pid: int
    directory: Path


@contextlib.contextmanager
def running_fake_arm(kubeconfig: Path, *extra: str) -> Iterator[FakeArmProcess]:
    """hack/fake_arm.py as a process registering joining nodes in the cluster of `kubeconfig`."""
    directory = Path(tempfile.mkdtemp(prefix="kaito-fake-arm-"))
    log = (directory / "fake-arm.log").open("w")
    env = dict(os.environ, FAKE_ARM_CLIENT_SECRET=CLIENT_SECRET)
    proc = subprocess.Popen(
        [
            sys.executable, str(REPO / "hack" / "fake_arm.py"), "--dir", str(directory),
            "--kubeconfig", str(kubeconfig), "--client-id", CLIENT_ID,
            "--location", LOCATION, "--create-delay", "1.0", "--delete-delay", "0.3", *extra,
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    endpoint = directory / "endpoint.json"
    deadline = time.monotonic() + 30
    while not endpoint.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"fake ARM did not start:\n{(directory / 'fake-arm.log').read_text()}")
        time.sleep(0.05)
    info = json.loads(endpoint.read_text())
    try:
        yield FakeArmProcess(info["url"], info["ca_file"], proc.pid, directory)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def fake_arm(cluster: Any) -> Iterator[FakeArmProcess]:
    with running_fake_arm(cluster.kubeconfig) as arm:
        yield arm


@pytest.fixture
async def arm(fake_arm: FakeArmProcess) -> AsyncIterator[FakeArmAdmin]:
    """The admin client, with the server reset to no pools, no faults, default timings."""
    admin = FakeArmAdmin(fake_arm.url, fake_arm.ca_file)
    await admin.reset()
    await admin.configure(
        create_delay_s=1.0, delete_delay_s=0.3, page_size=100, operation_retry_after=None
    )
    yield admin
    await admin.reset()
    await admin.close()


def operator_env(fake_arm: FakeArmProcess) -> dict[str, str]:
    """The environment an operator with ``--node-provisioner=azure`` reads (as the chart sets)."""
    return {
        "AZURE_TENANT_ID": TENANT_ID,
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_CLIENT_SECRET": CLIENT_SECRET,
        "AZURE_AUTHORITY_HOST": fake_arm.url,
        "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION_ID,
        "AZURE_RESOURCE_GROUP": RESOURCE_GROUP,
        "AZURE_CLUSTER_NAME": CLUSTER_NAME,
        "AZURE_LOCATION": LOCATION,
        "AZURE_ARM_ENDPOINT": fake_arm.url,
        "AZURE_CA_BUNDLE": fake_arm.ca_file,
    }


def settings_for(fake_arm: FakeArmProcess, **overrides: Any) -> AzureSettings:
    values: dict[str, Any] = {
        "subscription_id": SUBSCRIPTION_ID,
        "resource_group": RESOURCE_GROUP,
        "cluster_name": CLUSTER_NAME,
        "location": LOCATION,
        "arm_endpoint": fake_arm.url,
        "ca_bundle": fake_arm.ca_file,
        "polling_interval_s": 0.2,
        "max_retries": 4,
        "retry_backoff_s": 0.01,
        "retry_backoff_max_s": 0.1,
        "max_retry_after_s": 1.0,
        "gc_min_age_s": 0.0,
    }
    return AzureSettings(**(values | overrides))


ProvisionerFactory = Callable[..., AzureProvisioner]


@dataclass(frozen=True)
class AzureTestEnv:
    """What a test needs to talk to the fake ARM itself (identities, scope, endpoint)."""

    url: str
    ca_file: str
    tenant_id: str = TENANT_ID
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    subscription_id: str = SUBSCRIPTION_ID
    resource_group: str = RESOURCE_GROUP
    cluster_name: str = CLUSTER_NAME


@pytest.fixture
def azure_env(fake_arm: FakeArmProcess) -> AzureTestEnv:
    return AzureTestEnv(fake_arm.url, fake_arm.ca_file)


@pytest.fixture
async def provisioners(fake_arm: FakeArmProcess) -> AsyncIterator[ProvisionerFactory]:
    """Build provisioners (each with its own credential, like separate operator processes)."""
    made: list[tuple[AzureProvisioner, ClientSecretCredential]] = []

    def make(secret: str = CLIENT_SECRET, **overrides: Any) -> AzureProvisioner:
        credential = ClientSecretCredential(
            TENANT_ID, CLIENT_ID, secret, authority=fake_arm.url, connection_verify=fake_arm.ca_file
        )
        provisioner = AzureProvisioner(settings_for(fake_arm, **overrides), credential)
        made.append((provisioner, credential))
        return provisioner

    yield make
    for provisioner, credential in made:
        await provisioner.close()
        await credential.close()
