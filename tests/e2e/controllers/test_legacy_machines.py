"""`--legacy-machines`: the operator speaks karpenter.sh/v1alpha5 Machine, as the seed did."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from ..conftest import REPO, Cluster
from .conftest import Operator, _operator, condition, get_json, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def legacy_operator(
    cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    yield from _operator(cluster, tmp_path_factory, ["--legacy-machines"])


def test_seed_workspace_is_served_through_a_machine(
    cluster: Cluster, namespace: str, legacy_operator: Operator
) -> None:
    doc: dict[str, Any] = yaml.safe_load(
        (REPO / "examples" / "workspace-phi-3-mini.yaml").read_text()
    )
    cluster.apply(doc, namespace)

    def ready() -> dict[str, Any] | None:
        ws = cluster.get("workspace", "workspace-phi-3-mini", namespace)
        cond = condition(ws, "WorkspaceSucceeded")
        return ws if cond and cond["status"] == "True" else None

    wait_until("Workspace ready", ready)
    selector = f"kaito.sh/workspace=workspace-phi-3-mini,kaito.sh/workspacenamespace={namespace}"
    machines = get_json(cluster, "machines.karpenter.sh", "-l", selector)["items"]
    assert len(machines) == 1
    assert machines[0]["apiVersion"] == "karpenter.sh/v1alpha5"
    assert condition(machines[0], "Ready")["status"] == "True"  # type: ignore[index]
    assert get_json(cluster, "nodeclaims.karpenter.sh", "-l", selector)["items"] == []

    cluster.kubectl("-n", namespace, "delete", "workspace", "workspace-phi-3-mini", "--timeout=60s")
    assert get_json(cluster, "machines.karpenter.sh", "-l", selector)["items"] == []
