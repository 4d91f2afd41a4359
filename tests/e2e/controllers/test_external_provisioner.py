"""`--node-provisioner external`: the operator makes NodeClaims and leaves them to another.

On AKS with gpu-provisioner or Karpenter already installed, that provisioner fulfils the claims.
Here the test plays it: it waits for the claim, creates the node and writes the claim's status
as Karpenter does. The operator must never create or delete a node, never put its own
finalizer on a claim, and must delete its claims when the Workspace goes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import Cluster, hack_cluster
from .conftest import Operator, _operator, condition, example, wait_until
from .test_workspace_changes import config_map

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def external_operator(
    cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    yield from _operator(cluster, tmp_path_factory, ["--node-provisioner=external"])


def claims_of(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "nodeclaims", "-l", f"kaito.sh/workspace={name}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def fulfil(cluster: Cluster, claim: dict[str, Any]) -> str:
    """What Karpenter does: a node with the claim's labels, then the claim's status."""
    name = claim["metadata"]["name"]
    labels = dict(claim["metadata"]["labels"])
    instance = next(
        r["values"][0]
        for r in claim["spec"]["requirements"]
        if r["key"] == "node.kubernetes.io/instance-type"
    )
    gpus, cpu, mem = hack_cluster.sku_shape(instance)
    node = hack_cluster.fake_node(name, instance, gpus, cpu, mem, labels)
    node["spec"]["taints"] = claim["spec"]["taints"]
    cluster.kubectl("create", "-f", "-", stdin=json.dumps(node))
    now = "2026-01-01T00:00:00Z"
    conditions = [
        {"type": t, "status": "True", "reason": t, "message": "", "lastTransitionTime": now}
        for t in ("Launched", "Registered", "Initialized", "Ready")
    ]
    status = {"status": {"nodeName": name, "providerID": f"kwok://{name}",
                         "conditions": conditions}}  # fmt: skip
    cluster.kubectl(
        "patch", "nodeclaim", name, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    return name


def test_claims_are_made_and_left_to_the_cluster_s_provisioner(
    cluster: Cluster, namespace: str, external_operator: Operator
) -> None:
    ws = example("workspace-phi-3-mini.yaml")
    cluster.apply(ws, namespace)
    name = ws["metadata"]["name"]
    claim = wait_until("the NodeClaim", lambda: (claims_of(cluster, name) or [None])[0])
    assert claim["metadata"].get("finalizers") in (None, [])  # the provisioner's business
    assert claim["spec"]["nodeClassRef"]["kind"] == "KaitoNodeClass"
    # nobody fulfils it yet: the operator waits and says so; it makes no node itself
    waiting = wait_until(
        "a condition naming the claim",
        lambda: condition(cluster.get("workspace", name, namespace), "NodeClaimReady"),
    )
    assert waiting["status"] != "True"
    assert cluster.get("node", claim["metadata"]["name"]) is None
    # the inference pod is written ahead of its node and waits for it in the scheduler
    pod = wait_until("the pod, Pending", lambda: cluster.get("pod", f"{name}-0", namespace))
    assert not pod["spec"].get("nodeName"), pod["spec"]
    pending = condition(cluster.get("workspace", name, namespace), "WorkspaceSucceeded")
    assert pending is not None and pending["message"] == "waiting for nodes", pending

    node = fulfil(cluster, claim)

    def succeeded() -> bool:
        cond = condition(cluster.get("workspace", name, namespace), "WorkspaceSucceeded")
        return bool(cond and cond["status"] == "True")

    wait_until("the Workspace to succeed on the provisioner's node", succeeded, timeout=120)
    assert cluster.get("pod", f"{name}-0", namespace)["spec"]["nodeName"] == node
    cluster.kubectl("-n", namespace, "delete", "workspace", name, "--timeout=120s")
    wait_until("the claim to be deleted", lambda: claims_of(cluster, name) == [], timeout=60)
    assert cluster.get("node", node) is not None  # the node is the provisioner's to remove
    cluster.kubectl("delete", "node", node, "--wait=false")


def test_a_running_workspace_is_changed_only_once_the_new_nodes_are_ready(
    cluster: Cluster, namespace: str, external_operator: Operator
) -> None:
    """Only a new Workspace's StatefulSet is written ahead of its nodes: a spec that needs
    more nodes leaves the serving pods alone until those nodes are Ready."""
    cluster.apply(config_map("grows-config", 2048), namespace)  # two V100s
    doc = example("workspace-phi-3-mini-v1beta1.yaml")
    doc["metadata"]["name"] = name = "grows"
    doc["inference"]["preset"]["name"] = "mistral-7b-instruct"
    doc["inference"]["config"] = "grows-config"
    cluster.apply(doc, namespace)
    wait_until("two NodeClaims", lambda: len(claims_of(cluster, name)) == 2)
    first = {c["metadata"]["name"] for c in claims_of(cluster, name)}
    nodes = [fulfil(cluster, claim) for claim in claims_of(cluster, name)]

    def succeeded() -> bool:
        cond = condition(cluster.get("workspace", name, namespace), "WorkspaceSucceeded")
        return bool(cond and cond["status"] == "True")

    wait_until("the Workspace to succeed on two nodes", succeeded, timeout=120)
    before = cluster.get("statefulset", name, namespace)
    assert before is not None and before["spec"]["replicas"] == 2

    cluster.apply(config_map("grows-config", 32768), namespace)  # now three V100s
    wait_until("a third claim", lambda: len(claims_of(cluster, name)) == 3)
    time.sleep(2)  # the reconcile that made the claim has long written what it writes
    held = cluster.get("statefulset", name, namespace)
    assert held is not None
    assert held["metadata"]["generation"] == before["metadata"]["generation"], held["spec"]

    for claim in claims_of(cluster, name):
        if claim["metadata"]["name"] not in first:
            nodes.append(fulfil(cluster, claim))
    wait_until(
        "the StatefulSet on three nodes",
        lambda: (cluster.get("statefulset", name, namespace) or {})["spec"]["replicas"] == 3,
    )
    cluster.kubectl("-n", namespace, "delete", "workspace", name, "--timeout=120s")
    for node in nodes:
        cluster.kubectl("delete", "node", node, "--wait=false")
