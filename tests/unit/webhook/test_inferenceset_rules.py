"""InferenceSet admission: the replica Workspace's catalog rules reported at the set's fields,
the scaledobject.kaito.sh annotations and the maintenance window's cron."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from kaito.webhook.inferenceset import validate_inferenceset
from kaito.webhook.server import Lookups, WebhookServer
from kaito.webhook.view import ClusterView, Policy

UPSTREAM = Path(__file__).resolve().parents[2] / "fixtures" / "upstream" / "inferenceset"
SET: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "InferenceSet",
    "metadata": {
        "name": "phi",
        "namespace": "team",
        "annotations": {
            "scaledobject.kaito.sh/auto-provision": "true",
            "scaledobject.kaito.sh/threshold": "10",
        },
    },
    "spec": {
        "labelSelector": {"matchLabels": {"apps": "phi"}},
        "template": {
            "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        },
    },
}


def fields(errors: list[Any]) -> list[str]:
    return [e.field for e in errors]


@pytest.mark.parametrize(
    "name",
    [
        "kaito_inferenceset_llama-3.1_8b_instruct.yaml",
        "kaito_inferenceset_mistral_7b-instruct.yaml",
        "kaito_inferenceset_phi_4_mini.yaml",
        "docs_keda_phi_4_mini.yaml",
        "docs_keda_phi_4_mini_annotated.yaml",
    ],
)
def test_upstream_examples_with_catalog_presets_are_admitted(name: str) -> None:
    for doc in yaml.safe_load_all((UPSTREAM / name).read_text()):
        if doc and doc["kind"] == "InferenceSet":
            assert validate_inferenceset(doc, None) == []


def test_a_hub_id_the_catalog_lacks_is_left_to_the_hub() -> None:
    """Without the hub's answer the pure rules cannot size it (the server asks the hub first)."""
    doc = yaml.safe_load((UPSTREAM / "docs_inference_gemma_4_31b.yaml").read_text())
    assert validate_inferenceset(doc, None) == []


def test_a_preset_that_is_neither_curated_nor_a_hub_id_is_named_at_the_sets_field() -> None:
    doc = yaml.safe_load((UPSTREAM / "docs_inference_gemma_4_31b.yaml").read_text())
    doc["spec"]["template"]["inference"]["preset"]["name"] = "no-such-preset"
    errors = validate_inferenceset(doc, None)
    assert fields(errors) == ["spec.template.inference.preset.name"]
    assert "no-such-preset" in errors[0].message


def test_unknown_instance_type_and_bad_annotations() -> None:
    doc = copy.deepcopy(SET)
    doc["spec"]["template"]["resource"]["instanceType"] = "Standard_Bogus"
    doc["metadata"]["annotations"]["scaledobject.kaito.sh/threshold"] = "ten"
    doc["metadata"]["annotations"]["scaledobject.kaito.sh/idle-seconds"] = "soon"
    errors = validate_inferenceset(doc, None)
    assert "spec.template.resource.instanceType" in fields(errors)
    assert "metadata.annotations[scaledobject.kaito.sh/threshold]" in fields(errors)
    annotation = next(e for e in errors if "threshold" in e.field)
    assert "'ten' is not a positive number" in annotation.message


def test_a_bad_cron_is_refused_with_an_example() -> None:
    doc = copy.deepcopy(SET)
    doc["spec"]["autoUpgrade"] = {"enabled": True, "maintenanceWindow": {"schedule": "weekly"}}
    errors = validate_inferenceset(doc, None)
    assert fields(errors) == ["spec.autoUpgrade.maintenanceWindow.schedule"]
    doc["spec"]["autoUpgrade"]["maintenanceWindow"]["schedule"] = "0 2 * * 6"
    assert validate_inferenceset(doc, None) == []


def test_status_only_updates_and_deletions_pass() -> None:
    broken = copy.deepcopy(SET)
    broken["spec"]["template"]["inference"]["preset"]["name"] = "nope"
    updated = copy.deepcopy(broken)
    updated["status"] = {"replicas": 1}
    assert validate_inferenceset(updated, broken) == []
    deleting = copy.deepcopy(broken)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert validate_inferenceset(deleting, SET) == []
    assert fields(validate_inferenceset(broken, SET)) == ["spec.template.inference.preset.name"]


def test_type_errors_come_back_as_field_errors() -> None:
    doc = copy.deepcopy(SET)
    doc["spec"]["replicas"] = "many"
    errors = validate_inferenceset(doc, None)
    assert errors and errors[0].field == "spec.replicas"


GPU_LABELS = {
    "nvidia.com/gpu.product": "NVIDIA-H200",
    "nvidia.com/gpu.count": "8",
    "nvidia.com/gpu.memory": "144384",
}


def test_with_bring_your_own_nodes_the_replica_has_no_instance_type() -> None:
    """As the controller makes it: the template's instanceType is left out, not refused."""
    assert validate_inferenceset(SET, None, Policy(node_provisioner="byo")) == []


def test_the_cluster_view_judges_the_replica_as_a_workspace() -> None:
    doc = copy.deepcopy(SET)
    doc["spec"]["template"]["resource"]["instanceType"] = "Standard_ND96isr_H200_v9"
    assert fields(validate_inferenceset(doc, None, view=ClusterView(typed_nodes=[]))) == [
        "spec.template.resource.instanceType"
    ]
    h200 = {"metadata": {"name": "h200-0", "labels": GPU_LABELS}}
    assert validate_inferenceset(doc, None, view=ClusterView(typed_nodes=[h200])) == []
    doc = copy.deepcopy(SET)
    doc["spec"]["template"]["inference"]["config"] = "params"
    errors = validate_inferenceset(doc, None, view=ClusterView(config_maps={"params": None}))
    assert fields(errors) == ["spec.template.inference.config"]


async def test_the_server_looks_up_what_the_replica_needs() -> None:
    asked: list[tuple[str, str]] = []

    async def nodes(selector: str) -> list[dict[str, Any]]:
        return []

    async def config_map(namespace: str, name: str) -> dict[str, str] | None:
        asked.append((namespace, name))
        return None

    doc = copy.deepcopy(SET)
    doc["spec"]["template"]["inference"]["config"] = "params"
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "operation": "CREATE", "namespace": "team", "object": doc},
    }
    server = WebhookServer(Lookups(nodes, config_map))
    async with TestClient(TestServer(server.app())) as client:
        body = await (await client.post("/validate-inferenceset", json=review)).json()
    assert asked == [("team", "params")]
    assert body["response"]["allowed"] is False
    causes = body["response"]["status"]["details"]["causes"]
    assert [c["field"] for c in causes] == ["spec.template.inference.config"]
