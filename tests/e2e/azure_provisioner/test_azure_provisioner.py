"""The azure backend end to end: real SDK → local ARM server → KWOK node in a real cluster."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.identity.aio import ClientSecretCredential
from azure.mgmt.containerservice.aio import ContainerServiceClient
from azure.mgmt.containerservice.models import (
    AgentPool,
    AgentPoolManagedClusterAgentPoolProfileProperties,
)

from hack.fake_arm import FakeArmAdmin
from kaito.provisioner.azure import AzureProvisioner, pool_name
from kaito.provisioner.base import (
    NodeProvisioner,
    NodeRequest,
    NodeStatus,
    Phase,
    ProvisionerError,
    Taint,
)

ProvisionerFactory = Callable[..., AzureProvisioner]

pytestmark = pytest.mark.e2e


def make_request(owner_ns: str = "default", **overrides: Any) -> NodeRequest:
    values: dict[str, Any] = {
        "name": "ws" + uuid.uuid4().hex[:9],
        "instance_type": "Standard_NC6s_v3",
        "labels": {"kaito.sh/workspace": "phi", "kaito.sh/workspacenamespace": owner_ns},
        "taints": (Taint("sku", "gpu", "NoSchedule"),),
        "storage_gib": 256,
        "node_image_family": "AzureLinux",
        "owner": {"workspace": "phi", "namespace": owner_ns},
    }
    return NodeRequest(**(values | overrides))


async def wait_for(
    provisioner: AzureProvisioner, request: NodeRequest, phase: Phase, within_s: float = 20
) -> NodeStatus:
    deadline = time.monotonic() + within_s
    status: NodeStatus | None = None
    while time.monotonic() < deadline:
        status = await provisioner.get(request)
        if status is not None and status.phase == phase:
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"{request.name} never reached {phase}; last status {status}")


async def wait_deleted(provisioner: AzureProvisioner, name: str, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while not await provisioner.delete(name):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} was never deleted")
        await asyncio.sleep(0.2)


def puts(state: dict[str, Any], pool: str) -> list[dict[str, Any]]:
    return [e for e in state["log"] if e["method"] == "PUT" and e["pool"] == pool]


async def test_create_join_delete(
    arm: FakeArmAdmin, provisioners: ProvisionerFactory, cluster: Any, namespace: str
) -> None:
    provisioner = provisioners()
    assert isinstance(provisioner, NodeProvisioner)
    request = make_request(namespace)
    pool = pool_name(request.name)

    first = await provisioner.create(request)
    assert first.phase == Phase.PENDING
    assert (await provisioner.create(request)).phase == Phase.PENDING  # repeated: no new PUT

    status = await wait_for(provisioner, request, Phase.LAUNCHED)
    assert status.provider_id is not None
    assert status.provider_id.startswith("azure:///subscriptions/")
    assert f"/virtualMachineScaleSets/aks-{pool}-" in status.provider_id
    assert status.node_name is not None

    cluster.kubectl("wait", "--for=condition=Ready", f"node/{status.node_name}", "--timeout=60s")
    node = cluster.get("node", status.node_name)
    assert node is not None
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.azure.com/agentpool"] == pool
    assert labels["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"
    assert labels["kaito.sh/workspace"] == "phi"
    assert labels["kaito.sh/machine-type"] == "gpu"
    assert node["spec"]["providerID"] == status.provider_id
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"

    state = await arm.state()
    assert list(state["pools"]) == [pool]
    properties = state["pools"][pool]["properties"]
    assert properties["count"] == 1
    assert properties["mode"] == "User"
    assert properties["vmSize"] == "Standard_NC6s_v3"
    assert properties["osSKU"] == "AzureLinux"
    assert properties["osDiskSizeGB"] == 256
    assert properties["tags"]["kaito-nodeclaim"] == request.name
    assert properties["tags"]["kaito-namespace"] == namespace
    assert len(puts(state, pool)) == 1

    await wait_deleted(provisioner, request.name)
    assert await provisioner.get(request) is None
    assert (await arm.state())["pools"] == {}
    deadline = time.monotonic() + 10
    while cluster.get("node", status.node_name) is not None:
        assert time.monotonic() < deadline, "node was not removed with its pool"
        await asyncio.sleep(0.2)


async def test_restart_during_lro_adopts_the_pool(
    arm: FakeArmAdmin, provisioners: ProvisionerFactory
) -> None:
    await arm.configure(create_delay_s=3.0)
    request = make_request()
    pool = pool_name(request.name)
    before = provisioners()
    assert (await before.create(request)).phase == Phase.PENDING
    await before.close()  # the operator dies with the LRO still running

    after = provisioners()
    assert (await after.get(request)).phase == Phase.PENDING  # type: ignore[union-attr]
    assert (await after.create(request)).phase == Phase.PENDING
    await wait_for(after, request, Phase.LAUNCHED)

    state = await arm.state()
    assert list(state["pools"]) == [pool]
    assert len(puts(state, pool)) == 1  # the restarted instance never sent a second PUT


async def test_stuck_lro_is_adopted_and_can_be_deleted(
    arm: FakeArmAdmin, provisioners: ProvisionerFactory
) -> None:
    await arm.add_fault("stuck_lro")
    request = make_request()
    first = provisioners()
    await first.create(request)
    await first.close()
    second = provisioners()
    status = await second.create(request)
    assert (status.phase, status.reason) == (Phase.PENDING, "Creating")
    assert len(puts(await arm.state(), pool_name(request.name))) == 1
    await wait_deleted(second, request.name)
    assert (await arm.state())["pools"] == {}


async def test_throttle_storm(arm: FakeArmAdmin, provisioners: ProvisionerFactory) -> None:
    provisioner = provisioners(max_retries=4)
    request = make_request()
    await arm.add_fault("throttle", count=50, retry_after=0.05)
    throttled: list[NodeStatus] = []
    per_call: list[int] = []
    seen = 0
    for _ in range(40):
        status = await provisioner.create(request)
        log_size = len((await arm.state())["log"])
        per_call.append(log_size - seen)
        seen = log_size
        if status.phase != Phase.THROTTLED:
            break
        throttled.append(status)
    assert status.phase == Phase.PENDING, status
    # each call is bounded: one GET plus at most 1 + max_retries attempts of the PUT
    assert max(per_call) <= 1 + 5
    assert len(throttled) == 10  # 50 responses / (1 + 4 retries) per call
    assert all(
        s.reason == "Throttled" and s.retry_after_s == pytest.approx(0.05) for s in throttled
    )
    await wait_for(provisioner, request, Phase.LAUNCHED)
    state = await arm.state()
    assert sum(1 for e in state["log"] if e["status"] == 429) == 50
    assert list(state["pools"]) == [pool_name(request.name)]
    assert sum(1 for e in puts(state, pool_name(request.name)) if e["status"] == 201) == 1


async def test_long_retry_after_is_reported_not_slept(
    arm: FakeArmAdmin, provisioners: ProvisionerFactory
) -> None:
    provisioner = provisioners(max_retry_after_s=1.0)
    await arm.add_fault("throttle", count=1, retry_after=120)
    started = time.monotonic()
    status = await provisioner.create(make_request())
    assert time.monotonic() - started < 5
    assert (status.phase, status.retry_after_s) == (Phase.THROTTLED, 120)
    assert len((await arm.state())["log"]) == 1


async def test_quota_exceeded(arm: FakeArmAdmin, provisioners: ProvisionerFactory) -> None:
    provisioner = provisioners()
    request = make_request()
    await arm.add_fault("quota", method="PUT")
    status = await provisioner.create(request)
    assert (status.phase, status.reason) == (Phase.FAILED, "QuotaExceeded")
    assert "quota" in status.message
    assert "standardNCSv3Family" in status.message
    assert await provisioner.get(request) == status  # remembered while no pool exists
    assert (await arm.state())["pools"] == {}


async def test_sku_not_available(arm: FakeArmAdmin, provisioners: ProvisionerFactory) -> None:
    provisioner = provisioners()
    await arm.add_fault("sku_not_available")
    status = await provisioner.create(make_request())
    assert (status.phase, status.reason) == (Phase.FAILED, "SKUNotAvailable")
    assert "not available in location 'eastus'" in status.message


async def test_lro_ending_failed(arm: FakeArmAdmin, provisioners: ProvisionerFactory) -> None:
    provisioner = provisioners()
    request = make_request()
    await arm.add_fault("lro_failed", code="ZonalAllocationFailed", message="no NC6s_v3 left")
    assert (await provisioner.create(request)).phase == Phase.PENDING
    status = await wait_for(provisioner, request, Phase.FAILED)
    assert (status.reason, status.message) == ("InsufficientCapacity", "no NC6s_v3 left")
    # a fresh instance only sees provisioningState=Failed, still a FAILED status
    other = provisioners()
    again = await other.get(request)
    assert again is not None
    assert (again.phase, again.reason) == (Phase.FAILED, "ProvisioningFailed")
    await wait_deleted(provisioner, request.name)


async def test_server_errors(arm: FakeArmAdmin, provisioners: ProvisionerFactory) -> None:
    provisioner = provisioners(max_retries=3)
    await arm.add_fault("server_error", count=2)
    assert (await provisioner.create(make_request())).phase == Phase.PENDING  # retried inside
    await arm.add_fault("server_error", count=100)
    second = make_request()
    with pytest.raises(ProvisionerError) as info:
        await provisioner.create(second)
    assert info.value.reason == "AzureServerError"
    log = (await arm.state())["log"]
    failed = [e for e in log if e["pool"] == pool_name(second.name) and e["status"] == 500]
    assert len(failed) == 4  # 1 try + 3 retries, then it gave up


async def test_garbage_collection(
    arm: FakeArmAdmin, provisioners: ProvisionerFactory, cluster: Any
) -> None:
    await arm.configure(page_size=1)  # list() must follow nextLink
    provisioner = provisioners()
    kept, orphan = make_request(), make_request()
    for request in (kept, orphan):
        await provisioner.create(request)
    orphan_status = await wait_for(provisioner, orphan, Phase.LAUNCHED)
    await wait_for(provisioner, kept, Phase.LAUNCHED)
    assert sorted(await provisioner.list_requests()) == sorted([kept.name, orphan.name])
    # a young pool is never offered for collection
    assert await provisioners(gc_min_age_s=3600).list_requests() == []

    live = {kept.name}  # the NodeClaim of `orphan` is gone
    restarted = provisioners()
    for name in await restarted.list_requests():
        if name not in live:
            await wait_deleted(restarted, name)
    assert await restarted.list_requests() == [kept.name]
    assert orphan_status.node_name is not None
    assert cluster.get("node", orphan_status.node_name) is None


async def test_a_pool_that_is_not_ours_is_never_adopted_or_deleted(
    arm: FakeArmAdmin, provisioners: ProvisionerFactory, azure_env: Any
) -> None:
    env = azure_env
    request = make_request()
    pool = pool_name(request.name)
    credential = ClientSecretCredential(
        env.tenant_id,
        env.client_id,
        env.client_secret,
        authority=env.url,
        connection_verify=env.ca_file,
    )
    async with ContainerServiceClient(
        credential, env.subscription_id, base_url=env.url, connection_verify=env.ca_file
    ) as client:
        foreign = AgentPool(
            properties=AgentPoolManagedClusterAgentPoolProfileProperties(
                count=1, vm_size="Standard_D4s_v3", mode="User"
            )
        )
        poller = await client.agent_pools.begin_create_or_update(
            env.resource_group, env.cluster_name, pool, foreign, polling_interval=0.2
        )
        await poller.result()
    await credential.close()

    provisioner = provisioners()
    status = await provisioner.create(request)
    assert (status.phase, status.reason) == (Phase.FAILED, "NameCollision")
    assert pool in status.message
    assert await provisioner.delete(request.name) is True  # nothing of ours is there
    assert await provisioner.list_requests() == []
    state = await arm.state()
    assert state["pools"][pool]["state"] == "Succeeded"  # untouched
    assert len(puts(state, pool)) == 1


async def test_no_credential_material_in_logs(
    arm: FakeArmAdmin,
    provisioners: ProvisionerFactory,
    azure_env: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = azure_env.client_secret
    caplog.set_level(logging.DEBUG)
    provisioner = provisioners()
    request = make_request()
    await provisioner.create(request)
    await wait_for(provisioner, request, Phase.LAUNCHED)
    await wait_deleted(provisioner, request.name)

    wrong = provisioners(secret="wrong-" + secret)
    with pytest.raises(ProvisionerError) as info:
        await wrong.create(make_request())
    assert info.value.reason == "AuthenticationFailed"
    assert secret not in info.value.message

    assert (await arm.state())["tokens_issued"] >= 1
    assert secret not in caplog.text
    assert "fake-arm-" not in caplog.text  # every access token the fake issues starts so
    assert "'Authorization': 'REDACTED'" in caplog.text  # the SDK saw the header and hid it
    assert any(r.name.startswith("azure.") for r in caplog.records)  # SDK logs were captured
    assert any(r.name.startswith("kaito.") for r in caplog.records)


async def test_from_env_uses_default_azure_credential(
    arm: FakeArmAdmin, azure_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production path: settings and DefaultAzureCredential from the environment only."""
    env = azure_env
    for key, value in {
        "AZURE_SUBSCRIPTION_ID": env.subscription_id,
        "AZURE_RESOURCE_GROUP": env.resource_group,
        "AZURE_CLUSTER_NAME": env.cluster_name,
        "AZURE_LOCATION": "eastus",
        "AZURE_ARM_ENDPOINT": env.url,
        "AZURE_CA_BUNDLE": env.ca_file,
        "AZURE_TENANT_ID": env.tenant_id,
        "AZURE_CLIENT_ID": env.client_id,
        "AZURE_CLIENT_SECRET": env.client_secret,
        "AZURE_AUTHORITY_HOST": env.url,
    }.items():
        monkeypatch.setenv(key, value)
    provisioner = AzureProvisioner.from_env()
    try:
        request = make_request()
        assert (await provisioner.create(request)).phase == Phase.PENDING
        assert await provisioner.list_requests() == []  # younger than the default 30 s
        assert list((await arm.state())["pools"]) == [pool_name(request.name)]
    finally:
        await provisioner.close()


async def drive(
    provisioner: AzureProvisioner, request: NodeRequest, within_s: float = 30
) -> list[NodeStatus]:
    """What the machine controller does: read, and create again when absent or failed."""
    deadline = time.monotonic() + within_s
    seen: list[NodeStatus] = []
    while time.monotonic() < deadline:
        status = await provisioner.get(request)
        if status is None or status.phase == Phase.FAILED:
            status = await provisioner.create(request)
        if not seen or seen[-1] != status:
            seen.append(status)
        if (status.phase == Phase.LAUNCHED and status.node_name) or (
            status.phase == Phase.FAILED and "attempt" in status.message
        ):
            return seen
        await asyncio.sleep(0.2)
    raise AssertionError(f"{request.name} never settled: {seen}")


async def test_a_failed_pool_is_deleted_and_created_again(
    arm: FakeArmAdmin, provisioners: ProvisionerFactory
) -> None:
    """Issue 18, defect 6: a pool whose create ended Failed used to be adopted forever."""
    provisioner = provisioners()
    request = make_request()
    pool = pool_name(request.name)
    await arm.add_fault("lro_failed", code="ZonalAllocationFailed", message="no NC6s_v3 left")
    seen = await drive(provisioner, request)
    assert seen[-1].phase == Phase.LAUNCHED, seen
    recreating = [s for s in seen if s.reason == "Recreating"]
    assert recreating and "no NC6s_v3 left" in recreating[0].message
    assert "attempt 2 of 3" in recreating[0].message
    state = await arm.state()
    assert [e["status"] for e in puts(state, pool)] == [201, 201]
    assert [e["method"] for e in state["log"] if e["pool"] == pool].count("DELETE") == 1
    assert state["pools"][pool]["tags"]["kaito-attempt"] == "2"


async def test_failed_pools_are_replaced_a_bounded_number_of_times(
    arm: FakeArmAdmin, provisioners: ProvisionerFactory
) -> None:
    provisioner = provisioners(max_create_attempts=2)
    request = make_request()
    pool = pool_name(request.name)
    await arm.add_fault("lro_failed", count=10, code="ZonalAllocationFailed", message="none left")
    seen = await drive(provisioner, request)
    final = seen[-1]
    assert (final.phase, final.reason) == (Phase.FAILED, "InsufficientCapacity"), seen
    assert "none left" in final.message and "attempt 2 of 2" in final.message
    for _ in range(3):  # asked again and again, it stays failed and creates nothing
        assert (await provisioner.create(request)).phase == Phase.FAILED
    state = await arm.state()
    assert len(puts(state, pool)) == 2
    assert state["pools"][pool]["state"] == "Failed"  # kept, with its error, until the claim goes
    await wait_deleted(provisioner, request.name)
    assert (await arm.state())["pools"] == {}
