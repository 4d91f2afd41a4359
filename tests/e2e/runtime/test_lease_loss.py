"""Losing the leader Lease stops every write at once (issue 18, defect 5).

A reconcile that keeps writing stands for the in-flight work of an old leader. Before the
fix the manager drained it for up to 30 s after losing the Lease, so its writes landed
beside the new leader's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any

import aiohttp
import pytest

from kaito.runtime import LeaderElection, LeadershipLost, Manager, Request, Result
from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.errors import ApiError, Fenced
from kaito.runtime.gvk import CONFIGMAP, LEASE
from kaito.runtime.objects import to_dict

from ..tcp_proxy import TcpProxy
from .conftest import eventually

pytestmark = pytest.mark.e2e


def configmap(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
    }


class Writer:
    """A reconciler that never returns: it bumps a counter in a ConfigMap every 50 ms."""

    def __init__(self, mgr: Manager, namespace: str, who: str) -> None:
        self.mgr, self.namespace, self.who = mgr, namespace, who
        self.written = 0

    async def __call__(self, request: Request) -> Result:
        while True:
            try:
                await self.mgr.client.patch(
                    CONFIGMAP,
                    self.namespace,
                    "counter",
                    {"data": {"writer": self.who, "n": str(self.written + 1)}},
                )
                self.written += 1
            except Fenced:
                raise
            except (ApiError, OSError, aiohttp.ClientError):
                pass  # the server is unreachable: keep trying, as a busy reconcile would
            await asyncio.sleep(0.05)


async def idle(_: Request) -> Result:
    return Result()


def manager(config: ClientConfig, namespace: str, identity: str) -> Manager:
    return Manager(
        config,
        metrics_port=None,
        health_port=None,
        handle_signals=False,
        leader_election=LeaderElection(namespace, "lease", identity=identity),
    )


async def counter(client: Client, namespace: str) -> tuple[str, dict[str, str]]:
    cm = to_dict(await client.get(CONFIGMAP, namespace, "counter"))
    return cm["metadata"]["resourceVersion"], dict(cm.get("data") or {})


async def test_lease_taken_over_stops_writes_at_once(
    client_config: ClientConfig, client: Client, namespace: str
) -> None:
    await client.create(configmap(namespace, "counter"))
    mgr = manager(client_config, namespace, "old-leader")
    writer = Writer(mgr, namespace, "old-leader")
    mgr.controller("writer", writer).watches(CONFIGMAP, namespace=namespace)
    run = asyncio.create_task(mgr.run())
    try:
        await asyncio.wait_for(mgr.ready.wait(), 30)
        await eventually("the old leader to write", lambda: writer.written > 5)
        body = to_dict(await client.get(LEASE, namespace, "lease"))
        body["spec"] = {
            **body["spec"],
            "holderIdentity": "new-leader",
            "renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
        }
        await client.update(body)
        taken = time.monotonic()
        with pytest.raises(LeadershipLost, match="new-leader"):
            await asyncio.wait_for(run, 10)
        noticed = time.monotonic() - taken
        assert noticed <= 2 + 1, f"took {noticed:.1f}s to notice the new holder"
        stopped = await counter(client, namespace)
        await asyncio.sleep(2)
        assert await counter(client, namespace) == stopped, "the old leader wrote after stopping"
        lease = await client.get(LEASE, namespace, "lease")
        assert lease["spec"]["holderIdentity"] == "new-leader"  # not released over the new one
        assert mgr.client.fenced
    finally:
        if not run.done():
            mgr.stop()
            with contextlib.suppress(LeadershipLost):
                await run


async def test_unreachable_apiserver_past_renew_deadline(
    client_config: ClientConfig, client: Client, namespace: str
) -> None:
    """The old leader is cut off; the standby takes over; the network heals at that moment.

    Nothing the old leader had in flight may land after the standby acquired the Lease.
    """
    await client.create(configmap(namespace, "counter"))
    port = int(client_config.host.rsplit(":", 1)[1])
    async with TcpProxy(port) as proxy:
        old = manager(dataclasses.replace(client_config, host=proxy.url), namespace, "old")
        writer = Writer(old, namespace, "old")
        old.controller("writer", writer).watches(CONFIGMAP, namespace=namespace)
        old_run = asyncio.create_task(old.run())
        new = manager(client_config, namespace, "new")
        new.controller("idle", idle).watches(CONFIGMAP, namespace=namespace)
        new_run: asyncio.Task[None] | None = None
        try:
            await asyncio.wait_for(old.ready.wait(), 30)
            new_run = asyncio.create_task(new.run())
            await eventually("the old leader to write", lambda: writer.written > 5)
            proxy.refuse()
            cut = time.monotonic()
            with pytest.raises(LeadershipLost):
                await asyncio.wait_for(old_run, 20)
            gave_up = time.monotonic() - cut
            # renew deadline (10 s) after the last renewal, which was at most 2 s before the cut
            assert gave_up <= 10 + 1, f"the old leader stopped only {gave_up:.1f}s after the cut"
            await asyncio.wait_for(new.ready.wait(), 30)
            proxy.heal()
            acquired = await counter(client, namespace)
            await asyncio.sleep(3)
            assert await counter(client, namespace) == acquired, (
                "the old leader wrote after the new one acquired the Lease"
            )
            lease = await client.get(LEASE, namespace, "lease")
            assert lease["spec"]["holderIdentity"] == "new"
            assert time.monotonic() - cut >= 15 - 2 - 0.5  # the standby waited for expiry
        finally:
            for mgr, task in ((old, old_run), (new, new_run)):
                if task is None:
                    continue
                if not task.done():
                    mgr.stop()
                with contextlib.suppress(LeadershipLost):
                    await task


async def test_a_frozen_leader_refuses_writes_the_moment_it_wakes(
    client_config: ClientConfig, client: Client, namespace: str
) -> None:
    """A process frozen past its renew deadline (SIGSTOP, a stall) must not write on waking.

    The freeze is simulated by blocking the event loop; on waking, the reconcile's write runs
    before the renewal task could notice anything, so only the write's own check stops it.
    """
    await client.create(configmap(namespace, "counter"))
    mgr = Manager(
        client_config,
        metrics_port=None,
        health_port=None,
        handle_signals=False,
        leader_election=LeaderElection(
            namespace, "lease", identity="sleepy", lease_duration=4, renew_deadline=2,
            retry_period=0.5,
        ),
    )  # fmt: skip
    outcome: list[str] = []

    async def freeze_then_write(_: Request) -> Result:
        if outcome:
            return Result()
        time.sleep(2.5)  # noqa: ASYNC251  (the point: the whole process stalls)
        try:
            await mgr.client.patch(CONFIGMAP, namespace, "counter", {"data": {"late": "yes"}})
            outcome.append("written")
        except Fenced as exc:
            outcome.append(exc.message)
        return Result()

    mgr.controller("sleepy", freeze_then_write).watches(CONFIGMAP, namespace=namespace)
    run = asyncio.create_task(mgr.run())
    try:
        await eventually("the reconcile to wake and try its write", lambda: outcome, timeout=30)
        assert "not renewed within 2s" in outcome[0], outcome
        _, data = await counter(client, namespace)
        assert "late" not in data
    finally:
        mgr.stop()
        with contextlib.suppress(LeadershipLost):
            await run
