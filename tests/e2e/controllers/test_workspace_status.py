"""Status upstream gives: WorkspaceDeleting while the finalizer waits, the last reconcile
error on the conditions, and the Event of the Deployment → StatefulSet migration. The real
operator (a subprocess) on the real control plane."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ..conftest import Cluster
from .conftest import (
    Operator,
    claims_of,
    condition,
    example,
    get_json,
    pod_spec,
    wait_condition,
    wait_ready,
    wait_until,
    workspace,
)

pytestmark = pytest.mark.e2e

HOLD = "e2e.kaito.sh/hold"


def test_a_workspace_being_deleted_says_so_until_its_nodes_are_released(
    cluster: Cluster, ns: str
) -> None:
    doc = example("workspace-phi-3-mini.yaml")
    cluster.apply(doc, ns)
    wait_ready(cluster, ns, "workspace-phi-3-mini")
    (claim,) = claims_of(cluster, ns, "workspace-phi-3-mini")
    name = claim["metadata"]["name"]
    finalizers = claim["metadata"]["finalizers"]
    patch = {"metadata": {"finalizers": [*finalizers, HOLD]}}  # something slow to release it
    cluster.kubectl("patch", "nodeclaim", name, "--type=merge", "-p", json.dumps(patch))
    try:
        cluster.kubectl("-n", ns, "delete", "workspace", "workspace-phi-3-mini", "--wait=false")
        cond = wait_condition(
            cluster, ns, "workspace-phi-3-mini", "WorkspaceDeleting", status="True"
        )
        assert cond["reason"] == "workspaceDeleted"
        assert workspace(cluster, ns, "workspace-phi-3-mini") is not None  # still waiting
    finally:
        live = cluster.get("nodeclaim", name) or {}
        kept = [f for f in live.get("metadata", {}).get("finalizers", []) if f != HOLD]
        patch = {"metadata": {"finalizers": kept}}
        cluster.kubectl("patch", "nodeclaim", name, "--type=merge", "-p", json.dumps(patch))
    wait_until("the Workspace gone", lambda: workspace(cluster, ns, "workspace-phi-3-mini") is None)


def test_the_last_reconcile_error_is_shown_until_a_reconcile_succeeds(
    cluster: Cluster, ns: str
) -> None:
    """Upstream appends "(last reconcile error: ...)" to the condition messages."""
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-statefulsets"},
        "spec": {"hard": {"count/statefulsets.apps": "0"}},
    }
    cluster.apply(quota, ns)
    cluster.apply(example("workspace-phi-3-mini.yaml"), ns)

    def error_shown() -> dict[str, Any] | None:
        cond = condition(workspace(cluster, ns, "workspace-phi-3-mini"), "ResourceReady")
        return cond if cond and "(last reconcile error: " in cond["message"] else None

    cond = wait_until("the error on ResourceReady", error_shown)
    assert "exceeded quota" in cond["message"] and "no-statefulsets" in cond["message"]
    cluster.kubectl("-n", ns, "delete", "resourcequota", "no-statefulsets")
    ws = wait_ready(cluster, ns, "workspace-phi-3-mini")  # retried with backoff
    messages = [c["message"] for c in ws["status"]["conditions"]]
    assert not any("last reconcile error" in m for m in messages), messages


def test_an_old_deployment_is_replaced_by_the_statefulset_with_an_event(
    cluster: Cluster, ns: str, operator: Operator
) -> None:
    """Kaito before v0.8 served some models from a Deployment <ws>; an upgraded operator
    deletes it (Warning WorkloadMigration) and the StatefulSet serves."""
    cluster.apply(example("workspace-phi-3-mini.yaml"), ns)
    ws = wait_ready(cluster, ns, "workspace-phi-3-mini")
    old = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "workspace-phi-3-mini",
            "ownerReferences": [
                {
                    "apiVersion": "kaito.sh/v1beta1",
                    "kind": "Workspace",
                    "name": "workspace-phi-3-mini",
                    "uid": ws["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "old-kaito"}},
            "template": {
                "metadata": {"labels": {"app": "old-kaito"}},
                "spec": {"containers": [{"name": "old", "image": "example.com/old:0.3"}]},
            },
        },
    }
    cluster.apply(old, ns)
    unowned = old | {"metadata": {"name": "not-kaitos"}}  # same shape, not the Workspace's
    cluster.apply(unowned, ns)
    operator.stop()
    operator.start()  # the upgrade
    wait_until(
        "the old Deployment gone",
        lambda: cluster.get("deployment", "workspace-phi-3-mini", ns) is None,
    )
    events = get_json(cluster, "events", "-n", ns, "--field-selector", "reason=WorkloadMigration")
    (event,) = events["items"]
    assert event["type"] == "Warning" and "StatefulSet" in event["message"]
    assert cluster.get("deployment", "not-kaitos", ns) is not None
    assert cluster.get("statefulset", "workspace-phi-3-mini", ns) is not None
    wait_ready(cluster, ns, "workspace-phi-3-mini")


def test_the_benchmark_probe_is_on_by_default_and_the_annotation_turns_it_off(
    cluster: Cluster, ns: str
) -> None:
    """The post-load benchmark is the startup probe of a vLLM preset; a KWOK pod has no
    log to read, which BenchmarkCompleted says without holding the Workspace back;
    ``kaito.sh/disable-benchmark: "true"`` gives back the plain /health probe."""
    doc = example("workspace-phi-3-mini.yaml")
    doc["metadata"]["annotations"] = {"kaito.sh/disable-benchmark": "true"}
    cluster.apply(doc, ns)
    ws = wait_ready(cluster, ns, "workspace-phi-3-mini")
    assert condition(ws, "BenchmarkCompleted") is None

    def startup_probe() -> dict[str, Any]:
        return dict(pod_spec(cluster, ns, "workspace-phi-3-mini")["containers"][0]["startupProbe"])

    assert startup_probe()["httpGet"]["path"] == "/health"
    cluster.kubectl(
        "-n", ns, "annotate", "workspace", "workspace-phi-3-mini", "kaito.sh/disable-benchmark-"
    )
    probe = wait_until("the benchmark probe", lambda: startup_probe().get("exec"))
    assert probe["command"][:3] == ["python3", "-m", "serving.benchmark"]
    cond = wait_condition(
        cluster,
        ns,
        "workspace-phi-3-mini",
        "BenchmarkCompleted",
        reason="BenchmarkResultUnavailable",
    )
    assert "workspace-phi-3-mini-0" in cond["message"]
    ws = wait_ready(cluster, ns, "workspace-phi-3-mini")
    assert "performance" not in ws["status"]
