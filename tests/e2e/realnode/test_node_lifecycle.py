"""Real nodes come up, network and name their pods, survive restarts and leave nothing behind.

``hack/cluster down`` must stop exactly what it started and put back every machine-wide change
(firewall rules, links, routes, mounts, cgroups, sysctls, files). These tests bring nodes up
themselves, give them the state that is hardest to clean (a pod with a Service, an in-memory
volume, a projected token, a running container), take them down and compare. A second real
node of the same cluster joins the first (own kubelet, containerd and pod addresses) and
goes again without disturbing it; a node of another cluster is refused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from hack import hostguard, images, realnode

from ..conftest import Cluster, hack_cluster
from .conftest import _missing, snapshot_difference

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.real_node]


def _web_pod(image: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "web", "labels": {"app": "web"}},
                    "spec": {
                        "nodeSelector": {"kaito.sh/real-node": "true"},
                        "containers": [
                            {
                                "name": "web",
                                "image": image,
                                "command": ["python3", "-m", "http.server", "8080"],
                                "workingDir": "/data",
                                "ports": [{"containerPort": 8080}],
                                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/", "port": 8080},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                        "volumes": [{"name": "data", "emptyDir": {"medium": "Memory"}}],
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "web"},
                    "spec": {
                        "selector": {"app": "web"},
                        "ports": [{"port": 80, "targetPort": 8080}],
                    },
                },
            ],
        }
    )


def _wait(what: str, fn: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_a_real_node_runs_pods_and_down_leaves_nothing_behind() -> None:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    before = hostguard.snapshot()
    workdir = Path(tempfile.mkdtemp(prefix="kaito-node-"))
    cluster_dir = workdir / "c"
    try:
        state = hack_cluster.up(cluster_dir, quiet=True)
        cluster = Cluster(kubeconfig=Path(state.kubeconfig), directory=cluster_dir)
        hack_cluster.add_node(cluster_dir, "real-1", "Standard_NC6s_v3", {}, 2, True, real=True)
        node = cluster.get("node", "real-1")
        assert node is not None
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")
        labels = node["metadata"]["labels"]
        assert labels["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"

        # a pod that asks for a GPU, with a Service in front: kube-proxy, CNI, mounts
        cluster.kubectl("apply", "-f", "-", stdin=_web_pod(images.push("curl", realnode.REGISTRY)))
        cluster.kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=180s")
        svc = cluster.get("service", "web", "default")
        assert svc is not None
        url = f"http://{svc['spec']['clusterIP']}/"
        # host → ClusterIP → pod, once kube-proxy has the new endpoint (a second or so)
        _wait(f"{url} to answer", lambda: _answers(url), 30)
        # the pod asks the cluster DNS (CoreDNS on the bridge) for the Service's name
        lookup = "import socket; print(socket.gethostbyname('web.default.svc'))"
        resolved = cluster.kubectl("exec", "web", "--", "python3", "-c", lookup).stdout.strip()
        assert resolved == svc["spec"]["clusterIP"]

        # the GPU capacity survives a kubelet restart, and the pod keeps running
        hack_cluster.restart_node(cluster_dir, "real-1", "kubelet")
        node = cluster.get("node", "real-1")
        assert node is not None
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
        cluster.kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=60s")
        _wait(f"{url} to answer after the restart", lambda: _answers(url), 30)
    finally:
        hack_cluster.down(cluster_dir, quiet=True)
        shutil.rmtree(workdir, ignore_errors=True)
    assert not realnode.LOCK_DIR.exists()
    assert snapshot_difference(before, hostguard.snapshot()) == []


def _ready(cluster: Cluster, node: str) -> bool:
    got = cluster.get("node", node) or {}
    conditions = (got.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_a_second_real_node_joins_the_first_and_goes_again_without_disturbing_it() -> None:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    before = hostguard.snapshot()
    workdir = Path(tempfile.mkdtemp(prefix="kaito-node-"))
    first, other = workdir / "a", workdir / "b"
    try:
        state = hack_cluster.up(first, quiet=True)
        hack_cluster.up(other, quiet=True)
        cluster = Cluster(kubeconfig=Path(state.kubeconfig), directory=first)
        hack_cluster.add_node(first, "real-a", "Standard_NC6s_v3", {}, 1, True, real=True)
        hack_cluster.add_node(first, "real-b", "Standard_NC6s_v3", {}, 1, True, real=True)
        nodes = {n: cluster.get("node", n) for n in ("real-a", "real-b")}
        assert all(_ready(cluster, n) for n in nodes)
        # each its own kubelet port, pod addresses and GPU
        ports = {n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
                 for n in nodes.values() if n}  # fmt: skip
        assert ports == {realnode.KUBELET_PORT, realnode.KUBELET_PORT + 1}
        cidrs = {n["spec"]["podCIDR"] for n in nodes.values() if n}
        assert cidrs == {str(realnode.pod_slice(0)), str(realnode.pod_slice(1))}
        assert all(n and n["status"]["allocatable"]["nvidia.com/gpu"] == "1"
                   for n in nodes.values())  # fmt: skip

        # another cluster's real node is refused, with the way out
        with pytest.raises(hack_cluster.ClusterError) as err:
            hack_cluster.add_node(other, "real-c", "Standard_NC6s_v3", {}, 1, True, real=True)
        assert "already runs a real node" in str(err.value)
        assert f"--dir {first.resolve()} down" in str(err.value)
        # the first node owns the machine-wide pieces: it goes last
        with pytest.raises(hack_cluster.ClusterError) as err:
            hack_cluster.remove_node(first, "real-a")
        assert "real-b" in str(err.value)

        hack_cluster.remove_node(first, "real-b")
        assert cluster.get("node", "real-b") is None
        assert not (first / "nodes" / "real-b").exists()
        _wait("real-a to stay Ready", lambda: _ready(cluster, "real-a"), 30)
        assert hack_cluster.healthy(hack_cluster.ClusterState.load(first.resolve())) == []
        # the first still runs pods after the second went
        cluster.kubectl("apply", "-f", "-", stdin=_web_pod(images.push("curl", realnode.REGISTRY)))
        cluster.kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=180s")
        pod = cluster.get("pod", "web", "default")
        assert pod is not None and pod["spec"]["nodeName"] == "real-a"
    finally:
        hack_cluster.down(other, quiet=True)
        hack_cluster.down(first, quiet=True)
        shutil.rmtree(workdir, ignore_errors=True)
    assert not realnode.LOCK_DIR.exists()
    assert snapshot_difference(before, hostguard.snapshot()) == []
