"""The operator's claims on the azure backend: liveness and ARM read budget (issue 18, defect 6).

The operator runs with a short registration timeout so a node that never joins is given up
within the test; the fake ARM counts every request, so the reads a claim costs are measured.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hack.fake_arm import FakeArmAdmin

from ..conftest import Cluster
from ..controllers.conftest import Operator, _operator, condition, install_crds, wait_until
from .conftest import FakeArmProcess, operator_env
from .test_azure_workspace import seed

pytestmark = pytest.mark.e2e

REGISTRATION_TIMEOUT_S = 8


@pytest.fixture(scope="module")
def liveness_operator(
    cluster: Cluster, fake_arm: FakeArmProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    install_crds(cluster)
    yield from _operator(
        cluster,
        tmp_path_factory,
        ["--node-provisioner=azure", f"--registration-timeout={REGISTRATION_TIMEOUT_S}"],
        operator_env(fake_arm),
    )


def ready(cluster: Cluster, name: str, namespace: str) -> dict[str, Any] | None:
    ws = cluster.get("workspace", name, namespace)
    cond = condition(ws, "WorkspaceSucceeded")
    return ws if cond and cond["status"] == "True" else None


def arm_requests(state: dict[str, Any], pool: str | None = None) -> list[dict[str, Any]]:
    return [e for e in state["log"] if pool is None or e["pool"] == pool]


async def test_a_node_that_never_registers_is_replaced(
    cluster: Cluster, namespace: str, arm: FakeArmAdmin, liveness_operator: Operator
) -> None:
    await arm.add_fault("no_join")  # the first pool's VM never joins the cluster
    cluster.apply(seed("phi-nojoin"), namespace)
    ws = wait_until(
        "the Workspace to get a node that registers",
        lambda: ready(cluster, "phi-nojoin", namespace),
        timeout=REGISTRATION_TIMEOUT_S + 90,
    )
    events = json.loads(
        cluster.kubectl(
            "get", "events", "-A", "--field-selector", "reason=RegistrationTimeout", "-o", "json"
        ).stdout
    )["items"]
    assert len(events) == 1, events
    assert "did not register" in events[0]["message"]
    state = await arm.state()
    (pool,) = state["pools"]
    assert [e["status"] for e in arm_requests(state, pool) if e["method"] == "PUT"] == [201, 201]
    assert ws["status"]["workerNodes"][0].startswith(f"aks-{pool}-")
    cluster.kubectl("-n", namespace, "delete", "workspace", "phi-nojoin", "--timeout=90s")
    assert (await arm.state())["pools"] == {}


async def test_claims_cost_few_arm_reads(
    cluster: Cluster, namespace: str, arm: FakeArmAdmin, liveness_operator: Operator
) -> None:
    """A pending claim does not poll every 2 s; its node's events cost no ARM read at all."""
    await arm.configure(create_delay_s=20.0)
    cluster.apply(seed("phi-reads"), namespace)
    ws = wait_until("the Workspace ready", lambda: ready(cluster, "phi-reads", namespace), 90)
    state = await arm.state()
    (pool,) = state["pools"]
    pending_reads = [e for e in arm_requests(state, pool) if e["method"] == "GET"]
    # Before: a GET every 2 s for the 20 s. Now: the first look and create's own read (404,
    # 404), the SDK's final GET of the operation, and one look when it ended (pool, machines).
    assert len(pending_reads) <= 5, [
        (e["path"].rsplit("/", 2)[-2:], e["status"]) for e in pending_reads
    ]
    before = len(state["log"])
    node = ws["status"]["workerNodes"][0]
    started = time.monotonic()
    for i in range(30):
        cluster.kubectl("annotate", "node", node, f"chaos/poke={i}", "--overwrite")
    await asyncio.sleep(max(0.0, 3 - (time.monotonic() - started)))
    # the garbage collector's list of all pools runs on its own timer (every 2 s here)
    after = [e for e in (await arm.state())["log"][before:] if e["pool"] is not None]
    assert after == [], f"{len(after)} ARM requests for 30 node events: {after[:5]}"
    cluster.kubectl("-n", namespace, "delete", "workspace", "phi-reads", "--timeout=90s")
