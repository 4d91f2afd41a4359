"""`--node-provisioner=azure`: a seed Workspace gets an AKS agent pool (on the fake ARM)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from hack.fake_arm import FakeArmAdmin

from ..conftest import REPO, Cluster
from ..controllers.conftest import Operator, _operator, condition, install_crds, wait_until
from .conftest import CLIENT_SECRET, FakeArmProcess, operator_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def azure_operator(
    cluster: Cluster, fake_arm: FakeArmProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    install_crds(cluster)
    env = operator_env(fake_arm)
    yield from _operator(cluster, tmp_path_factory, ["--node-provisioner=azure"], env)


def seed(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        (REPO / "examples" / "workspace-phi-3-mini.yaml").read_text()
    )
    doc["metadata"]["name"] = name
    return doc


async def test_seed_workspace_gets_an_agent_pool_and_goes_ready(
    cluster: Cluster, namespace: str, arm: FakeArmAdmin, azure_operator: Operator
) -> None:
    cluster.apply(seed("phi-azure"), namespace)

    def ready() -> dict[str, Any] | None:
        ws = cluster.get("workspace", "phi-azure", namespace)
        cond = condition(ws, "WorkspaceSucceeded")
        return ws if cond and cond["status"] == "True" else None

    ws = wait_until("Workspace ready", ready, timeout=90)
    pools = (await arm.state())["pools"]
    assert len(pools) == 1
    pool = next(iter(pools.values()))
    assert pool["state"] == "Succeeded"
    node = ws["status"]["workerNodes"][0]
    assert node.startswith("aks-")
    live = cluster.get("node", node)
    assert live is not None and live["spec"]["providerID"].startswith("azure:///")

    cluster.kubectl("-n", namespace, "delete", "workspace", "phi-azure", "--timeout=90s")
    assert (await arm.state())["pools"] == {}
    assert cluster.get("node", node) is None
    assert CLIENT_SECRET not in azure_operator.log_text()


async def test_quota_error_is_shown_on_the_workspace(
    cluster: Cluster, namespace: str, arm: FakeArmAdmin, azure_operator: Operator
) -> None:
    await arm.add_fault("quota", method="PUT", count=1000)  # quota stays exhausted
    cluster.apply(seed("phi-quota"), namespace)

    def explained() -> dict[str, Any] | None:
        cond = condition(cluster.get("workspace", "phi-quota", namespace), "ResourceReady")
        return cond if cond and cond["reason"] == "QuotaExceeded" else None

    cond = wait_until("ResourceReady=False/QuotaExceeded", explained, timeout=60)
    assert cond["status"] == "False"
    assert "quota" in cond["message"].lower()
    events = cluster.kubectl("get", "events", "-A", "--field-selector", "reason=QuotaExceeded")
    assert "QuotaExceeded" in events.stdout
    puts = [e for e in (await arm.state())["log"] if e.get("method") == "PUT"]
    assert len(puts) <= 6, "failed launches are retried after a pause, not in a burst"
    await arm.clear_faults()
    cluster.kubectl("-n", namespace, "delete", "workspace", "phi-quota", "--timeout=90s")
