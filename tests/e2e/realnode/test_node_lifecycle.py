"""A real node comes up, networks its pods, survives a kubelet restart and leaves nothing behind.

``hack/cluster down`` must stop exactly what it started and put back every machine-wide change
(firewall rules, links, routes, mounts, cgroups, sysctls, files). This test brings a node up
itself, gives it the state that is hardest to clean (a pod with a Service, an in-memory
volume, a projected token, a running container), takes it down and compares.
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


def test_a_second_real_node_on_the_same_machine_is_refused_with_the_way_out() -> None:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="kaito-node-"))
    first, second = workdir / "a", workdir / "b"
    try:
        hack_cluster.up(first, quiet=True)
        hack_cluster.up(second, quiet=True)
        hack_cluster.add_node(first, "real-a", "Standard_NC6s_v3", {}, 1, True, real=True)
        with pytest.raises(hack_cluster.ClusterError) as err:
            hack_cluster.add_node(second, "real-b", "Standard_NC6s_v3", {}, 1, True, real=True)
        assert "already runs a real node" in str(err.value)
        assert f"--dir {first.resolve()} down" in str(err.value)
        _wait("the first node to stay Ready", lambda: hack_cluster.healthy(
            hack_cluster.ClusterState.load(first.resolve())) == [], 10)  # fmt: skip
    finally:
        hack_cluster.down(second, quiet=True)
        hack_cluster.down(first, quiet=True)
        shutil.rmtree(workdir, ignore_errors=True)
