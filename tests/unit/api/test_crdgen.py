"""The committed CRDs are exactly what the models generate, and they are kubectl-explain ready."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito.api import crdgen

CRD_DIR = Path(__file__).resolve().parents[3] / "manifests" / "crd"


@pytest.mark.parametrize("name", sorted(crdgen.render()))
def test_committed_crd_matches_generated(name: str) -> None:
    path = CRD_DIR / name
    assert path.exists(), f"{path} missing: run python -m kaito.api.crdgen"
    assert path.read_text() == crdgen.render()[name], (
        f"{path} is stale: run PYTHONPATH=src python -m kaito.api.crdgen"
    )


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0
    victim = tmp_path / "kaito.sh_workspaces.yaml"
    victim.write_text(victim.read_text() + "# edited\n")
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1


def _walk(node: dict[str, Any], path: str) -> list[str]:
    missing: list[str] = []
    for name, prop in node.get("properties", {}).items():
        here = f"{path}.{name}"
        if name != "metadata" and not prop.get("description"):
            missing.append(here)
        missing += _walk(prop, here)
    if "items" in node:
        missing += _walk(node["items"], path + "[]")
    if isinstance(node.get("additionalProperties"), dict):
        missing += _walk(node["additionalProperties"], path + "{}")
    return missing


@pytest.mark.parametrize("name", sorted(crdgen.render()))
def test_every_field_has_a_description(name: str) -> None:
    crd = yaml.safe_load(crdgen.render()[name])
    for version in crd["spec"]["versions"]:
        assert _walk(version["schema"]["openAPIV3Schema"], version["name"]) == []


def test_workspace_versions_share_one_schema_and_storage_is_v1beta1() -> None:
    crd = crdgen.workspace_crd()
    alpha, beta = crd["spec"]["versions"]
    assert (alpha["name"], alpha["storage"], beta["name"], beta["storage"]) == (
        "v1alpha1",
        False,
        "v1beta1",
        True,
    )
    a = alpha["schema"]["openAPIV3Schema"]
    b = beta["schema"]["openAPIV3Schema"]
    a_props = {k: v for k, v in a["properties"].items() if k != "apiVersion"}
    b_props = {k: v for k, v in b["properties"].items() if k != "apiVersion"}
    assert a_props == b_props
    assert crd["spec"]["conversion"] == {"strategy": "None"}
    assert crd["spec"]["names"]["shortNames"] == ["wk", "wks"]


def test_printer_columns() -> None:
    alpha, beta = crdgen.workspace_crd()["spec"]["versions"]
    assert [c["name"] for c in alpha["additionalPrinterColumns"]] == [
        "Instance",
        "ResourceReady",
        "InferenceReady",
        "WorkspaceReady",
        "Age",
    ]
    ready = alpha["additionalPrinterColumns"][3]["jsonPath"]
    assert "WorkspaceSucceeded" in ready
    visible = [c["name"] for c in beta["additionalPrinterColumns"] if not c.get("priority")]
    assert visible == [
        "Instance",
        "ResourceReady",
        "InferenceReady",
        "WorkspaceReady",
        "TargetNodeCount",
        "State",
        "Age",
    ]


def test_no_schema_node_leaks_pydantic_artifacts() -> None:
    text = "\n".join(crdgen.render().values())
    for artifact in (
        "$ref",
        "$defs",
        "title:",
        "type: 'null'",
        "additionalProperties: true",
        "&id",
    ):
        assert artifact not in text


def test_karpenter_crds_are_cluster_scoped_and_marked_ours() -> None:
    for crd in (crdgen.nodeclaim_crd(), crdgen.machine_crd()):
        assert crd["spec"]["scope"] == "Cluster"
        assert crd["metadata"]["labels"]["kaito.sh/compat-crd"] == "true"
