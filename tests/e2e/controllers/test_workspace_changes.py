"""A running Workspace follows what changes around it: its ConfigMaps, its node count, hand
edits of what it owns. The real operator (a subprocess) on the real control plane."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ..conftest import Cluster
from .conftest import (
    Operator,
    claims_of,
    condition,
    example,
    wait_condition,
    wait_ready,
    wait_until,
    workspace,
)

pytestmark = pytest.mark.e2e


def config_map(name: str, max_model_len: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"inference_config.yaml": f"vllm:\n  max-model-len: {max_model_len}\n"},
    }


def container_args(cluster: Cluster, namespace: str, name: str) -> list[str]:
    sts = cluster.get("statefulset", name, namespace) or {}
    containers = sts.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])
    args: list[str] = containers[0].get("args", [])
    return args


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_an_edited_inference_config_map_takes_effect_without_a_spec_change(
    cluster: Cluster, ns: str
) -> None:
    """Defect 4: the user's ConfigMap was read once per spec revision (an edit was ignored
    until the spec changed, yet a restart re-read it) and a missing one retried every 30 s."""
    doc = example("workspace-phi-3-mini-v1beta1.yaml")
    doc["metadata"]["name"] = "configured"
    doc["inference"]["config"] = "phi-config"
    cluster.apply(doc, ns)

    cond = wait_condition(cluster, ns, "configured", "ResourceReady", reason="InvalidSpec")
    assert cond["message"].startswith("inference.config") and "phi-config" in cond["message"]
    cluster.apply(config_map("phi-config", 1024), ns)

    def config_read() -> bool:  # before: only when the 30 s retry came round
        cond = condition(workspace(cluster, ns, "configured"), "ResourceReady")
        return cond is not None and cond["reason"] != "InvalidSpec"

    wait_until("the new ConfigMap read", config_read, timeout=20)
    wait_ready(cluster, ns, "configured")
    assert flag(container_args(cluster, ns, "configured"), "--max-model-len") == "1024"

    cluster.apply(config_map("phi-config", 2048), ns)
    wait_until(
        "the edited max-model-len in the StatefulSet",
        lambda: flag(container_args(cluster, ns, "configured"), "--max-model-len") == "2048",
    )
    wait_ready(cluster, ns, "configured")
    assert len(claims_of(cluster, ns, "configured")) == 1


def test_a_fixed_training_config_map_starts_the_tuning_job_at_once(
    cluster: Cluster, ns: str
) -> None:
    """Defect 4, tuning: a broken training ConfigMap was looked at again only every 30 s."""
    broken = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "train-config"},
        "data": {"training_config.yaml": "LoraConfig:\n  r: many\n"},
    }
    cluster.apply(broken, ns)
    doc = example("workspace-tuning-phi-3.yaml")
    doc["metadata"]["name"] = "tune-fixed"
    doc["tuning"]["config"] = "train-config"
    cluster.apply(doc, ns)

    cond = wait_condition(cluster, ns, "tune-fixed", "JobStarted", reason="InvalidSpec")
    assert "LoraConfig.r" in cond["message"]
    wait_condition(cluster, ns, "tune-fixed", "ResourceReady", status="True")
    time.sleep(2)  # nothing left to wake the Workspace but the ConfigMap
    fixed = "QuantizationConfig:\n  load_in_4bit: true\nLoraConfig:\n  r: 16\n"
    broken["data"] = {"training_config.yaml": fixed}
    cluster.apply(broken, ns)
    wait_until("the tuning Job", lambda: cluster.get("job", "tune-fixed", ns), timeout=20)
    wait_ready(cluster, ns, "tune-fixed")


def test_claims_beyond_a_lowered_node_count_are_deleted(cluster: Cluster, ns: str) -> None:
    """Defect 3: when the target node count fell (here a shorter context needs fewer V100s),
    the extra NodeClaims, and their GPU nodes, were never deleted."""
    cluster.apply(config_map("mistral-config", 32768), ns)
    doc = example("workspace-phi-3-mini-v1beta1.yaml")
    doc["metadata"]["name"] = "shrinks"
    doc["inference"]["preset"]["name"] = "mistral-7b-instruct"
    doc["inference"]["config"] = "mistral-config"
    cluster.apply(doc, ns)
    ws = wait_ready(cluster, ns, "shrinks", timeout=90)
    assert ws["status"]["targetNodeCount"] == 3
    claims = claims_of(cluster, ns, "shrinks")
    assert len(claims) == 3
    nodes = {c["status"]["nodeName"] for c in claims}

    cluster.apply(config_map("mistral-config", 2048), ns)

    def shrunk() -> list[Any] | None:
        left = claims_of(cluster, ns, "shrinks")
        return left if len(left) == 2 else None

    left = wait_until("one claim fewer", shrunk, timeout=60)
    ws = wait_ready(cluster, ns, "shrinks")
    assert ws["status"]["targetNodeCount"] == 2
    sts = cluster.get("statefulset", "shrinks", ns)
    assert sts is not None and sts["spec"]["replicas"] == 2
    gone = nodes - {c["status"]["nodeName"] for c in left}
    assert len(gone) == 1
    (node,) = gone
    wait_until("its node deleted", lambda: cluster.get("node", node) is None)


def test_hand_edits_of_owned_objects_are_set_back_and_additions_kept(
    cluster: Cluster, ns: str, operator: Operator
) -> None:
    """Defect 11: `kubectl scale`/`edit` of the StatefulSet (or a Service) stuck, because the
    content-hash annotation still matched. The fields the operator sets are its own; what it
    does not set is left alone."""
    doc = example("workspace-phi-3-mini.yaml")
    doc["metadata"]["name"] = "owned"
    cluster.apply(doc, ns)
    wait_ready(cluster, ns, "owned")
    image = (cluster.get("statefulset", "owned", ns) or {})["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]

    cluster.kubectl("-n", ns, "scale", "statefulset", "owned", "--replicas=3")
    cluster.kubectl("-n", ns, "set", "image", "statefulset/owned", "owned=elsewhere/vllm:1")
    cluster.kubectl("-n", ns, "annotate", "statefulset", "owned", "team=search")
    cluster.kubectl(
        "-n", ns, "patch", "service", "owned", "--type=json",
        "-p", '[{"op": "replace", "path": "/spec/ports/0/targetPort", "value": 9999}]',
    )  # fmt: skip

    def set_back() -> dict[str, Any] | None:
        sts = cluster.get("statefulset", "owned", ns) or {}
        container = sts["spec"]["template"]["spec"]["containers"][0]
        svc = cluster.get("service", "owned", ns) or {}
        target = svc["spec"]["ports"][0]["targetPort"]
        ok = sts["spec"]["replicas"] == 1 and container["image"] == image and target == 5000
        return sts if ok else None

    sts = wait_until("the hand edits set back", set_back)
    assert sts["metadata"]["annotations"]["team"] == "search"
    wait_ready(cluster, ns, "owned")
    errors = operator.metric("controller_runtime_reconcile_errors_total", controller="workspace")
    assert errors == 0
