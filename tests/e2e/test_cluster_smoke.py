"""The local control plane behaves like a real cluster: scheduling on GPU capacity,
workload controllers, garbage collection and RBAC all work."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Cluster

pytestmark = pytest.mark.e2e

INSTANCE_TYPE = "Standard_NC6s_v3"


def wait_until(
    what: str, fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


@pytest.fixture(scope="module")
def gpu_node(cluster: Cluster) -> str:
    name = f"gpu-{uuid.uuid4().hex[:6]}"
    node = cluster.add_node(name, INSTANCE_TYPE)
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    live = cluster.get("node", name)
    assert live is not None
    assert live["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    return name


def gpu_pod_spec(gpus: int, node: str | None = None) -> dict[str, Any]:
    selector = {"node.kubernetes.io/instance-type": INSTANCE_TYPE}
    if node:  # other tests may share the cluster and add GPU nodes of their own
        selector["kubernetes.io/hostname"] = node
    return {
        "nodeSelector": selector,
        "containers": [
            {
                "name": "main",
                "image": "example.invalid/never-pulled:1",
                "resources": {
                    "requests": {"nvidia.com/gpu": str(gpus)},
                    "limits": {"nvidia.com/gpu": str(gpus)},
                },
            }
        ],
    }


def ready_pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout
    pods: list[dict[str, Any]] = json.loads(out)["items"]
    return [
        p
        for p in pods
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
    ]


def test_gpu_deployment_is_scheduled_on_the_fake_gpu_node(
    cluster: Cluster, namespace: str, gpu_node: str
) -> None:
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "gpu-app"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "gpu-app"}},
                "template": {
                    "metadata": {"labels": {"app": "gpu-app"}},
                    "spec": gpu_pod_spec(1, gpu_node),
                },
            },
        },
        namespace,
    )
    pods = wait_until("a Ready gpu-app pod", lambda: ready_pods(cluster, namespace, "app=gpu-app"))
    assert pods[0]["spec"]["nodeName"] == gpu_node
    deploy = wait_until(
        "deployment available",
        lambda: (
            (d := cluster.get("deployment", "gpu-app", namespace))
            and d["status"].get("availableReplicas") == 1
            and d
        ),
    )
    assert deploy["status"]["readyReplicas"] == 1


def test_pod_asking_for_more_gpus_than_exist_stays_pending(
    cluster: Cluster, namespace: str, gpu_node: str
) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "greedy"},
            "spec": gpu_pod_spec(64),
        },
        namespace,
    )

    def unschedulable() -> dict[str, Any] | None:
        pod = cluster.get("pod", "greedy", namespace)
        assert pod is not None
        for cond in pod.get("status", {}).get("conditions", []):
            if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return cond
        return None

    cond = wait_until("PodScheduled=False/Unschedulable", unschedulable)
    assert cond["status"] == "False"
    assert "nvidia.com/gpu" in cond["message"]
    pod = cluster.get("pod", "greedy", namespace)
    assert pod is not None
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def test_statefulset_gets_two_ready_pods(cluster: Cluster, namespace: str, gpu_node: str) -> None:
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "serviceName": "web",
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "nodeSelector": {"type": "kwok"},
                        "containers": [{"name": "main", "image": "example.invalid/web:1"}],
                    },
                },
            },
        },
        namespace,
    )
    wait_until(
        "2 ready replicas",
        lambda: (
            (s := cluster.get("statefulset", "web", namespace))
            and s["status"].get("readyReplicas") == 2
        ),
    )
    names = sorted(p["metadata"]["name"] for p in ready_pods(cluster, namespace, "app=web"))
    assert names == ["web-0", "web-1"]


def test_job_completes(cluster: Cluster, namespace: str, gpu_node: str) -> None:
    cluster.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "nodeSelector": {"type": "kwok"},
                        "containers": [{"name": "main", "image": "example.invalid/job:1"}],
                    }
                },
            },
        },
        namespace,
    )

    def complete() -> bool:
        job = cluster.get("job", "once", namespace)
        assert job is not None
        return any(
            c["type"] == "Complete" and c["status"] == "True"
            for c in job.get("status", {}).get("conditions", [])
        )

    wait_until("Job Complete", complete)
    job = cluster.get("job", "once", namespace)
    assert job is not None
    assert job["status"]["succeeded"] == 1


def test_deleting_an_owner_cascades_to_dependents(cluster: Cluster, namespace: str) -> None:
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}, "data": {}},
        namespace,
    )
    owner = cluster.get("configmap", "owner", namespace)
    assert owner is not None
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": True,
    }
    for i in range(3):
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"child-{i}", "ownerReferences": [ref]},
            },
            namespace,
        )
    cluster.kubectl("-n", namespace, "delete", "configmap", "owner", "--wait=false")
    wait_until(
        "dependents garbage-collected",
        lambda: all(cluster.get("configmap", f"child-{i}", namespace) is None for i in range(3)),
    )


def test_rbac_denies_a_service_account_without_a_role(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "nobody")
    token = cluster.kubectl("-n", namespace, "create", "token", "nobody").stdout.strip()
    server = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)[
        "clusters"
    ][0]["cluster"]
    ctx = ssl.create_default_context(cafile=server["certificate-authority"])
    url = f"{server['server']}/api/v1/namespaces/{namespace}/pods"

    def call(bearer: str) -> int:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {bearer}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return err.code

    assert call(token) == 403  # authenticated, but no role
    assert call("not-a-token") == 401

    cluster.kubectl(
        "-n", namespace, "create", "role", "pod-reader", "--verb=list", "--resource=pods"
    )  # fmt: skip
    cluster.kubectl(
        "-n", namespace, "create", "rolebinding", "nobody-reads",
        "--role=pod-reader", f"--serviceaccount={namespace}:nobody",
    )  # fmt: skip
    wait_until("the role binding takes effect", lambda: call(token) == 200, timeout=20)
