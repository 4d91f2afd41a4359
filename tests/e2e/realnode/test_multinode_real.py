"""A model that needs two nodes serves from two pods on two real nodes, as Kubernetes runs them.

The tiny preset with ``resource.count: 2`` (pipeline parallelism 2, as in
tests/e2e/controllers/test_multinode_serves.py) on two real nodes of this machine, each with
its own kubelet and containerd and one advertised GPU, so the scheduler must put one pod on
each. The worker finds the leader by its name under the headless Service, which only the
cluster DNS (CoreDNS on the bridge, the kubelets' ``clusterDNS``) can answer; the leader's
engine and the worker's pipeline stage talk across the two nodes' pod addresses. ``/chat``
answers through the Service like transformers on the whole model, and so does the OpenAI
route. Then the worker's container is killed in its node's containerd: the kubelet restarts
it, the leader sees the group broken and restarts too, and the group answers again.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from hack import realnode
from hack.registry import LocalRegistry

from ..controllers.conftest import Operator
from ..controllers.test_multinode_serves import (
    GREEDY,
    PROMPT,
    chat,
    eager_config,
    openai_chat,
    reference_answer,
    two_node_workspace,
)
from .conftest import NODE, NODE_LABELS, RealCluster, pull_secret
from .test_workspace_real import wait_succeeded

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.real_node]

# one GPU each: the two pods of the group cannot share a node
REAL_NODES = ((NODE, 1), (f"{NODE}-2", 1))
RECOVERY_TIMEOUT = 600


def pod_status(cluster: RealCluster, ns: str, name: str) -> dict[str, Any]:
    pod = cluster.get("pod", name, ns)
    assert pod is not None, f"pod {name} is gone"
    status: dict[str, Any] = pod.get("status") or {}
    return status


def serving_container(cluster: RealCluster, ns: str, pod: str) -> dict[str, Any]:
    statuses = pod_status(cluster, ns, pod).get("containerStatuses") or [{}]
    found: dict[str, Any] = statuses[0]
    return found


def kill_container(cluster: RealCluster, node_name: str, container_id: str) -> None:
    """SIGKILL the container's main process, found in its own node's containerd."""
    node = real_node(cluster, node_name)
    crictl = Path(node.components["containerd"].argv[0]).parent / "crictl"
    out = subprocess.run(
        [str(crictl), "--runtime-endpoint", f"unix://{node.socket}", "inspect",
         container_id.removeprefix("containerd://")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    os.kill(int(json.loads(out.stdout)["info"]["pid"]), signal.SIGKILL)


def real_node(cluster: RealCluster, name: str) -> realnode.RealNode:
    """The record hack/cluster keeps of one of the cluster's real nodes."""
    return next(n for n in realnode.nodes_of(cluster.directory) if n.name == name)


def test_two_pods_on_two_real_nodes_serve_one_model_and_recover_from_a_worker_death(
    real_cluster: RealCluster,
    ns: str,
    private_registry: LocalRegistry,
    tiny_images: dict[str, str],
    real_operator: Operator,
) -> None:
    want = reference_answer()
    pull_secret(real_cluster, ns, "tiny-registry", private_registry.docker_config.read_bytes())
    real_cluster.apply(eager_config("mn"), ns)
    workspace = two_node_workspace("mn", "tiny-registry")
    workspace["resource"]["labelSelector"] = {"matchLabels": dict(NODE_LABELS)}
    started = time.monotonic()
    real_cluster.apply(workspace, ns)
    wait_succeeded(real_cluster, ns, "mn", real_operator)
    ready_after = time.monotonic() - started

    # one pod on each real node, each with an address from its node's slice
    placed = {}
    for pod in ("mn-0", "mn-1"):
        got = real_cluster.get("pod", pod, ns)
        assert got is not None
        placed[pod] = (got["spec"]["nodeName"], got["status"]["podIP"])
    assert {node for node, _ in placed.values()} == set(real_cluster.nodes), placed
    for node_name, ip in placed.values():
        slot = real_node(real_cluster, node_name).slot
        assert ipaddress.ip_address(ip) in realnode.pod_slice(slot), placed

    # the name the worker looked up, from a pod, answered by the cluster DNS
    leader = f"mn-0.mn-headless.{ns}.svc"
    resolved = real_cluster.run_curl(
        ns, "python3", "-c", "import socket, sys; print(socket.gethostbyname(sys.argv[1]))",
        leader,
    ).strip()  # fmt: skip
    assert resolved == placed["mn-0"][1], (resolved, placed)

    svc = real_cluster.get("service", "mn", ns)
    assert svc is not None
    url = f"http://{svc['spec']['clusterIP']}"
    # the seed's request from a pod, through kube-proxy to the leader
    body = {"prompt": PROMPT, "return_full_text": False, "generate_kwargs": GREEDY}
    out = real_cluster.run_curl(
        ns, "-sS", "-X", "POST", f"{url}/chat", "-H", "Content-Type: application/json",
        "-d", json.dumps(body),
    )  # fmt: skip
    assert json.loads(out) == {"Result": want}
    status, answer = openai_chat(url)  # from the host, through the ClusterIP
    assert status == 200 and answer["usage"]["completion_tokens"] == 4, answer

    # the worker's container dies on its node; the kubelets restart both containers
    worker_node = placed["mn-1"][0]
    leader_restarts = serving_container(real_cluster, ns, "mn-0").get("restartCount", 0)
    killed = time.monotonic()
    kill_container(
        real_cluster, worker_node, serving_container(real_cluster, ns, "mn-1")["containerID"]
    )

    def leader_saw_it() -> str | None:
        container = serving_container(real_cluster, ns, "mn-0")
        if container.get("restartCount", 0) <= leader_restarts:
            return None
        message: str = container["lastState"]["terminated"].get("message", "")
        return message or "(no message)"

    message = real_cluster.wait_for("the leader to see the worker go", leader_saw_it, 180)
    seen = time.monotonic() - killed
    assert "multi-node group broken" in message, message
    assert serving_container(real_cluster, ns, "mn-1").get("restartCount", 0) >= 1
    real_cluster.wait_for("the new group to answer", lambda: chat(url)[0] == 200, RECOVERY_TIMEOUT)
    recovered = time.monotonic() - killed
    assert chat(url) == (200, {"Result": want})
    assert openai_chat(url)[0] == 200
    print(
        f"two-node group ready after {ready_after:.0f}s; worker death seen after {seen:.0f}s; "
        f"serving again after {recovered:.0f}s"
    )
