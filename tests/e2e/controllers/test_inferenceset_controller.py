"""The InferenceSet API and controller on the real control plane, KWOK playing the GPU nodes.

Upstream's InferenceSet manifests are applied unchanged (server-side dry run: full validation
with the CRD's schema, defaults and CEL, nothing stored).  A set then keeps its replica
Workspaces through scale up and down (the scale subresource, as an HPA would use it), rolls a
template change one replica at a time, respects nodeCountLimit, owns one Service whose
endpoints are the replicas' leader pods, and makes the HPA its annotations ask for.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import REPO, Cluster
from .conftest import Operator, condition, get_json, kaito_status, wait_until

pytestmark = pytest.mark.e2e

UPSTREAM = REPO / "tests" / "fixtures" / "upstream" / "inferenceset"
CREATED_BY = "inferenceset.kaito.sh/created-by"


@pytest.mark.parametrize("path", sorted(UPSTREAM.glob("*.yaml")), ids=lambda p: p.name)
def test_upstream_inferenceset_manifests_apply_unchanged(
    cluster: Cluster, crds: None, path: Path
) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc["kind"] != "InferenceSet":
            continue  # the llama example's Secret holds a placeholder Kubernetes itself refuses
        out = cluster.kubectl(
            "apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=yaml.safe_dump(doc)
        )
        applied = yaml.safe_load(out.stdout)
        assert applied["kind"] == "InferenceSet"
        spec = applied["spec"]
        assert spec["updateStrategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1},
        }
        assert spec["replicas"] == doc["spec"].get("replicas", 1)


def inference_set(name: str, replicas: int, **spec: Any) -> dict[str, Any]:
    """Derived from upstream's examples/inference/kaito_inferenceset_phi_4_mini.yaml."""
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "InferenceSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "labelSelector": {"matchLabels": {"apps": name}},
            "template": {
                "inference": {"preset": {"accessMode": "public", "name": "phi-4-mini-instruct"}},
                "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
            },
            **spec,
        },
    }


@pytest.fixture
def ns(cluster: Cluster, namespace: str, operator: Operator) -> Iterator[str]:
    """A namespace whose sets (and so their replicas) are gone before the test ends."""
    yield namespace
    cluster.kubectl("-n", namespace, "delete", "inferencesets", "--all", "--wait=false")
    wait_until(
        "replicas finalized",
        lambda: not get_json(cluster, "workspaces", "-n", namespace)["items"],
        timeout=90,
    )


def replicas(cluster: Cluster, ns: str, name: str) -> dict[str, dict[str, Any]]:
    items = get_json(cluster, "workspaces", "-n", ns, "-l", f"{CREATED_BY}={name}")["items"]
    return {ws["metadata"]["name"]: ws for ws in items}


def ready(ws: dict[str, Any]) -> bool:
    cond = condition(ws, "WorkspaceSucceeded")
    return bool(cond and cond["status"] == "True")


def settled(cluster: Cluster, ns: str, name: str, count: int) -> dict[str, Any] | None:
    """The set once `count` replicas exist, none deleting, all ready and status says so."""
    iset = cluster.get("inferenceset", name, ns)
    reps = replicas(cluster, ns, name)
    if iset is None or len(reps) != count:
        return None
    if any(ws["metadata"].get("deletionTimestamp") or not ready(ws) for ws in reps.values()):
        return None
    status = iset.get("status") or {}
    if (status.get("replicas"), status.get("readyReplicas")) != (count, count):
        return None
    return iset


def claims(cluster: Cluster, ns: str, names: list[str]) -> list[dict[str, Any]]:
    found = []
    for name in names:
        selector = f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={ns}"
        found += get_json(cluster, "nodeclaims", "-l", selector)["items"]
    return found


def test_replicas_scale_with_the_scale_subresource_and_release_their_nodes(
    cluster: Cluster, ns: str
) -> None:
    cluster.apply(inference_set("phi", 2), ns)
    iset = wait_until("2 replicas ready", lambda: settled(cluster, ns, "phi", 2), timeout=60)
    assert sorted(replicas(cluster, ns, "phi")) == ["phi-0", "phi-1"]
    status = iset["status"]
    assert status["selector"] == f"{CREATED_BY}=phi"
    assert condition(iset, "InferenceSetReady")["status"] == "True"  # type: ignore[index]
    ws = replicas(cluster, ns, "phi")["phi-0"]
    owner = ws["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("InferenceSet", "phi", True)
    assert ws["resource"]["labelSelector"] == {"matchLabels": {"apps": "phi"}}
    assert ws["resource"]["instanceType"] == "Standard_NC24ads_A100_v4"

    # the replicas' pods carry the scale selector; the set's Service finds their leaders
    pods = get_json(cluster, "pods", "-n", ns, "-l", f"{CREATED_BY}=phi")["items"]
    assert sorted(p["metadata"]["name"] for p in pods) == ["phi-0-0", "phi-1-0"]
    svc = cluster.get("service", "phi", ns)
    assert svc is not None
    assert svc["spec"]["selector"] == {CREATED_BY: "phi", "apps.kubernetes.io/pod-index": "0"}
    assert svc["spec"]["ports"][0]["port"] == 80 and svc["spec"]["ports"][0]["targetPort"] == 5000
    # the Service's fields are the operator's: a hand edit is set back (as for a Workspace's)
    cluster.kubectl(
        "-n", ns, "patch", "service", "phi", "--type=merge",
        "-p", '{"spec": {"selector": {"apps.kubernetes.io/pod-index": "1"}}}',
    )  # fmt: skip
    leaders = {CREATED_BY: "phi", "apps.kubernetes.io/pod-index": "0"}

    def set_back() -> bool:
        live = cluster.get("service", "phi", ns)
        return live is not None and live["spec"]["selector"] == leaders

    wait_until("the edited Service set back", set_back, timeout=30)

    def endpoints() -> list[str] | None:
        slices = get_json(
            cluster, "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=phi"
        )["items"]
        names = sorted(
            e["targetRef"]["name"]
            for s in slices
            for e in s.get("endpoints") or ()
            if (e.get("conditions") or {}).get("ready")
        )
        return names if names == ["phi-0-0", "phi-1-0"] else None

    wait_until("the Service's endpoints are both leaders", endpoints, timeout=30)

    # kaito status shows the set and its replicas, read from the real API server
    lines = kaito_status(cluster, ns).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("INFERENCESET"))
    assert lines[header + 1].split()[:6] == ["phi", "2", "2", "2", "-", "phi-0(ready),phi-1(ready)"]

    # kubectl scale goes through the scale subresource, as the HPA does
    cluster.kubectl("-n", ns, "scale", "inferenceset", "phi", "--replicas=3")
    wait_until("3 replicas", lambda: settled(cluster, ns, "phi", 3), timeout=60)
    newest = "phi-2"
    assert len(claims(cluster, ns, [newest])) == 1
    scale = get_json(cluster, "inferenceset", "phi", "-n", ns, "--subresource=scale")
    assert scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == f"{CREATED_BY}=phi"

    cluster.kubectl("-n", ns, "scale", "inferenceset", "phi", "--replicas=1")
    wait_until("1 replica", lambda: settled(cluster, ns, "phi", 1), timeout=60)
    assert list(replicas(cluster, ns, "phi")) == ["phi-0"]  # the newest went first
    wait_until(
        "the removed replicas' nodes released",
        lambda: not claims(cluster, ns, ["phi-1", "phi-2"]),
        timeout=60,
    )
    events = get_json(cluster, "events", "-n", ns, "--field-selector", "reason=SuccessfulDelete")
    order = [
        e["message"]
        for e in sorted(events["items"], key=lambda e: e["metadata"]["creationTimestamp"])
    ]
    assert any("phi-2" in m for m in order) and any("phi-1" in m for m in order)

    cluster.kubectl("-n", ns, "scale", "inferenceset", "phi", "--replicas=0")
    wait_until("0 replicas", lambda: settled(cluster, ns, "phi", 0), timeout=60)


def test_a_template_change_rolls_one_replica_at_a_time(cluster: Cluster, ns: str) -> None:
    doc = inference_set("roll", 3)
    cluster.apply(doc, ns)
    wait_until("3 replicas ready", lambda: settled(cluster, ns, "roll", 3), timeout=60)
    before = {n: ws["metadata"]["uid"] for n, ws in replicas(cluster, ns, "roll").items()}

    # an adapter is a change a Workspace takes in place: same replicas, same nodes
    adapter = copy.deepcopy(doc)
    adapter["spec"]["template"]["inference"]["adapters"] = [
        {"source": {"name": "tone", "image": "registry.example.com/tone:1"}}
    ]
    cluster.apply(adapter, ns)

    def all_updated() -> bool:
        iset = settled(cluster, ns, "roll", 3)
        return bool(iset and iset["status"].get("updatedReplicas") == 3)

    wait_until("the adapter rolled out", all_updated, timeout=90)
    after = replicas(cluster, ns, "roll")
    assert {n: ws["metadata"]["uid"] for n, ws in after.items()} == before
    for ws in after.values():
        assert ws["inference"]["adapters"][0]["source"]["name"] == "tone"
    updates = get_json(cluster, "events", "-n", ns, "--field-selector", "reason=RollingUpdate")
    assert len(updates["items"]) == 3

    # an instance type a replica never becomes ready on: one replica is replaced, then the
    # rollout stops there (maxUnavailable 1) and the others keep serving
    broken = copy.deepcopy(adapter)
    broken["spec"]["template"]["resource"]["instanceType"] = "Standard_Nonexistent_v9"
    cluster.apply(broken, ns)

    def one_replaced() -> dict[str, dict[str, Any]] | None:
        reps = replicas(cluster, ns, "roll")
        live = {n: ws for n, ws in reps.items() if not ws["metadata"].get("deletionTimestamp")}
        moved = [
            ws
            for ws in live.values()
            if ws["resource"]["instanceType"] != "Standard_NC24ads_A100_v4"
        ]
        return live if len(live) == 3 and len(moved) == 1 else None

    live = wait_until("one replica replaced", one_replaced, timeout=60)
    time.sleep(5)  # several reconciles later, still only one
    live = one_replaced()
    assert live is not None, replicas(cluster, ns, "roll")
    assert sum(ready(ws) for ws in live.values()) == 2
    iset = cluster.get("inferenceset", "roll", ns)
    cond = condition(iset, "InferenceSetReady")
    assert cond is not None and cond["status"] == "False"
    assert "2/3 replicas ready" in cond["message"]

    # back to a good template: the broken replica is replaced again and all serve
    cluster.apply(adapter, ns)
    wait_until("recovered", all_updated, timeout=90)


def test_node_count_limit_caps_the_replicas(cluster: Cluster, ns: str) -> None:
    cluster.apply(inference_set("capped", 3, nodeCountLimit=2), ns)
    wait_until(
        "2 replicas ready",
        lambda: (
            len(replicas(cluster, ns, "capped")) == 2
            and all(ready(ws) for ws in replicas(cluster, ns, "capped").values())
        ),
        timeout=60,
    )

    def limited() -> dict[str, Any] | None:
        cond = condition(cluster.get("inferenceset", "capped", ns), "InferenceSetReady")
        return cond if cond and cond["reason"] == "NodeCountLimitReached" else None

    cond = wait_until("the limit is reported", limited, timeout=30)
    assert "nodeCountLimit 2 allows 2 replicas" in cond["message"]
    time.sleep(3)
    assert len(replicas(cluster, ns, "capped")) == 2
    assert len(claims(cluster, ns, list(replicas(cluster, ns, "capped")))) == 2


def test_autoscaling_annotations_make_an_hpa_whose_problems_show_on_the_set(
    cluster: Cluster, ns: str
) -> None:
    doc = inference_set("auto", 1)
    doc["metadata"]["annotations"] = {
        "scaledobject.kaito.sh/auto-provision": "true",
        "scaledobject.kaito.sh/metricName": "vllm:num_requests_waiting",
        "scaledobject.kaito.sh/threshold": "10",
    }
    doc["spec"]["nodeCountLimit"] = 4
    cluster.apply(doc, ns)
    hpa = wait_until("the HPA", lambda: cluster.get("hpa", "auto", ns), timeout=30)
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "name": "auto",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 4)
    assert spec["metrics"][0]["pods"]["metric"]["name"] == "vllm:num_requests_waiting"

    # this cluster has no custom metrics adapter: the HPA says so, and so does the set
    def reported() -> dict[str, Any] | None:
        cond = condition(cluster.get("inferenceset", "auto", ns), "AutoscalerReady")
        return cond if cond and cond["status"] == "False" else None

    cond = wait_until("AutoscalerReady=False", reported, timeout=60)
    assert cond["reason"] == "FailedGetPodsMetric"
    assert "custom.metrics.k8s.io" in cond["message"]

    # a bad annotation names itself; removing auto-provision removes the HPA
    cluster.kubectl(
        "-n",
        ns,
        "annotate",
        "inferenceset",
        "auto",
        "--overwrite",
        "scaledobject.kaito.sh/threshold=lots",
    )

    def invalid() -> dict[str, Any] | None:
        cond = condition(cluster.get("inferenceset", "auto", ns), "AutoscalerReady")
        return cond if cond and cond["reason"] == "InvalidAnnotation" else None

    cond = wait_until("InvalidAnnotation", invalid, timeout=30)
    assert "scaledobject.kaito.sh/threshold" in cond["message"] and "'lots'" in cond["message"]
    cluster.kubectl(
        "-n", ns, "annotate", "inferenceset", "auto", "scaledobject.kaito.sh/auto-provision-"
    )
    wait_until("the HPA removed", lambda: cluster.get("hpa", "auto", ns) is None, timeout=30)
    assert condition(cluster.get("inferenceset", "auto", ns), "AutoscalerReady") is None


def test_a_users_own_service_and_hpa_of_the_sets_name_are_left_alone(
    cluster: Cluster, ns: str
) -> None:
    """Objects without the set's label are outside its informers: it asks the API server."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "mine"},
            "spec": {"selector": {"app": "mine"}, "ports": [{"port": 8000}]},
        },
        ns,
    )
    cluster.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "mine"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
                "minReplicas": 1,
                "maxReplicas": 2,
            },
        },
        ns,
    )
    doc = inference_set("mine", 1)
    doc["metadata"]["annotations"] = {
        "scaledobject.kaito.sh/auto-provision": "true",
        "scaledobject.kaito.sh/threshold": "10",
    }
    cluster.apply(doc, ns)

    def refused() -> dict[str, Any] | None:
        iset = cluster.get("inferenceset", "mine", ns)
        cond, hpa = condition(iset, "InferenceSetReady"), condition(iset, "AutoscalerReady")
        if not (cond and cond["reason"] == "ReplicaRejected" and hpa):
            return None
        return iset

    iset = wait_until("the set names the Service and the HPA it found", refused, timeout=60)
    assert "Service mine already exists" in condition(iset, "InferenceSetReady")["message"]  # type: ignore[index]
    assert condition(iset, "AutoscalerReady")["reason"] == "HPAExists"  # type: ignore[index]
    svc, hpa = cluster.get("service", "mine", ns), cluster.get("hpa", "mine", ns)
    assert svc is not None and hpa is not None
    assert svc["spec"]["selector"] == {"app": "mine"} and not svc["metadata"].get("ownerReferences")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert not hpa["metadata"].get("ownerReferences")
    cluster.kubectl("-n", ns, "delete", "service,hpa", "mine")


def test_deleting_the_set_deletes_its_replicas_and_their_nodes(cluster: Cluster, ns: str) -> None:
    cluster.apply(inference_set("gone", 2), ns)
    wait_until("2 replicas ready", lambda: settled(cluster, ns, "gone", 2), timeout=60)
    names = list(replicas(cluster, ns, "gone"))
    cluster.kubectl("-n", ns, "delete", "inferenceset", "gone")
    wait_until("replicas gone", lambda: not replicas(cluster, ns, "gone"), timeout=60)
    wait_until("their nodes released", lambda: not claims(cluster, ns, names), timeout=60)
    wait_until("its Service collected", lambda: cluster.get("service", "gone", ns) is None)
