"""The manager against a real apiserver: leader election, zero-request idling, probes, drain."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from kaito.runtime import LeaderElection, Manager, Request, Result
from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.gvk import CONFIGMAP, EVENT, LEASE

from ..conftest import REPO, Cluster
from .conftest import eventually

pytestmark = pytest.mark.e2e


async def noop(_: Request) -> Result:
    return Result()


def start_leader_process(cluster: Cluster, namespace: str, identity: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.e2e.runtime.leader_proc",
            str(cluster.kubeconfig),
            namespace,
            "lease",
            identity,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def test_one_leader_and_takeover_after_kill(
    cluster: Cluster, client_config: ClientConfig, client: Client, namespace: str
) -> None:
    proc = start_leader_process(cluster, namespace, "process-a")
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)  # type: ignore[union-attr]
        assert line.strip() == "LEADING"
        standby = Manager(
            client_config,
            metrics_port=None,
            health_port=None,
            handle_signals=False,
            leader_election=LeaderElection(namespace, "lease", identity="manager-b"),
        )
        reconciled: list[Request] = []

        async def record(req: Request) -> Result:
            reconciled.append(req)
            return Result()

        standby.controller("b", record).watches(CONFIGMAP, namespace=namespace)
        run = asyncio.create_task(standby.run())
        try:
            await asyncio.sleep(5)  # several retry periods: b must stay a standby
            assert not standby.is_leader and not standby.ready.is_set()
            assert reconciled == []
            lease = await client.get(LEASE, namespace, "lease")
            assert lease["spec"]["holderIdentity"] == "process-a"
            status = standby.metrics.registry.get_sample_value(
                "leader_election_master_status", {"name": "lease"}
            )
            assert status == 0

            proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.wait_for(standby.ready.wait(), 30)
            took = time.monotonic() - killed
            # the lease had to expire first: 15 s from when b saw a's last renewal (≤ 2 s
            # before the kill; b sees it within one jittered retry period, at most 2 x 2.2 s),
            # and b wakes at that expiry rather than at its next poll
            assert 15 - 2 - 0.5 <= took <= 15 + 2 * 2.2 + 1, took
            lease = await client.get(LEASE, namespace, "lease")
            assert lease["spec"]["holderIdentity"] == "manager-b"
            assert lease["spec"]["leaseTransitions"] == 1
            await eventually("b to reconcile", lambda: reconciled)
        finally:
            standby.stop()
            await run
        lease = await client.get(LEASE, namespace, "lease")
        assert not lease["spec"].get("holderIdentity")  # released on shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def test_noop_reconcile_loop_issues_zero_requests(
    client_config: ClientConfig, client: Client, namespace: str
) -> None:
    for i in range(3):
        await client.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"c{i}", "namespace": namespace},
            }
        )
    mgr = Manager(client_config, metrics_port=0, health_port=0, handle_signals=False)
    runs = 0

    async def loop_forever(req: Request) -> Result:
        nonlocal runs
        runs += 1
        assert mgr.cache.get(CONFIGMAP, req.namespace, req.name) is not None
        mgr.cache.list(CONFIGMAP, namespace=namespace)
        return Result(requeue_after=0.02)

    mgr.controller("idle", loop_forever, workers=2).watches(CONFIGMAP, namespace=namespace)
    run = asyncio.create_task(mgr.run())
    try:
        await asyncio.wait_for(mgr.ready.wait(), 30)
        await asyncio.sleep(0.2)
        before, runs_before = mgr.metrics.requests_total(), runs
        assert before > 0  # discovery + list + watch were counted
        await asyncio.sleep(2)
        assert runs - runs_before >= 50  # the loop really ran
        assert mgr.metrics.requests_total() == before

        async with aiohttp.ClientSession() as http:
            for endpoint in ("healthz", "readyz"):
                async with http.get(mgr.url(endpoint)) as resp:
                    assert resp.status == 200
            async with http.get(mgr.url("metrics")) as resp:
                text = await resp.text()
        for name in (
            "controller_runtime_reconcile_total",
            "workqueue_depth",
            "rest_client_requests_total",
            "controller_runtime_active_workers",
            "workqueue_longest_running_processor_seconds",
        ):
            assert f"\n{name}{{" in text, name
    finally:
        mgr.stop()
        await run


async def test_sigterm_drains_in_flight_reconcile(
    client_config: ClientConfig, client: Client, namespace: str
) -> None:
    await client.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "slow", "namespace": namespace},
        }
    )
    mgr = Manager(client_config, metrics_port=None, health_port=None)
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow(req: Request) -> Result:
        if req.name == "slow":
            started.set()
            await asyncio.sleep(0.5)
            finished.set()
        return Result()

    mgr.controller("slow", slow).watches(CONFIGMAP, namespace=namespace)
    run = asyncio.create_task(mgr.run())
    await asyncio.wait_for(started.wait(), 30)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(run, 10)
    assert finished.is_set()  # the reconcile in flight was allowed to finish


def test_runtime_imports_no_other_kaito_module() -> None:
    code = (
        "import sys, kaito.runtime; "
        "bad = sorted(m for m in sys.modules if m.startswith('kaito.') "
        "and not m.startswith('kaito.runtime')); print(bad)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(REPO, "src"))}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == "[]", out.stderr


async def test_event_recorder_aggregates_repeats(
    client_config: ClientConfig, client: Client, namespace: str
) -> None:
    mgr = Manager(client_config, metrics_port=None, health_port=None, handle_signals=False)
    recorder = mgr.event_recorder("kaito-test")
    obj = await client.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "o", "namespace": namespace}}
    )
    for _ in range(3):
        recorder.event(obj, "Normal", "Provisioned", "node is ready")
    recorder.event(obj, "Warning", "Failed", "something else")
    await recorder.flush()
    events = {e["reason"]: e for e in await client.list(EVENT, namespace)}
    assert set(events) == {"Provisioned", "Failed"}
    assert events["Provisioned"]["count"] == 3
    assert events["Provisioned"]["involvedObject"]["uid"] == obj.uid  # type: ignore[union-attr]
    assert events["Provisioned"]["source"]["component"] == "kaito-test"
    assert events["Failed"]["type"] == "Warning" and events["Failed"]["count"] == 1
    with pytest.raises(ValueError, match="Normal or Warning"):
        recorder.event(obj, "Info", "X", "y")
    await recorder.close()
    await mgr.client.close()
