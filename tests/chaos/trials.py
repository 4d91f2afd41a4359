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
    in_thread,
    proxied_kubeconfig,
    seed_workspace,
    tracebacks,
    wait_final,
    wait_gone,
    wait_no_leaks,
)
from tests.e2e.conftest import Cluster
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


def workspace_names(prefix: str, n: int) -> list[str]:
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
    names = workspace_names("kill", workspaces)
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
    names = workspace_names("cp", workspaces)
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
        names = workspace_names("ha", workspaces)
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
        # the lease (15 s) counts from when the standby saw the last renewal, up to one
        # jittered retry period (2 x 2.2 s) after it; the standby wakes at that expiry; 2 s
        # for the apiserver and this poll under load
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
