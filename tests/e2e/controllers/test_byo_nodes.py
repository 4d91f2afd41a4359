"""Bring-your-own nodes as upstream v0.12 shapes them: node auto-provisioning off
(``disableNodeAutoProvisioning``), no instance type, GPUs sized from the GPU Feature Discovery
labels of the selected KWOK nodes; partitions on those nodes; and the gate switched on a
running operator. The real operator (a subprocess) on the real control plane."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kaito.provisioner.kwok_node import fake_gpu_node

from ..conftest import Cluster
from .conftest import (
    UPSTREAM_EXAMPLES,
    Operator,
    _operator,
    claims_of,
    condition,
    example,
    get_json,
    pod_spec,
    pods_on,
    wait_condition,
    wait_ready,
    wait_until,
    workspace,
)

pytestmark = pytest.mark.e2e

BYO_GATE = "--feature-gates=disableNodeAutoProvisioning=true"
A100 = {
    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    "nvidia.com/gpu.memory": "81920",
    "nvidia.com/cuda.compute.major": "8",
    "nvidia.com/cuda.compute.minor": "0",
}


@pytest.fixture(scope="module")
def byo_operator(
    cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    yield from _operator(cluster, tmp_path_factory, [BYO_GATE])


@pytest.fixture
def ns(cluster: Cluster, namespace: str, byo_operator: Operator) -> Iterator[str]:
    yield namespace
    cluster.kubectl("-n", namespace, "delete", "workspaces", "--all", "--wait=false")
    wait_until(
        "Workspaces finalized",
        lambda: not get_json(cluster, "workspaces", "-n", namespace)["items"],
        timeout=60,
    )


def gpu_node(
    cluster: Cluster,
    made: list[str],
    labels: dict[str, str],
    *,
    gpus: int = 1,
    capacity: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> str:
    """A Ready KWOK node shaped like an A100 node, with the labels given (GFD's or not)."""
    name = f"byo-{uuid.uuid4().hex[:8]}"
    node = fake_gpu_node(
        name,
        "Standard_NC24ads_A100_v4",
        gpus=gpus,
        cpu=24,
        memory_gib=220,
        labels=labels,
        taints=taints or [],
    )
    for key in ("capacity", "allocatable"):
        node["status"][key] |= capacity or {}
    cluster.kubectl("create", "-f", "-", stdin=json.dumps(node))
    made.append(name)
    cluster.kubectl("wait", "--for=condition=Ready", f"node/{name}", "--timeout=60s")
    return name


def byo_workspace(
    name: str, selector: dict[str, str], preset: str = "phi-3-mini-4k-instruct"
) -> dict[str, Any]:
    doc = example("workspace-phi-3-mini-v1beta1.yaml")
    doc["metadata"]["name"] = name
    doc["resource"] = {"labelSelector": {"matchLabels": selector}}
    doc["inference"]["preset"]["name"] = preset
    return doc


def test_a_workspace_applied_before_its_nodes_waits_and_is_sized_from_their_labels(
    cluster: Cluster, ns: str, nodes: list[str]
) -> None:
    """Issue 20: admitted (and not failed) before its nodes exist or are labelled; once a
    labelled node is Ready the GPU size comes from nvidia.com/gpu.{product,count,memory}."""
    label = f"byo-{uuid.uuid4().hex[:6]}"
    cluster.apply(byo_workspace("early", {"apps": label}), ns)

    cond = wait_condition(cluster, ns, "early", "ResourceReady", reason="NodeNotReady")
    assert "no Ready node matches resource.labelSelector" in cond["message"], cond
    assert f"apps={label}" in cond["message"]
    ws = workspace(cluster, ns, "early")
    assert ws is not None and ws["status"]["state"] == "Pending"
    assert condition(ws, "WorkspaceSucceeded")["reason"] == "workspacePending"  # type: ignore[index]

    node = gpu_node(cluster, nodes, {"apps": label}, gpus=2)  # no GFD labels yet

    def names_the_node() -> dict[str, Any] | None:
        found = condition(workspace(cluster, ns, "early"), "ResourceReady")
        return found if found and node in found["message"] else None

    cond = wait_until("the unlabelled node named", names_the_node)
    assert "nvidia.com/gpu.product" in cond["message"] and cond["status"] == "False"
    assert cluster.get("statefulset", "early", ns) is None

    labels = [f"{k}={v}" for k, v in (A100 | {"nvidia.com/gpu.count": "2"}).items()]
    cluster.kubectl("label", "node", node, *labels, "--overwrite")
    ws = wait_ready(cluster, ns, "early")
    assert ws["status"]["workerNodes"] == [node]
    assert claims_of(cluster, ns, "early") == []
    pod = pod_spec(cluster, ns, "early")
    server = pod["containers"][0]
    # sized from the labels: both GPUs (phi-3-mini fits half of one: a replica on each, as
    # upstream runs it), bfloat16 from compute capability 8.0
    assert server["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert server["args"][server["args"].index("--data-parallel-size") + 1] == "2"
    assert server["args"][server["args"].index("--dtype") + 1] == "bfloat16"
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "apps", "operator": "In", "values": [label]}]}
    ]
    assert pods_on(cluster, ns, "early") == [node]


def test_preferred_nodes_are_chosen_first(cluster: Cluster, ns: str, nodes: list[str]) -> None:
    label = f"pref-{uuid.uuid4().hex[:6]}"
    gfd = {"apps": label, "nvidia.com/gpu.count": "1"} | A100
    first = gpu_node(cluster, nodes, gfd)
    second = gpu_node(cluster, nodes, gfd)
    wanted = max(first, second)  # not the one a choice by name would take
    doc = byo_workspace("preferring", {"apps": label})
    doc["resource"]["preferredNodes"] = [wanted]
    cluster.apply(doc, ns)
    ws = wait_ready(cluster, ns, "preferring")
    assert ws["status"]["workerNodes"] == [wanted]
    affinity = pod_spec(cluster, ns, "preferring")["affinity"]["nodeAffinity"]
    (pref,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pref["preference"]["matchFields"] == [
        {"key": "metadata.name", "operator": "In", "values": [wanted]}
    ]
    assert pods_on(cluster, ns, "preferring") == [wanted]


def test_upstream_accelerator_partition_runs_on_its_labelled_node(
    cluster: Cluster, ns: str, nodes: list[str]
) -> None:
    """Upstream's examples/inference/kaito_workspace_accelerator.yaml on a 4-GPU node."""
    docs = [d for d in yaml.safe_load_all(UPSTREAM_EXAMPLES.read_text()) if d]
    (doc,) = [d for d in docs if d["metadata"]["name"].startswith("workspace-accelerator")]
    selector = doc["resource"]["labelSelector"]["matchLabels"]
    node = gpu_node(cluster, nodes, selector | A100 | {"nvidia.com/gpu.count": "4"}, gpus=4)
    cluster.apply(doc, ns)
    name = doc["metadata"]["name"]
    ws = wait_ready(cluster, ns, name)
    assert ws["status"]["workerNodes"] == [node]
    server = pod_spec(cluster, ns, name)["containers"][0]
    assert server["resources"]["limits"] == {"nvidia.com/gpu": "2"}  # partition.count


def test_a_mig_partition_asks_for_one_slice_of_its_profile(
    cluster: Cluster, ns: str, nodes: list[str]
) -> None:
    """Issue 19 leftover: a partitioned Workspace through the controller (MIG mode)."""
    label = f"mig-{uuid.uuid4().hex[:6]}"
    labels = {"apps": label, "nvidia.com/gpu.count": "1", "nvidia.com/mig.config": "all-3g.40gb"}
    node = gpu_node(cluster, nodes, labels | A100, capacity={"nvidia.com/mig-3g.40gb": "2"})
    doc = byo_workspace("sliced", {"apps": label})
    doc["resource"]["partition"] = {"mode": "mig", "profile": "3g.40gb"}
    cluster.apply(doc, ns)
    ws = wait_ready(cluster, ns, "sliced")
    assert ws["status"]["workerNodes"] == [node]
    pod = pod_spec(cluster, ns, "sliced")
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-3g.40gb": "1"}
    assert pods_on(cluster, ns, "sliced") == [node]


def test_switching_auto_provisioning_off_keeps_a_succeeded_tuning_workspace(
    cluster: Cluster, ns: str, byo_operator: Operator
) -> None:
    """Issue 20 defect: flipping disableNodeAutoProvisioning on a running operator turned a
    Succeeded tuning Workspace back to Pending (its provisioned node no longer counted, as
    it carries the Workspace's own labels, and its NodeClaim was deleted)."""
    byo_operator.stop()
    byo_operator.extra = []  # node auto-provisioning on: KWOK nodes for NodeClaims
    byo_operator.start()
    try:
        cluster.apply(example("workspace-tuning-phi-3.yaml"), ns)
        ws = wait_ready(cluster, ns, "workspace-tuning-phi-3", timeout=90)
        assert ws["status"]["state"] == "Succeeded"
        (claim,) = claims_of(cluster, ns, "workspace-tuning-phi-3")

        byo_operator.stop()
        byo_operator.extra = [BYO_GATE]
        byo_operator.start()
        wait_until(
            "the Workspace reconciled by the new operator",
            lambda: (
                byo_operator.metric("controller_runtime_reconcile_total", controller="workspace")
                > 0
            ),
        )
        for _ in range(10):  # it stays Succeeded, its claim is kept
            now = workspace(cluster, ns, "workspace-tuning-phi-3")
            assert now is not None
            assert now["status"]["state"] == "Succeeded", now["status"]
            assert condition(now, "WorkspaceSucceeded")["status"] == "True"  # type: ignore[index]
            live = claims_of(cluster, ns, "workspace-tuning-phi-3")
            assert [c["metadata"]["name"] for c in live] == [claim["metadata"]["name"]]
            assert not live[0]["metadata"].get("deletionTimestamp")
            time.sleep(0.5)
    finally:
        # back to auto-provisioning, so the claim is released when the Workspace goes
        byo_operator.stop()
        byo_operator.extra = []
        byo_operator.start()
        cluster.kubectl("-n", ns, "delete", "workspaces", "--all", "--timeout=60s")
        byo_operator.stop()
        byo_operator.extra = [BYO_GATE]
        byo_operator.start()
