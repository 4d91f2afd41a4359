"""The chaos trials. Each takes its environment and a :class:`Trial`, and returns its figures.

Sizes are arguments: tests/chaos runs them small and bounded, bench/chaos at full size.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.harness import (
    Obj,
    Trial,
    apply_all,
    audit_events,
    audit_time,
    check_claims_and_nodes,
    get_list,
    in_thread,
    proxied_kubeconfig,
    seed_workspace,
    tracebacks,
    wait_final,
    wait_gone,
    wait_no_leaks,
)
from tests.e2e.conftest import Cluster, hack_cluster
from tests.e2e.controllers.conftest import Operator


@dataclass
class Figures:
    """What a trial did and found; the suite adds them up for the README."""

    trials: int = 0
    workspaces: int = 0
    faults: int = 0
    leaks: int = 0
    duplicates: int = 0
    missed_final_states: int = 0
    tracebacks: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, other: Figures) -> None:
        for name in ("trials", "workspaces", "faults", "leaks", "duplicates"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.missed_final_states += other.missed_final_states
        self.tracebacks += other.tracebacks
        self.notes += other.notes


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:02d}" for i in range(n)]


def count_tracebacks(trial: Trial, *ops: Operator) -> int:
    """Tracebacks in the operators' logs, the first two printed with the trial's story."""
    found = tracebacks(*ops)
    for text in found[:2]:
        trial.say(f"TRACEBACK in the operator's log:\n{text}")
    return len(found)


def _kill_and_restart(op: Operator, trial: Trial, what: str) -> None:
    trial.say(f"kill -9 the operator ({what})")
    op.kill()
    op.start()
    trial.say("operator restarted")


def kill_during_rollout_and_delete(
    cluster: Cluster, namespace: str, op: Operator, trial: Trial, workspaces: int
) -> Figures:
    """kill -9 at a random moment of a rollout, then again during a mass delete."""
    fig = Figures(trials=1, workspaces=workspaces)
    names = _names("kill", workspaces)
    apply_all(cluster, namespace, [seed_workspace(n) for n in names])
    trial.say(f"created {workspaces} Workspaces")
    time.sleep(trial.rng.uniform(0.0, 2.0))  # KWOK rolls a Workspace out in about 2 s
    _kill_and_restart(op, trial, "mid-rollout")
    fig.faults += 1
    wait_final(cluster, namespace, names, timeout=180, trial=trial)
    dup, leaks = check_claims_and_nodes(cluster, namespace, trial)
    fig.duplicates += dup
    fig.leaks += leaks
    cluster.kubectl("delete", "workspaces", "--all", "-n", namespace, "--wait=false")
    trial.say("deleted every Workspace")
    time.sleep(trial.rng.uniform(0.0, 1.5))
    _kill_and_restart(op, trial, "mid-delete")
    fig.faults += 1
    wait_gone(cluster, namespace, timeout=180, trial=trial)
    fig.leaks += wait_no_leaks(cluster, namespace, timeout=60, trial=trial)
    return fig


def _compact_etcd(cluster: Cluster) -> int:
    import base64  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    def post(path: str, body: Obj) -> Obj:
        req = urllib.request.Request(
            cluster.etcd_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            result: Obj = json.loads(resp.read())
            return result

    head = post("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
    revision = int(head["header"]["revision"])
    post("/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


def control_plane_faults(
    cluster: Cluster,
    namespace: str,
    make_operator: Any,
    trial: Trial,
    workspaces: int,
) -> Figures:
    """Mid-rollout: the apiserver restarts, etcd is compacted, the operator's watches are cut.

    The operator talks to the apiserver through a TCP proxy, so its connections can be cut
    (reset) or blackholed without touching anyone else's.
    """
    fig = Figures(trials=1, workspaces=workspaces)
    names = _names("cp", workspaces)
    with (
        tempfile.TemporaryDirectory() as tmp,
        proxied_kubeconfig(cluster, Path(tmp)) as (
            kubeconfig,
            proxy,
            loop,
        ),
    ):
        op: Operator = make_operator(kubeconfig)
        try:
            faults = ["apiserver-restart", "etcd-compaction", "watch-reset", "watch-blackhole"]
            trial.rng.shuffle(faults)
            docs = [seed_workspace(n) for n in names]
            half = len(docs) // 2
            apply_all(cluster, namespace, docs[:half])
            trial.say(f"created {half} Workspaces; faults in order: {', '.join(faults)}")
            for i, fault in enumerate(faults):
                time.sleep(trial.rng.uniform(0.5, 3.0))
                if fault == "apiserver-restart":
                    cluster.restart("kube-apiserver")
                elif fault == "etcd-compaction":
                    trial.say(f"etcd compacted at revision {_compact_etcd(cluster)}")
                elif fault == "watch-reset":
                    in_thread(loop, proxy.refuse)
                    time.sleep(trial.rng.uniform(0.5, 2.0))
                    in_thread(loop, proxy.heal)
                else:
                    in_thread(loop, proxy.blackhole)
                trial.say(f"fault {fault}")
                fig.faults += 1
                if i == 1:
                    apply_all(cluster, namespace, docs[half:])
                    trial.say(f"created {len(docs) - half} more Workspaces")
            states = wait_final(cluster, namespace, names, timeout=240, trial=trial)
            fig.missed_final_states = sum(1 for s in states.values() if s != "Succeeded")
            dup, leaks = check_claims_and_nodes(cluster, namespace, trial)
            fig.duplicates, fig.leaks = dup, leaks
            cluster.kubectl("delete", "workspaces", "--all", "-n", namespace, "--wait=false")
            wait_gone(cluster, namespace, timeout=180, trial=trial)
            fig.leaks += wait_no_leaks(cluster, namespace, timeout=60, trial=trial)
            fig.tracebacks = count_tracebacks(trial, op)
        finally:
            op.stop()
    return fig


def leader_failover(
    cluster: Cluster,
    namespace: str,
    make_operator: Any,
    audit_log: Path,
    trial: Trial,
    workspaces: int,
    freeze: bool,
) -> Figures:
    """Two replicas under load; the leader is killed (or frozen, then woken) mid-rollout.

    Failover must come within the lease duration plus the standby's retry period, and the
    apiserver's audit log must show no write from the old leader after the new one acquired.
    """
    fig = Figures(trials=1, workspaces=workspaces, faults=1)
    replicas: list[Operator] = [make_operator(), make_operator()]
    try:
        leader = _wait_for_leader(replicas, trial)
        standby = replicas[1 - replicas.index(leader)]
        old_identity = _holder(cluster, namespace)
        names = _names("ha", workspaces)
        apply_all(cluster, namespace, [seed_workspace(n) for n in names])
        trial.say(f"created {workspaces} Workspaces under leader {old_identity}")
        time.sleep(trial.rng.uniform(1.0, 5.0))
        assert leader.proc is not None
        if freeze:
            os.kill(leader.proc.pid, signal.SIGSTOP)
            trial.say("SIGSTOP the leader")
        else:
            leader.kill()
            trial.say("kill -9 the leader")
        hit = time.time()
        deadline = time.monotonic() + 60
        while _holder(cluster, namespace) in (old_identity, ""):
            assert time.monotonic() < deadline, "the standby never took over"
            time.sleep(0.2)
        new_identity = _holder(cluster, namespace)
        took = time.time() - hit
        trial.say(f"{new_identity} took over {took:.1f}s after the fault")
        fig.notes.append(f"failover {took:.1f}s")
        assert took <= 15 + 2 * 2.2 + 2, f"failover took {took:.1f}s"
        if freeze:
            time.sleep(1.0)
            os.kill(leader.proc.pid, signal.SIGCONT)
            trial.say("SIGCONT the old leader")
            try:
                code = leader.proc.wait(30)
            except Exception:
                code = None
            trial.say(f"the old leader exited with {code}")
            assert code == 1, "the old leader must stop when it finds its Lease gone"
        states = wait_final(cluster, namespace, names, timeout=240, trial=trial)
        fig.missed_final_states = sum(1 for s in states.values() if s != "Succeeded")
        dup, leaks = check_claims_and_nodes(cluster, namespace, trial)
        fig.duplicates, fig.leaks = dup, leaks
        late = _writes_after_takeover(audit_log, namespace, old_identity, new_identity)
        trial.say(f"{len(late)} write(s) by the old leader after the takeover")
        assert not late, f"old leader wrote after the takeover: {late[:3]}"
        cluster.kubectl("delete", "workspaces", "--all", "-n", namespace, "--wait=false")
        wait_gone(cluster, namespace, timeout=180, trial=trial)
        fig.leaks += wait_no_leaks(cluster, namespace, timeout=60, trial=trial)
        fig.tracebacks = count_tracebacks(trial, standby)
    finally:
        for op in replicas:
            if op.proc is not None and op.proc.poll() is None:
                os.kill(op.proc.pid, signal.SIGCONT)
            op.stop()
    return fig


def _holder(cluster: Cluster, namespace: str) -> str:
    proc = cluster.kubectl(
        "get", "lease", "kaito-operator", "-n", namespace, "-o", "json", check=False
    )
    if proc.returncode != 0:
        return ""
    return str(json.loads(proc.stdout)["spec"].get("holderIdentity") or "")


def _wait_for_leader(replicas: list[Operator], trial: Trial) -> Operator:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for op in replicas:
            if op.metric("leader_election_master_status") == 1:
                trial.say(f"replica {replicas.index(op)} leads")
                return op
        time.sleep(0.2)
    raise AssertionError("no replica became the leader")


def _writes_after_takeover(audit_log: Path, namespace: str, old: str, new: str) -> list[str]:
    events = audit_events(audit_log)
    acquired = [
        e
        for e in events
        if e.get("userAgent", "").endswith(new)
        and (e.get("objectRef") or {}).get("resource") == "leases"
        and (e.get("objectRef") or {}).get("namespace") == namespace
    ]
    assert acquired, "the new leader's Lease write is not in the audit log"
    since = audit_time(acquired[0])
    return [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name')} "
        f"at {e['requestReceivedTimestamp']}"
        for e in events
        if e.get("userAgent", "").endswith(old) and audit_time(e) >= since
    ]


def lost_nothing(cluster: Cluster) -> None:
    """Sanity: the cluster's own components are still up after the trial."""
    if cluster.directory is not None:
        state = hack_cluster.ClusterState.load(cluster.directory)
        assert state is not None
        assert not hack_cluster.healthy(state), hack_cluster.healthy(state)


def workspaces_in(cluster: Cluster, namespace: str) -> list[Obj]:
    return get_list(cluster, "workspaces", "-n", namespace)


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
    names = _names("az", workspaces)
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
    from tests.chaos.harness import condition, final_state  # noqa: PLC0415

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
    from tests.e2e.conftest import hack_cluster as hc  # noqa: PLC0415

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
        node: Obj = hc.fake_node(f"odd-{suffix}-{namespace}", "Standard_NC6s_v3", 0, 6, 112, labels)
        if notes:
            node["metadata"]["annotations"] = notes
        if suffix == "kilogpu":  # a quantity nobody expects (found a reconcile crash)
            for key in ("capacity", "allocatable"):
                node["status"][key]["nvidia.com/gpu"] = "1k"
        out.append(node)
    return out
