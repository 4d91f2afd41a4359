"""inference.template as the inference StatefulSet, and what makes a template unusable."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kaito.api import parse_workspace
from kaito.controllers import objects as o
from kaito.controllers.claims import NodeNeeds, node_needs
from kaito.controllers.workload import template_problem
from kaito.presets import SpecError
from kaito.presets.plan import plan_workspace

OWNER = o.Owner(name="custom", namespace="default", uid="u-1")
TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "mine"}},
    "spec": {
        "containers": [{"name": "srv", "image": "example.com/srv:1"}],
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            },
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
        },
    },
}


def template_sts(replicas: int = 2, inference_set: str | None = None) -> dict[str, Any]:
    return o.template_statefulset(
        OWNER,
        TEMPLATE,
        replicas=replicas,
        revision="3",
        node_selector_labels={"apps": "custom"},
        provisioned=True,
        inference_set=inference_set,
    )


def test_the_template_runs_as_written_on_the_workspace_nodes() -> None:
    original = copy.deepcopy(TEMPLATE)
    sts = template_sts()
    assert original == TEMPLATE, "the Workspace's own template is not modified"
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["selector"] == {"matchLabels": {"kaito.sh/workspace": "custom"}}
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    pod = sts["spec"]["template"]
    assert pod["metadata"]["labels"] == {"app": "mine", "kaito.sh/workspace": "custom"}
    assert pod["metadata"]["annotations"] == {"workspace.kaito.io/revision": "3"}
    spec = pod["spec"]
    assert spec["containers"] == TEMPLATE["spec"]["containers"]
    assert spec["tolerations"][0] == {"key": "dedicated", "operator": "Exists"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    keys = [e["key"] for e in term["matchExpressions"]]
    assert keys == ["zone", "apps", "kaito.sh/workspace", "kaito.sh/workspacenamespace"]
    assert "podAntiAffinity" in spec["affinity"]


def test_a_template_replica_of_an_inferenceset_carries_the_sets_label() -> None:
    def pod_labels(inference_set: str | None) -> dict[str, str]:
        sts = template_sts(1, inference_set)
        assert sts["spec"]["selector"] == {"matchLabels": {"kaito.sh/workspace": "custom"}}
        labels: dict[str, str] = sts["spec"]["template"]["metadata"]["labels"]
        return labels

    assert pod_labels("phi")["inferenceset.kaito.sh/created-by"] == "phi"
    assert "inferenceset.kaito.sh/created-by" not in pod_labels(None)
    assert TEMPLATE["metadata"]["labels"] == {"app": "mine"}, "the template is not modified"


def test_an_unusable_template_is_named() -> None:
    assert template_problem(TEMPLATE) is None
    assert template_problem({}) == (
        "inference.template.spec: a pod template needs a spec with its containers"
    )
    problem = template_problem({"spec": {"containers": []}})
    assert problem is not None and problem.startswith("inference.template.spec.containers")
    problem = template_problem({"spec": {"containers": [{}], "tolerations": {"a": 1}}})
    assert problem == "inference.template.spec.tolerations: expected a list"


def workspace(resource: dict[str, Any]) -> Any:
    doc = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "custom", "namespace": "default"},
        "resource": {"labelSelector": {"matchLabels": {"apps": "custom"}}, **resource},
        "inference": {"template": TEMPLATE},
    }
    return parse_workspace(doc), plan_workspace(doc)


def test_a_template_needs_count_nodes_of_its_instance_type() -> None:
    ws, plan = workspace({"instanceType": "Standard_NC12s_v3", "count": 2})
    assert node_needs(ws, plan) == NodeNeeds(2, 2, "Standard_NC12s_v3")
    ws, plan = workspace({})
    assert node_needs(ws, plan) == NodeNeeds(1, 0, None)  # bring-your-own nodes only
    ws, plan = workspace({"instanceType": "Standard_Nope"})
    with pytest.raises(SpecError) as err:
        node_needs(ws, plan)
    assert err.value.field == "resource.instanceType"
