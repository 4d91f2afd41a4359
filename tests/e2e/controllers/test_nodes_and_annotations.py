"""Node auto-provisioning on (the KWOK backend): nodes already in the cluster are counted
before NodeClaims are made, upstream's multi-GPU and bring-your-own manifests reach Ready on
labelled KWOK nodes, and the annotations and fields upstream honours take effect (load
balancer, performance mode, spot toleration, NodeClaim disk, accelerator label, local NVMe).
The real operator (a subprocess) on the real control plane."""

from __future__ import annotations

import uuid

import pytest

from kaito.presets import get_preset

from ..conftest import Cluster
from .conftest import (
    WS_LABEL,
    claims_of,
    example,
    pod_spec,
    pods_on,
    upstream,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.e2e


def user_node(cluster: Cluster, made: list[str], instance_type: str, labels: dict[str, str]) -> str:
    name = f"user-{uuid.uuid4().hex[:8]}"
    cluster.add_node(name, instance_type, labels=labels)
    made.append(name)
    return name


def test_nodes_already_there_reduce_the_nodeclaims_made(
    cluster: Cluster, ns: str, nodes: list[str]
) -> None:
    """Issue 20: upstream's deepseek-r1 example (6 x 2 H100 nodes) with two matching nodes
    already in the cluster gets 4 NodeClaims, and its pods use all six nodes."""
    doc = upstream("kaito_workspace_deepseek_r1.yaml")
    name, size = doc["metadata"]["name"], doc["resource"]["instanceType"]
    selector = doc["resource"]["labelSelector"]["matchLabels"]
    mine = sorted(user_node(cluster, nodes, size, selector) for _ in range(2))
    user_node(cluster, nodes, "Standard_NC24ads_A100_v4", selector)  # another size: not used
    cluster.apply(doc, ns)
    ws = wait_ready(cluster, ns, name, timeout=120)
    target = ws["status"]["targetNodeCount"]
    assert target == 6
    claims = claims_of(cluster, ns, name)
    assert len(claims) == target - 2
    provisioned = sorted(c["status"]["nodeName"] for c in claims)
    assert ws["status"]["workerNodes"] == sorted(provisioned + mine)
    weights_disk = f"{get_preset(doc['inference']['preset']['name']).node_disk_gib}Gi"  # type: ignore[union-attr]
    assert {c["spec"]["resources"]["requests"]["storage"] for c in claims} == {weights_disk}
    terms = pod_spec(cluster, ns, name)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    # the user's nodes by name (a field selector takes one name a term), ORed
    assert [t["matchFields"] for t in terms[1:]] == [
        [{"key": "metadata.name", "operator": "In", "values": [node]}] for node in mine
    ]
    assert {e["key"] for e in terms[0]["matchExpressions"]} == {
        "apps",
        WS_LABEL,
        "kaito.sh/workspacenamespace",
    }
    assert pods_on(cluster, ns, name) == sorted(provisioned + mine)


def test_upstream_byo_guide_manifest_uses_the_labelled_nodes(
    cluster: Cluster, ns: str, nodes: list[str]
) -> None:
    """Upstream's "Bring your own GPU nodes" guide: label the node pool apps=gpu, apply a
    Workspace with its instanceType; no NodeClaim is made."""
    node = user_node(cluster, nodes, "Standard_NC24ads_A100_v4", {"apps": "gpu"})
    doc = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "workspace-falcon-7b"},
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": "gpu"}},
        },
        "inference": {"preset": {"name": "falcon-7b"}},
    }
    cluster.apply(doc, ns)
    ws = wait_ready(cluster, ns, "workspace-falcon-7b")
    assert claims_of(cluster, ns, "workspace-falcon-7b") == []
    assert ws["status"]["workerNodes"] == [node]
    assert pods_on(cluster, ns, "workspace-falcon-7b") == [node]


def test_upstream_multi_gpu_manifest_on_a_labelled_node(
    cluster: Cluster, ns: str, nodes: list[str]
) -> None:
    """Upstream's llama-3.1-8b example on a 4-GPU Standard_NC96ads_A100_v4 node."""
    doc = upstream("kaito_workspace_llama-3.1_8b_instruct.yaml")
    name, size = doc["metadata"]["name"], doc["resource"]["instanceType"]
    node = user_node(cluster, nodes, size, doc["resource"]["labelSelector"]["matchLabels"])
    cluster.apply(doc, ns)
    ws = wait_ready(cluster, ns, name)
    assert claims_of(cluster, ns, name) == []
    assert ws["status"]["workerNodes"] == [node]
    server = pod_spec(cluster, ns, name)["containers"][0]
    assert server["resources"]["limits"] == {"nvidia.com/gpu": "4"}


def test_load_balancer_and_performance_mode_annotations_take_effect(
    cluster: Cluster, ns: str
) -> None:
    """Upstream's phi-4-mini "throughput" example, plus kaito.sh/enablelb: "True"."""
    doc = upstream("kaito_workspace_phi_4_mini_throughput.yaml")
    name = doc["metadata"]["name"]
    doc["metadata"]["annotations"]["kaito.sh/enablelb"] = "True"
    cluster.apply(doc, ns)
    wait_ready(cluster, ns, name)
    args = pod_spec(cluster, ns, name)["containers"][0]["args"]
    assert args[args.index("--performance-mode") + 1] == "throughput"
    svc = cluster.get("service", name, ns)
    assert svc is not None and svc["spec"]["type"] == "LoadBalancer"

    cluster.kubectl("-n", ns, "annotate", "workspace", name, "kaito.sh/enablelb-")
    cluster.kubectl(
        "-n", ns, "annotate", "workspace", name, "kaito.sh/performance-mode=balanced", "--overwrite"
    )

    def back_to_defaults() -> bool:
        svc = cluster.get("service", name, ns) or {}
        args = pod_spec(cluster, ns, name)["containers"][0]["args"]
        return svc.get("spec", {}).get("type") == "ClusterIP" and "--performance-mode" not in args

    wait_until("ClusterIP and no --performance-mode", back_to_defaults)


def test_pods_tolerate_azure_spot_nodes(cluster: Cluster, ns: str, nodes: list[str]) -> None:
    label = f"spot-{uuid.uuid4().hex[:6]}"
    node = user_node(cluster, nodes, "Standard_NC6s_v3", {"apps": label})
    cluster.kubectl("taint", "node", node, "kubernetes.azure.com/scalesetpriority=spot:NoSchedule")
    doc = example("workspace-phi-3-mini.yaml")
    doc["metadata"]["name"] = "on-spot"
    doc["resource"]["labelSelector"]["matchLabels"] = {"apps": label}
    cluster.apply(doc, ns)
    wait_ready(cluster, ns, "on-spot")
    tolerations = pod_spec(cluster, ns, "on-spot")["tolerations"]
    assert {
        "key": "kubernetes.azure.com/scalesetpriority",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    } in tolerations
    assert pods_on(cluster, ns, "on-spot") == [node]


def test_provisioned_nodes_get_the_model_disk_and_the_accelerator_label(
    cluster: Cluster, ns: str
) -> None:
    doc = example("workspace-phi-3-mini.yaml")
    cluster.apply(doc, ns)
    wait_ready(cluster, ns, "workspace-phi-3-mini")
    (claim,) = claims_of(cluster, ns, "workspace-phi-3-mini")
    preset = get_preset(doc["inference"]["preset"]["name"])
    assert preset is not None
    disk = claim["spec"]["resources"]["requests"]["storage"]
    assert disk == f"{preset.node_disk_gib}Gi" != "1024Gi"
    assert claim["metadata"]["labels"]["accelerator"] == "nvidia"
    node = claim["status"]["nodeName"]
    cluster.kubectl("label", "node", node, "accelerator-")  # a node that came up without it

    def labelled() -> bool:
        found = cluster.get("node", node) or {}
        return bool(found.get("metadata", {}).get("labels", {}).get("accelerator") == "nvidia")

    wait_until("accelerator=nvidia written back", labelled)


STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "kaito-local-nvme-disk"},
    "provisioner": "kubernetes.io/no-provisioner",
    "volumeBindingMode": "WaitForFirstConsumer",
}


def test_weights_go_on_local_nvme_when_the_storage_class_exists(cluster: Cluster, ns: str) -> None:
    """An NVMe size (Standard_NC24ads_A100_v4) and the StorageClass kaito-local-nvme-disk:
    the weights volume is a volumeClaimTemplate of the model's disk size; a static PV of the
    class (what the local CSI driver would provide) binds it and the pod runs."""
    cluster.apply(STORAGE_CLASS)
    pv = f"nvme-{uuid.uuid4().hex[:6]}"
    try:
        doc = example("workspace-phi-3-mini-v1beta1.yaml")
        doc["metadata"]["name"] = "nvme"
        doc["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
        cluster.apply(doc, ns)
        sts = wait_until("the StatefulSet", lambda: cluster.get("statefulset", "nvme", ns))
        (template,) = sts["spec"]["volumeClaimTemplates"]
        preset = get_preset(doc["inference"]["preset"]["name"])
        assert preset is not None
        size = f"{preset.node_disk_gib}Gi"
        assert template["metadata"]["name"] == "model-weights-volume"
        assert template["spec"]["storageClassName"] == "kaito-local-nvme-disk"
        assert template["spec"]["resources"]["requests"]["storage"] == size
        volumes = {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
        assert "model-weights-volume" not in volumes
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "kaito-local-nvme-disk",
                    "hostPath": {"path": f"/tmp/{pv}"},
                },
            }
        )
        wait_ready(cluster, ns, "nvme", timeout=90)
        pvc = cluster.get("pvc", "model-weights-volume-nvme-0", ns)
        assert pvc is not None and pvc["status"]["phase"] == "Bound"
    finally:
        cluster.kubectl("-n", ns, "delete", "workspace", "nvme", "--timeout=60s", check=False)
        cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)
        cluster.kubectl("delete", "storageclass", "kaito-local-nvme-disk", check=False)
