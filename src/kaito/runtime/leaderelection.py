"""Lease-based leader election (coordination.k8s.io/v1), with client-go's timing rules.

A candidate takes the Lease when it is free or when its holder has not renewed it for
``lease_duration`` as measured on *our* clock since we last saw the record change (so clock
skew between machines does not matter). The leader renews every ``retry_period``; if it
cannot renew for ``renew_deadline`` it has lost and must stop. On a clean shutdown the
leader empties the holder so a standby takes over at once.

A standby polls every jittered ``retry_period`` as client-go does, but once it knows when
the lease it watches will expire it wakes at that moment rather than at the next jittered
poll: the expiry is the same conservative one (our clock, from when we saw the record
change), so this only removes up to ``2.2 * retry_period`` of idle waiting from a failover.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kaito.runtime.client import Client
from kaito.runtime.errors import AlreadyExists, ApiError, Conflict, NotFound
from kaito.runtime.metrics import Metrics

log = logging.getLogger("kaito.runtime.leaderelection")


def _default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass
class LeaderElection:
    """Which Lease to compete for, and the timings (controller-runtime's defaults)."""

    namespace: str
    name: str
    identity: str = field(default_factory=_default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_cancel: bool = True


_EXPIRY_MARGIN = 0.05  # seconds past a watched lease's expiry before the next attempt


class LeadershipLost(Exception):
    """The leader could not renew its Lease within the renew deadline."""


def _micro_time(ts: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Competes for, holds and releases one Lease."""

    def __init__(self, client: Client, config: LeaderElection, metrics: Metrics) -> None:
        self.client = client
        self.config = config
        self.metrics = metrics
        self.is_leader = False
        self.elected = asyncio.Event()
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._held_until: float | None = None  # monotonic: when another's lease expires for us
        self._lease: dict[str, Any] | None = None
        self.valid_until = 0.0  # monotonic: renew deadline counted from the last renewal's start
        metrics.leader_status.labels(config.name).set(0)

    def _set_leader(self, value: bool) -> None:
        if value != self.is_leader:
            log.info(
                "%s leadership of lease %s/%s",
                "acquired" if value else "lost",
                self.config.namespace,
                self.config.name,
                extra={"identity": self.config.identity},
            )
        self.is_leader = value
        self.metrics.leader_status.labels(self.config.name).set(1 if value else 0)
        if value:
            self.elected.set()

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards."""
        cfg = self.config
        started = time.monotonic()
        now_s = _micro_time()
        spec_mine = {
            "holderIdentity": cfg.identity,
            "leaseDurationSeconds": int(cfg.lease_duration),
            "renewTime": now_s,
        }
        try:
            lease = await self.client.request(
                "GET", f"/apis/coordination.k8s.io/v1/namespaces/{cfg.namespace}/leases/{cfg.name}"
            )
        except NotFound:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": {**spec_mine, "acquireTime": now_s, "leaseTransitions": 0},
            }
            try:
                self._lease = dict(await self.client.create(body))
            except (AlreadyExists, Conflict):
                return False
            self._observe(self._lease)
            self.valid_until = started + cfg.renew_deadline
            return True
        spec = lease.get("spec") or {}
        self._observe(lease)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        self._held_until = None
        if holder and holder != cfg.identity and self._observed_at + duration > time.monotonic():
            self._held_until = self._observed_at + duration
            return False  # someone else holds a lease that has not expired
        if holder == cfg.identity:
            new_spec = {**spec, **spec_mine}
        else:
            self.metrics.leader_slowpath.labels(cfg.name).inc()
            new_spec = {
                **spec,
                **spec_mine,
                "acquireTime": now_s,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (1 if holder else 0),
            }
        lease["spec"] = new_spec
        lease.setdefault("apiVersion", "coordination.k8s.io/v1")
        lease.setdefault("kind", "Lease")
        try:
            self._lease = dict(await self.client.update(lease))
        except Conflict:
            return False
        self._observe(self._lease)
        self.valid_until = started + cfg.renew_deadline
        return True

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        record = (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()

    async def acquire(self) -> None:
        """Block until we are the leader."""
        while True:
            try:
                if await self.try_acquire_or_renew():
                    self._set_leader(True)
                    return
            except (TimeoutError, ApiError, OSError) as exc:
                log.warning("leader election: %s", exc)
            await asyncio.sleep(self._next_attempt_in())

    def _next_attempt_in(self) -> float:
        """Seconds to the next attempt: the jittered retry period, or less when the lease we
        saw held expires sooner (a small margin after it, so that attempt finds it expired)."""
        wait = self.config.retry_period * (1 + 1.2 * random.random())
        if self._held_until is not None:
            wait = min(wait, max(0.0, self._held_until - time.monotonic()) + _EXPIRY_MARGIN)
        return wait

    async def hold(self) -> None:
        """Renew until cancelled; raises ``LeadershipLost`` once the Lease is no longer ours.

        That is when no renewal succeeded for ``renew_deadline`` (client-go's rule; the
        deadline is shorter than ``lease_duration``, so we stop before any standby may take
        over), or at once when a read shows another holder: someone took the Lease (by hand,
        or after we were cut off for longer than the lease), and retrying until the deadline
        would only let us act beside the new leader.
        """
        cfg = self.config
        last_renew = time.monotonic()
        while True:
            deadline = last_renew + cfg.renew_deadline
            await asyncio.sleep(max(0.0, min(cfg.retry_period, deadline - time.monotonic())))
            remaining = deadline - time.monotonic()
            ok = False
            if remaining > 0:
                try:
                    ok = await asyncio.wait_for(self.try_acquire_or_renew(), remaining)
                except (TimeoutError, ApiError, OSError) as exc:
                    log.warning("leader election: renew failed: %s", exc)
            if ok:
                last_renew = time.monotonic()
                continue
            holder = self.observed_holder
            if holder and holder != cfg.identity:
                self._set_leader(False)
                raise LeadershipLost(f"lease {cfg.namespace}/{cfg.name} is now held by {holder}")
            if time.monotonic() >= deadline:
                self._set_leader(False)
                raise LeadershipLost(
                    f"could not renew lease {cfg.namespace}/{cfg.name} "
                    f"within {cfg.renew_deadline:g}s"
                )

    def write_check(self) -> str | None:
        """For ``Client.guard_writes``: why a write must be refused now (None: go ahead)."""
        if not self.is_leader:
            return f"not the leader of lease {self.config.namespace}/{self.config.name}"
        if time.monotonic() >= self.valid_until:
            return (
                f"lease {self.config.namespace}/{self.config.name} not renewed within "
                f"{self.config.renew_deadline:g}s"
            )
        return None

    @property
    def observed_holder(self) -> str:
        """The holder in the last Lease record we read or wrote ("" when none)."""
        return self._observed[0] if self._observed else ""

    async def release(self) -> None:
        """Give the Lease up (holder emptied) so a standby need not wait for it to expire."""
        if not self.is_leader or self._lease is None:
            return
        lease = self._lease
        spec = dict(lease.get("spec") or {})
        now_s = _micro_time()
        spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=now_s, acquireTime=now_s)
        lease["spec"] = {k: v for k, v in spec.items() if v is not None}
        try:
            await self.client.update(lease)
        except (ApiError, OSError) as exc:
            log.warning("leader election: release failed: %s", exc)
        self._set_leader(False)


__all__ = ["LeaderElection", "LeaderElector", "LeadershipLost"]
