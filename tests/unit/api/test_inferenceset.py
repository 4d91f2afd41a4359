"""The InferenceSet API: upstream's manifests parse, the CRD matches upstream's shape, and the
replica Workspace an InferenceSet makes is what the Workspace API and the controller expect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito.api import constants as C
from kaito.api import crdgen
from kaito.api.inferenceset import (
    InferenceSet,
    InferenceSetV1Alpha1,
    child_workspace,
    desired_replicas,
    parse_inferenceset,
    template_hash,
    update_strategy,
)
from kaito.api.v1beta1 import Workspace

UPSTREAM = Path(__file__).resolve().parents[2] / "fixtures" / "upstream" / "inferenceset"


def upstream_sets() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(UPSTREAM.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "InferenceSet":
                out.append((path.name, doc))
    return out


def test_the_upstream_fixtures_are_all_there() -> None:
    assert len(upstream_sets()) == 9
    for path in UPSTREAM.glob("*.yaml"):
        assert path.read_text().startswith("# Upstream Kaito v0.12"), path.name


@pytest.mark.parametrize(("name", "doc"), upstream_sets(), ids=[n for n, _ in upstream_sets()])
def test_upstream_manifests_parse_in_their_own_version(name: str, doc: dict[str, Any]) -> None:
    model = InferenceSetV1Alpha1 if doc["apiVersion"] == "kaito.sh/v1alpha1" else InferenceSet
    parsed = model.model_validate(doc)
    assert parsed.spec.template.inference is not None
    child = child_workspace(parse_inferenceset(doc), f"{doc['metadata']['name']}-0")
    Workspace.model_validate(child)  # a valid Workspace


def test_crd_serves_both_versions_with_scale_and_upstreams_columns() -> None:
    crd = crdgen.inferenceset_crd()
    assert crd["metadata"]["name"] == "inferencesets.kaito.sh"
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["is", "isets"] and names["categories"] == ["inferenceset"]
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert [(n, v["storage"]) for n, v in versions.items()] == [
        ("v1alpha1", False),
        ("v1beta1", True),
    ]
    for version in versions.values():
        assert version["subresources"]["scale"] == {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
        assert version["subresources"]["status"] == {}
        default_columns = [
            c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c
        ]
        assert default_columns == ["Replicas", "ReadyReplicas", "Age"]
    alpha = versions["v1alpha1"]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    beta = versions["v1beta1"]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    resource = "properties", "template", "properties", "resource", "properties"

    def dig(node: dict[str, Any], *keys: str) -> Any:
        for key in keys:
            node = node[key]
        return node

    assert "partition" not in dig(alpha, *resource)
    assert "partition" in dig(beta, *resource)
    assert beta["properties"]["replicas"]["default"] == 1
    assert beta["properties"]["replicas"]["minimum"] == 0
    assert beta["properties"]["updateStrategy"]["default"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    assert sorted(beta["required"]) == ["labelSelector", "template"]


def test_the_set_may_change_its_model_where_a_workspace_may_not() -> None:
    text = yaml.safe_dump(crdgen.inferenceset_crd())
    inference = text.split("inference:", 1)[1].split("metadata:", 1)[0]
    assert "oldSelf" not in inference
    assert "oldSelf" in yaml.safe_dump(crdgen.workspace_crd())


SET: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "InferenceSet",
    "metadata": {
        "name": "phi",
        "namespace": "team",
        "uid": "u-1",
        "annotations": {"scaledobject.kaito.sh/auto-provision": "true"},
    },
    "spec": {
        "labelSelector": {"matchLabels": {"apps": "phi"}},
        "template": {
            "metadata": {
                "labels": {"team": "a"},
                "annotations": {"kaito.sh/runtime": "vllm"},
            },
            "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        },
    },
}


def test_child_workspace_is_a_named_owned_labelled_v1beta1_workspace() -> None:
    iset = parse_inferenceset(SET)
    ws = child_workspace(iset, "phi-0")
    meta = ws["metadata"]
    assert ws["apiVersion"] == "kaito.sh/v1beta1" and ws["kind"] == "Workspace"
    assert (meta["name"], meta["namespace"]) == ("phi-0", "team")
    assert meta["labels"] == {"team": "a", C.LABEL_INFERENCESET_CREATED_BY: "phi"}
    assert meta["annotations"] == {
        "kaito.sh/runtime": "vllm",
        C.ANNOTATION_INFERENCESET_TEMPLATE_HASH: template_hash(iset),
    }
    assert "scaledobject.kaito.sh/auto-provision" not in meta["annotations"]
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "InferenceSet",
            "name": "phi",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert ws["resource"] == {
        "labelSelector": {"matchLabels": {"apps": "phi"}},
        "instanceType": "Standard_NC24ads_A100_v4",
    }
    assert ws["inference"] == {"preset": {"name": "phi-4-mini-instruct"}}
    # bring-your-own nodes: no instance type, as upstream
    assert "instanceType" not in child_workspace(iset, "phi-0", byo=True)["resource"]


def test_template_hash_moves_with_the_template_not_with_replicas() -> None:
    a = parse_inferenceset(SET)
    scaled = parse_inferenceset({**SET, "spec": {**SET["spec"], "replicas": 7}})
    assert template_hash(a) == template_hash(scaled)
    changed = parse_inferenceset(
        {
            **SET,
            "spec": {
                **SET["spec"],
                "template": {**SET["spec"]["template"], "inference": {"preset": {"name": "x"}}},
            },
        }
    )
    assert template_hash(a) != template_hash(changed)


def test_defaults() -> None:
    iset = parse_inferenceset(SET)
    assert desired_replicas(iset) == 1
    assert update_strategy(iset) == ("RollingUpdate", 1)
    custom = parse_inferenceset(
        {
            **SET,
            "spec": {
                **SET["spec"],
                "replicas": 0,
                "updateStrategy": {"type": "OnDelete", "rollingUpdate": {"maxUnavailable": "50%"}},
            },
        }
    )
    assert desired_replicas(custom) == 0
    assert update_strategy(custom) == ("OnDelete", "50%")
