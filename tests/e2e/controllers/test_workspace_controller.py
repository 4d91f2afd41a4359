"""The workspace and machine controllers on the real control plane, KWOK playing the nodes."""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

import pytest
import yaml

from ..conftest import Cluster
from .conftest import (
    WS_LABEL,
    Operator,
    claims_of,
    condition,
    example,
    get_json,
    kaito_status,
    wait_condition,
    wait_ready,
    wait_until,
    workspace,
)

pytestmark = pytest.mark.e2e


def test_seed_workspace_goes_ready_on_a_provisioned_gpu_node(cluster: Cluster, ns: str) -> None:
    cluster.apply(example("workspace-phi-3-mini.yaml"), ns)
    ws = wait_ready(cluster, ns, "workspace-phi-3-mini")

    claims = claims_of(cluster, ns, "workspace-phi-3-mini")
    assert len(claims) == 1
    claim = claims[0]
    reqs = {r["key"]: r["values"] for r in claim["spec"]["requirements"]}
    assert reqs["node.kubernetes.io/instance-type"] == ["Standard_NC6s_v3"]
    assert claim["metadata"]["labels"]["apps"] == "phi-3"
    assert condition(claim, "Ready")["status"] == "True"  # type: ignore[index]
    node = cluster.get("node", claim["status"]["nodeName"])
    assert node is not None
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]

    assert ws["status"]["workerNodes"] == [node["metadata"]["name"]]
    assert ws["status"]["targetNodeCount"] == 1
    assert ws["metadata"]["finalizers"] == ["workspace.finalizer.kaito.sh"]
    sts = cluster.get("statefulset", "workspace-phi-3-mini", ns)
    assert sts is not None
    pod = sts["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert "--dtype" in pod["containers"][0]["args"]
    assert pod["containers"][0]["args"][pod["containers"][0]["args"].index("--dtype") + 1] == (
        "float16"  # V100: compute capability 7.0 has no bfloat16
    )
    svc = cluster.get("service", "workspace-phi-3-mini", ns)
    assert svc is not None
    assert {p["port"] for p in svc["spec"]["ports"]} == {80, 29500}
    assert cluster.get("service", "workspace-phi-3-mini-headless", ns) is not None

    table = cluster.kubectl("-n", ns, "get", "workspace.v1alpha1.kaito.sh").stdout.splitlines()
    assert table[0].split() == [
        "NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"
    ]  # fmt: skip
    assert table[1].split()[:5] == [
        "workspace-phi-3-mini",
        "Standard_NC6s_v3",
        "True",
        "True",
        "True",
    ]

    events = get_json(cluster, "events", "-n", ns, "--field-selector", "reason=NodeClaimCreated")
    assert events["items"], "a NodeClaimCreated event is recorded"

    # the CLI reads the same through the API
    header, row = kaito_status(cluster, ns).splitlines()[:2]
    assert header.split()[:5] == [
        "NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY"
    ]  # fmt: skip
    assert row.split()[:5] == ["workspace-phi-3-mini", "Standard_NC6s_v3", "True", "True", "True"]


def test_image_adapters_get_one_init_container_each(cluster: Cluster, ns: str) -> None:
    doc = example("workspace-falcon-7b-adapter.yaml")
    doc["inference"]["adapters"].append(
        {
            "source": {
                "name": "second-adapter",
                "image": "registry.example.com/second:1",
                "imagePullSecrets": ["regcred"],
            },
            "strength": "0.5",
        }
    )
    cluster.apply(doc, ns)
    wait_ready(cluster, ns, "workspace-falcon-7b-adapter")
    sts = cluster.get("statefulset", "workspace-falcon-7b-adapter", ns)
    assert sts is not None
    pod = sts["spec"]["template"]["spec"]
    inits = {c["name"]: c for c in pod["initContainers"]}
    assert set(inits) == {"adapter-falcon-7b-adapter", "adapter-second-adapter"}
    first = inits["adapter-falcon-7b-adapter"]
    assert first["args"][first["args"].index("--image") + 1] == (
        "registry.example.com/adapter-falcon-7b:0.0.1"
    )
    assert first["args"][first["args"].index("--dest") + 1] == "/mnt/adapter/falcon-7b-adapter"
    assert {"name": "adapter-volume", "mountPath": "/mnt/adapter"} in first["volumeMounts"]
    assert "--docker-config" in inits["adapter-second-adapter"]["args"]
    args = pod["containers"][0]["args"]
    assert "--enable-lora" in args
    modules = args[args.index("--lora-modules") + 1 :]
    assert "falcon-7b-adapter=/mnt/adapter/falcon-7b-adapter" in modules
    assert "second-adapter=/mnt/adapter/second-adapter" in modules
    strengths = [args[i + 1] for i, a in enumerate(args) if a == "--adapter-strength"]
    assert sorted(strengths) == ["falcon-7b-adapter=1.0", "second-adapter=0.5"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_spec_update_rolls_out_a_new_pod_template(cluster: Cluster, ns: str) -> None:
    doc = example("workspace-falcon-7b-adapter.yaml")
    cluster.apply(doc, ns)
    ws = wait_ready(cluster, ns, "workspace-falcon-7b-adapter")
    revision = ws["metadata"]["annotations"]["workspace.kaito.io/revision"]
    changed = copy.deepcopy(doc)
    changed["inference"]["adapters"][0]["strength"] = "0.25"
    cluster.apply(changed, ns)

    def rolled() -> dict[str, Any] | None:
        sts = cluster.get("statefulset", "workspace-falcon-7b-adapter", ns)
        args = (sts or {}).get("spec", {}).get("template", {}).get("spec", {})
        args = args.get("containers", [{}])[0].get("args", [])
        return sts if "falcon-7b-adapter=0.25" in args else None

    sts = wait_until("new pod template", rolled)
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["workspace.kaito.io/revision"] == str(int(revision) + 1)
    revisions = get_json(
        cluster, "controllerrevisions", "-n", ns, "-l",
        "workspace.kaito.io/name=workspace-falcon-7b-adapter",
    )  # fmt: skip
    assert len(revisions["items"]) == 2
    wait_ready(cluster, ns, "workspace-falcon-7b-adapter")


def test_bring_your_own_nodes_need_no_nodeclaim(cluster: Cluster, ns: str) -> None:
    label = f"byo-{uuid.uuid4().hex[:6]}"
    node = f"byo-{label}"
    cluster.add_node(node, "Standard_NC6s_v3", labels={"apps": label})
    doc = example("workspace-phi-3-mini.yaml")
    doc["metadata"]["name"] = "byo"
    doc["resource"]["labelSelector"]["matchLabels"] = {"apps": label}
    cluster.apply(doc, ns)
    ws = wait_ready(cluster, ns, "byo")
    assert claims_of(cluster, ns, "byo") == []
    assert ws["status"]["workerNodes"] == [node]
    sts = cluster.get("statefulset", "byo", ns)
    assert sts is not None
    terms = sts["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"][0]["matchExpressions"]
    assert terms == [{"key": "apps", "operator": "In", "values": [label]}]
    pods = get_json(cluster, "pods", "-n", ns, "-l", f"{WS_LABEL}=byo")["items"]
    assert [p["spec"]["nodeName"] for p in pods] == [node]


def test_an_instance_type_too_small_is_explained(cluster: Cluster, ns: str) -> None:
    doc = example("workspace-phi-3-mini-v1beta1.yaml")
    doc["metadata"]["name"] = "too-small"
    doc["inference"]["preset"]["name"] = "phi-4"
    doc["resource"]["instanceType"] = "Standard_D4s_v5"

    cluster.apply(doc, ns)

    def explained() -> dict[str, Any] | None:
        cond = condition(workspace(cluster, ns, "too-small"), "ResourceReady")
        return cond if cond and cond["status"] == "False" else None

    cond = wait_until("ResourceReady=False", explained)
    assert cond["reason"] == "InvalidSpec"
    assert cond["message"].startswith("resource.instanceType")
    assert "Standard_D4s_v5" in cond["message"]
    assert "Standard_D" in cond["message"].split("Standard_D4s_v5", 1)[1], "suggests a size"
    assert claims_of(cluster, ns, "too-small") == []
    ws = workspace(cluster, ns, "too-small")
    assert ws is not None and ws["status"]["state"] == "Pending"
    events = get_json(cluster, "events", "-n", ns, "--field-selector", "reason=InvalidSpec")
    assert events["items"]


def test_delete_removes_nodeclaims_nodes_and_workload(cluster: Cluster, ns: str) -> None:
    doc = example("workspace-phi-3-mini.yaml")
    doc["metadata"]["name"] = "short-lived"
    cluster.apply(doc, ns)
    wait_ready(cluster, ns, "short-lived")
    claims = claims_of(cluster, ns, "short-lived")
    node_name = claims[0]["status"]["nodeName"]

    cluster.kubectl("-n", ns, "delete", "workspace", "short-lived", "--timeout=60s")

    assert workspace(cluster, ns, "short-lived") is None
    assert claims_of(cluster, ns, "short-lived") == []
    assert cluster.get("node", node_name) is None
    wait_until(
        "owned objects garbage-collected",
        lambda: (
            cluster.get("statefulset", "short-lived", ns) is None
            and cluster.get("service", "short-lived", ns) is None
            and cluster.get("service", "short-lived-headless", ns) is None
        ),
    )


def test_operator_killed_while_provisioning_makes_no_duplicates(
    cluster: Cluster, ns: str, operator: Operator
) -> None:
    doc = example("workspace-phi-3-mini-v1beta1.yaml")
    doc["metadata"]["name"] = "big"
    doc["inference"]["preset"]["name"] = "falcon-40b"
    doc["resource"]["instanceType"] = "Standard_NC6s_v3"  # one V100 a node: several nodes
    cluster.apply(doc, ns)
    wait_until("a first NodeClaim", lambda: claims_of(cluster, ns, "big"))
    operator.kill()
    operator.start()
    ws = wait_ready(cluster, ns, "big", timeout=90)
    target = ws["status"]["targetNodeCount"]
    assert target > 1
    claims = claims_of(cluster, ns, "big")
    assert len(claims) == target
    assert len({c["metadata"]["name"] for c in claims}) == target
    nodes = get_json(cluster, "nodes", "-l", f"{WS_LABEL}=big")["items"]
    assert len(nodes) == target


def test_twenty_workspaces_at_once_all_become_ready(cluster: Cluster, ns: str) -> None:
    base = example("workspace-phi-3-mini.yaml")
    docs = []
    for i in range(20):
        doc = copy.deepcopy(base)
        doc["metadata"]["name"] = f"phi-{i:02d}"
        docs.append(yaml.safe_dump(doc))
    cluster.kubectl("-n", ns, "apply", "-f", "-", stdin="---\n".join(docs))
    for i in range(20):
        wait_ready(cluster, ns, f"phi-{i:02d}", timeout=120)
    claims = get_json(cluster, "nodeclaims", "-l", f"kaito.sh/workspacenamespace={ns}")["items"]
    assert len(claims) == 20


def test_idle_operator_issues_no_requests(cluster: Cluster, ns: str, operator: Operator) -> None:
    cluster.apply(example("workspace-phi-3-mini.yaml"), ns)
    wait_ready(cluster, ns, "workspace-phi-3-mini")
    wait_until(
        "queues drained",
        lambda: operator.metric("workqueue_depth") == 0,
    )
    # earlier tests' clean-up (nodes going away) and delayed writes may still be in flight:
    # wait for a quiet second, then the operator must stay silent while nothing changes
    last = [operator.metric("rest_client_requests_total")]

    def quiet() -> bool:
        time.sleep(1)
        now = operator.metric("rest_client_requests_total")
        settled = now == last[0]
        last[0] = now
        return settled

    wait_until("the operator to settle", quiet, timeout=30)
    before = operator.metric("rest_client_requests_total")
    lines = [ln for ln in operator.metrics().splitlines() if ln.startswith("rest_client_requests")]
    time.sleep(5)
    after = [ln for ln in operator.metrics().splitlines() if ln.startswith("rest_client_requests")]
    assert operator.metric("rest_client_requests_total") == before, (
        sorted(set(after) - set(lines)),
        operator.log_text()[-3000:],
    )
    errors = [ln for ln in operator.log_text().splitlines() if "reconcile failed" in ln]
    assert operator.metric("controller_runtime_reconcile_errors_total") == 0, errors[-5:]


def test_seed_tuning_workspace_runs_a_job_and_succeeds(cluster: Cluster, ns: str) -> None:
    cluster.apply(example("workspace-tuning-phi-3.yaml"), ns)
    ws = wait_ready(cluster, ns, "workspace-tuning-phi-3", timeout=90)
    assert ws["status"]["state"] == "Succeeded"
    assert condition(ws, "JobStarted")["status"] == "True"  # type: ignore[index]
    job = cluster.get("job", "workspace-tuning-phi-3", ns)
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    inits = [c["name"] for c in pod["initContainers"]]
    assert inits[0] == "data-downloader" and inits[-1] == "trainer"
    downloader = pod["initContainers"][0]
    assert any("dataset.parquet" in a or "parquet" in a for a in downloader["args"])
    assert [c["name"] for c in pod["containers"]] == ["pusher"]
    pusher = pod["containers"][0]
    assert "registry.example.com/adapter-tuning-phi-3:0.0.1" in pusher["args"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    push_secret = volumes["push-docker-config"]
    assert "registry-push-secret" in str(push_secret)
    trainer = pod["initContainers"][-1]
    assert trainer["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    config = cluster.get("configmap", "workspace-tuning-phi-3-qlora-params", ns)
    assert config is not None and "load_in_4bit: true" in config["data"]["training_config.yaml"]


def test_tuning_with_a_broken_config_map_is_explained(cluster: Cluster, ns: str) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "bad-config"},
            "data": {"training_config.yaml": "LoraConfig:\n  r: many\n"},
        },
        ns,
    )
    doc = example("workspace-tuning-phi-3.yaml")
    doc["metadata"]["name"] = "bad-tuning"
    doc["tuning"]["config"] = "bad-config"
    cluster.apply(doc, ns)

    def explained() -> dict[str, Any] | None:
        cond = condition(workspace(cluster, ns, "bad-tuning"), "JobStarted")
        return cond if cond and cond["status"] == "False" else None

    cond = wait_until("JobStarted=False", explained)
    assert cond["reason"] == "InvalidSpec"
    assert "LoraConfig.r" in cond["message"]
    assert cluster.get("job", "bad-tuning", ns) is None


def template_workspace(name: str, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {
            "instanceType": "Standard_NC6s_v3",
            "labelSelector": {"matchLabels": {"apps": name}},
        },
        "inference": {"template": {"spec": {"containers": [container]}}},
    }


def test_a_pod_template_workspace_runs_its_template_on_a_provisioned_node(
    cluster: Cluster, ns: str, operator: Operator
) -> None:
    """Defect 1: a Workspace with inference.template (accepted by the CRD and the webhook)
    failed every reconcile (no estimate, no SKU) and never got a status."""
    server = {"name": "srv", "image": "example.com/srv:1", "ports": [{"containerPort": 5000}]}
    cluster.apply(template_workspace("custom", server), ns)
    ws = wait_ready(cluster, ns, "custom")
    assert ws["status"]["targetNodeCount"] == 1
    (claim,) = claims_of(cluster, ns, "custom")
    assert ws["status"]["workerNodes"] == [claim["status"]["nodeName"]]
    sts = cluster.get("statefulset", "custom", ns)
    assert sts is not None and sts["spec"]["replicas"] == 1
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "example.com/srv:1"
    pods = get_json(cluster, "pods", "-n", ns, "-l", f"{WS_LABEL}=custom")["items"]
    assert [p["spec"]["nodeName"] for p in pods] == [claim["status"]["nodeName"]]
    assert cluster.get("service", "custom", ns) is not None

    # a template the API server refuses is explained with its verdict, never a traceback
    cluster.apply(template_workspace("broken", {"name": "srv"}), ns)

    message = wait_condition(cluster, ns, "broken", "InferenceReady", reason="InvalidSpec")[
        "message"
    ]
    assert message.startswith("inference.template:") and "image" in message
    errors = operator.metric("controller_runtime_reconcile_errors_total", controller="workspace")
    assert errors == 0
