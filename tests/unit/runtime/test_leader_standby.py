"""A standby takes an unrenewed Lease as soon as it expires, not at its next jittered poll."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any, cast

import pytest

from kaito.runtime import leaderelection
from kaito.runtime.client import Client
from kaito.runtime.leaderelection import LeaderElection, LeaderElector
from kaito.runtime.metrics import Metrics


class FrozenLeaseClient:
    """An apiserver holding one Lease whose holder stopped renewing (killed)."""

    def __init__(self, duration: int) -> None:
        self.lease: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "kaito", "namespace": "ns", "resourceVersion": "1"},
            "spec": {
                "holderIdentity": "dead-leader",
                "leaseDurationSeconds": duration,
                "renewTime": "2026-11-30T00:00:00.000000Z",
            },
        }
        self.reads = 0

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        assert method == "GET" and path.endswith("/leases/kaito")
        self.reads += 1
        return copy.deepcopy(self.lease)

    async def update(self, body: dict[str, Any]) -> dict[str, Any]:
        self.lease = copy.deepcopy(body)
        return copy.deepcopy(body)


def standby(fake: FrozenLeaseClient, retry_period: float) -> LeaderElector:
    config = LeaderElection(
        namespace="ns", name="kaito", identity="standby", retry_period=retry_period
    )
    return LeaderElector(cast(Client, fake), config, Metrics())


async def test_standby_wakes_at_expiry_not_at_the_next_jittered_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The largest jitter client-go allows: without waking at expiry, the standby would poll
    # at 0, 2.2 s, 4.4 s and take a 1 s lease only at 2.2 s.
    monkeypatch.setattr(leaderelection.random, "random", lambda: 1.0)
    fake = FrozenLeaseClient(duration=1)
    elector = standby(fake, retry_period=1.0)
    started = time.monotonic()
    await asyncio.wait_for(elector.acquire(), 5)
    took = time.monotonic() - started
    assert elector.is_leader and fake.lease["spec"]["holderIdentity"] == "standby"
    assert fake.lease["spec"]["leaseTransitions"] == 1
    assert 1.0 <= took < 1.5, f"took the lease {took:.2f}s after first seeing it (expiry 1 s)"
    assert fake.reads == 2  # one poll to see it held, one at expiry


async def test_a_renewed_lease_is_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waking at expiry never shortens the lease: a renewal seen meanwhile pushes it back."""
    monkeypatch.setattr(leaderelection.random, "random", lambda: 0.0)
    fake = FrozenLeaseClient(duration=1)
    elector = standby(fake, retry_period=0.3)

    async def keep_renewing() -> None:
        for i in range(8):
            await asyncio.sleep(0.25)
            fake.lease["spec"]["renewTime"] = f"2026-11-30T00:00:0{i}.000000Z"

    renewer = asyncio.create_task(keep_renewing())
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(elector.acquire(), 1.8)
        assert not elector.is_leader and fake.lease["spec"]["holderIdentity"] == "dead-leader"
    finally:
        renewer.cancel()
