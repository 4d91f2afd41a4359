"""Chaos trials at the operator's edges: a misbehaving cloud, and bad input written by others."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.chaos.harness import (
    Obj,
    Trial,
    apply_all,
    condition,
    final_state,
    get_list,
    seed_workspace,
    wait_final,
    wait_gone,
    wait_no_leaks,
)
from tests.chaos.trials import Figures, count_tracebacks, workspace_names
from tests.e2e.conftest import Cluster, hack_cluster
from tests.e2e.controllers.conftest import Operator

AZURE_FAULTS = ("throttle", "server_error", "lro_failed", "stuck_lro", "no_join")
# what a Workspace may say while the cloud misbehaves: each names the cause
EXPLAINED = frozenset(
    {
        "Creating",
        "Recreating",
        "Deleting",
        "Throttled",
        "AzureServerError",
        "OperationInProgress",
        "InsufficientCapacity",
        "ProvisioningFailed",
        "AwaitingNode",
        "AwaitingRegistration",
        "Launching",
    }
)


def azure_fault_storm(
    cluster: Cluster,
    namespace: str,
    arm: Any,
    loop: Any,
    op: Operator,
    trial: Trial,
    workspaces: int,
    faults: int,
) -> Figures:
    """Random ARM faults at random moments of a rollout; then everything is deleted.

    A Workspace either succeeds or explains itself (its ResourceReady condition names the
    Azure cause); the calls per pool stay bounded; after the delete no pool, claim or node
    is left.
    """
    fig = Figures(trials=1, workspaces=workspaces)
    names = workspace_names("az", workspaces)
    docs = [seed_workspace(n) for n in names]
    for i, doc in enumerate(docs):
        apply_all(cluster, namespace, [doc])
        if i < faults:
            kind = trial.rng.choice(AZURE_FAULTS)
            options: dict[str, Any] = {}
            if kind == "throttle":
                options = {
                    "count": trial.rng.randint(1, 12),
                    "retry_after": trial.rng.choice([0, 1, 3]),
                }
            elif kind == "server_error":
                options = {"count": trial.rng.randint(1, 8)}
            loop.run(arm.add_fault(kind, **options))
            trial.say(f"created {doc['metadata']['name']}; fault {kind} {options}")
            fig.faults += 1
        time.sleep(trial.rng.uniform(0.0, 1.5))
    # long enough for a node that never joins to be replaced (registration timeout 20 s) and
    # a failed pool to be recreated; a pool whose create never ends stays "Creating"
    deadline = time.monotonic() + 60
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        items = {w["metadata"]["name"]: w for w in get_list(cluster, "workspaces", "-n", namespace)}
        states = {n: _azure_state(items.get(n)) for n in names}
        if all(s == "Succeeded" for s in states.values()):
            break
        time.sleep(2)
    trial.say(f"after the storm: {states}")
    unexplained = {
        n: s for n, s in states.items() if not (s == "Succeeded" or s.startswith("Explained"))
    }
    assert not unexplained, f"{trial.name} (seed {trial.seed}): unexplained {unexplained}"
    fig.missed_final_states = sum(1 for s in states.values() if s != "Succeeded")
    state = loop.run(arm.state())
    per_pool: dict[str, int] = {}
    creates: dict[str, int] = {}
    for event in state["log"]:
        if event["pool"]:
            per_pool[event["pool"]] = per_pool.get(event["pool"], 0) + 1
            if event["method"] == "PUT" and event["status"] in (200, 201):
                creates[event["pool"]] = creates.get(event["pool"], 0) + 1
    trial.say(
        f"ARM calls per pool: max {max(per_pool.values(), default=0)}; "
        f"creates per pool: max {max(creates.values(), default=0)}"
    )
    assert max(creates.values(), default=0) <= 3, creates
    assert max(per_pool.values(), default=0) <= 120, per_pool
    loop.run(arm.clear_faults())
    cluster.kubectl("delete", "workspaces", "--all", "-n", namespace, "--wait=false")
    wait_gone(cluster, namespace, timeout=180, trial=trial)
    fig.leaks += wait_no_leaks(cluster, namespace, timeout=60, trial=trial)
    pools = loop.run(arm.state())["pools"]
    trial.say(f"{len(pools)} agent pool(s) left")
    fig.leaks += len(pools)
    assert not pools, f"{trial.name} (seed {trial.seed}): leaked pools {list(pools)}"
    fig.tracebacks = count_tracebacks(trial, op)
    return fig


def _azure_state(ws: Obj | None) -> str:
    if ws is None:
        return "missing"
    if final_state(ws) == "Succeeded":
        return "Succeeded"
    ready = condition(ws, "ResourceReady") or {}
    reason, message = str(ready.get("reason") or ""), str(ready.get("message") or "")
    if reason in EXPLAINED and message:
        return f"Explained {reason}: {message[:80]}"
    return f"Unexplained {reason}: {message[:80]}"


BAD_CONFIGS = {
    "not-yaml": {"inference_config.yaml": "vllm: [unclosed"},
    "a-list": {"inference_config.yaml": "- 1\n- 2\n"},
    "no-key": {"something-else.yaml": "vllm: {}"},
    "vllm-a-string": {"inference_config.yaml": "vllm: text"},
    "wrong-types": {
        "inference_config.yaml": "vllm:\n  max-model-len: abc\n  gpu-memory-utilization: [1]\n"
    },
    "huge": {"inference_config.yaml": "vllm:\n  x: '" + "y" * 600_000 + "'\n"},
}


def bad_input_at_every_edge(
    cluster: Cluster, namespace: str, op: Operator, trial: Trial
) -> Figures:
    """Malformed ConfigMaps, odd NodeClaims and Nodes written by others, huge annotations."""
    fig = Figures(trials=1)
    docs: list[Obj] = []
    for name, data in BAD_CONFIGS.items():
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cfg-{name}"},
                "data": data,
            }
        )
        ws = seed_workspace(f"cfg-{name}")
        ws["inference"]["config"] = f"cfg-{name}"
        docs.append(ws)
    huge = seed_workspace("huge-annotations")
    huge["metadata"]["annotations"] = {f"example.com/a{i}": "z" * 60_000 for i in range(4)}
    docs.append(huge)
    docs.append(seed_workspace("control"))
    for doc in docs:  # create, not apply: apply's last-applied annotation would double them
        cluster.kubectl("create", "-n", namespace, "-f", "-", stdin=json.dumps(doc))
    fig.faults += len(BAD_CONFIGS) + 1
    trial.say(f"{len(BAD_CONFIGS)} malformed ConfigMaps, a Workspace with 240 KB of annotations")
    claims = _foreign_claims(namespace)
    nodes = _foreign_nodes(namespace)
    for obj in [*claims, *nodes]:
        cluster.kubectl("create", "-f", "-", stdin=json.dumps(obj))
    cluster.kubectl(
        "patch", "nodeclaim", claims[0]["metadata"]["name"], "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"conditions": [{"type": "Ready", "status": "Maybe",
                                                     "lastTransitionTime": "2026-01-01T00:00:00Z",
                                                     "reason": "X", "message": ""}]}}),
        check=False,
    )  # fmt: skip
    fig.faults += len(claims) + len(nodes)
    trial.say(f"{len(claims)} odd NodeClaims and {len(nodes)} odd Nodes written by someone else")
    names = [f"cfg-{n}" for n in BAD_CONFIGS] + ["huge-annotations", "control"]
    states = wait_final(cluster, namespace, names, timeout=120, trial=trial)
    assert states["control"] == "Succeeded"
    assert states["huge-annotations"] == "Succeeded"
    for name in BAD_CONFIGS:
        trial.say(f"cfg-{name}: {states[f'cfg-{name}']}")
    time.sleep(3)
    fig.tracebacks = count_tracebacks(trial, op)
    assert fig.tracebacks == 0
    assert op.metric("controller_runtime_reconcile_panics_total") == 0
    for obj in [*claims, *nodes]:
        kind = obj["kind"].lower()
        name = obj["metadata"]["name"]
        cluster.kubectl(
            "patch",
            kind,
            name,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        cluster.kubectl("delete", kind, name, "--ignore-not-found", "--wait=false", check=False)
    cluster.kubectl("delete", "workspaces", "--all", "-n", namespace, "--wait=false")
    wait_gone(cluster, namespace, timeout=120, trial=trial)
    return fig


def _foreign_claims(namespace: str) -> list[Obj]:
    def claim(
        name: str, labels: dict[str, str], spec: Obj, annotations: dict[str, str] | None = None
    ) -> Obj:
        meta: Obj = {"name": name, "labels": {"karpenter.sh/nodepool": "kaito", **labels}}
        if annotations:
            meta["annotations"] = annotations
        return {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": meta,
            "spec": spec,
        }

    ref = {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"}
    owner = {"kaito.sh/workspace": "nobody", "kaito.sh/workspacenamespace": namespace}
    sku = [{"key": "node.kubernetes.io/instance-type", "operator": "In",
            "values": ["Standard_NC6s_v3"]}]  # fmt: skip
    nope = [{"key": "node.kubernetes.io/instance-type", "operator": "In",
             "values": ["Standard_Nope"]}]  # fmt: skip
    anything = [{"key": "node.kubernetes.io/instance-type", "operator": "Exists"}]
    huge = {f"example.com/n{i}": "q" * 60_000 for i in range(4)}
    return [
        claim(f"odd-orphan-{namespace}", owner, {"nodeClassRef": ref, "requirements": sku}),
        claim(f"odd-norequirements-{namespace}", owner, {"nodeClassRef": ref, "requirements": []}),
        claim(
            f"odd-unknownsku-{namespace}",
            {},
            {
                "nodeClassRef": ref,
                "requirements": nope,
                "resources": {"requests": {"storage": "3Ti"}},
            },
        ),
        claim(
            f"odd-huge-{namespace}", owner, {"nodeClassRef": ref, "requirements": anything}, huge
        ),
    ]


def _foreign_nodes(namespace: str) -> list[Obj]:
    out = []
    for suffix, labels, notes in (
        ("claimless", {"kaito.sh/nodeclaim": "no-such-claim", "kaito.sh/workspace": "nobody",
                       "kaito.sh/workspacenamespace": namespace}, {}),
        ("huge", {"kaito.sh/workspace": "control", "kaito.sh/workspacenamespace": namespace},
         {f"example.com/h{i}": "w" * 60_000 for i in range(4)}),
        ("nogpu", {"apps": "odd"}, {}),
        # matches the seed Workspaces' selector: read as a bring-your-own node
        ("kilogpu", {"apps": "phi-3", "nvidia.com/gpu.count": "lots"}, {}),
    ):  # fmt: skip
        name = f"odd-{suffix}-{namespace}"
        node: Obj = hack_cluster.fake_node(name, "Standard_NC6s_v3", 0, 6, 112, labels)
        if notes:
            node["metadata"]["annotations"] = notes
        if suffix == "kilogpu":  # a quantity nobody expects (found a reconcile crash)
            for key in ("capacity", "allocatable"):
                node["status"][key]["nvidia.com/gpu"] = "1k"
        out.append(node)
    return out
