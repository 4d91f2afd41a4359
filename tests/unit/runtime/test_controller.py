"""Controller behaviour without a cluster: events are fed into the informer by hand."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.controller import Controller
from kaito.runtime.gvk import GVK
from kaito.runtime.handlers import EnqueueForOwner
from kaito.runtime.informer import Informer
from kaito.runtime.metrics import Metrics
from kaito.runtime.predicates import generation_changed, labels_changed
from kaito.runtime.ratelimiter import ItemExponentialFailureRateLimiter
from kaito.runtime.request import Request, Result, TerminalError

OWNER = GVK("kaito.sh", "v1beta1", "Workspace")
CHILD = GVK("apps", "v1", "StatefulSet")


def obj(
    name: str,
    gen: int = 1,
    rv: str = "1",
    labels: dict[str, str] | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "uid": f"u-{name}",
        "generation": gen,
        "resourceVersion": rv,
        "labels": labels or {},
    }
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "kaito.sh/v1alpha1",
                "kind": "Workspace",
                "name": owner,
                "uid": f"u-{owner}",
                "controller": True,
            }
        ]
    return {"apiVersion": "v1", "kind": "X", "metadata": meta}


def make(reconciler: Any, **kwargs: Any) -> tuple[Controller, Metrics, Cache]:
    metrics = Metrics()
    client = Client(ClientConfig(host="http://127.0.0.1:9", ssl_context=None), metrics=metrics)
    cache = Cache(client)
    ctrl = Controller("test", reconciler, cache, metrics=metrics, **kwargs)
    return ctrl, metrics, cache


def offline(inf: Informer) -> None:
    """Informers here are fed by hand; never let them dial the (absent) apiserver."""
    inf.start = lambda: None  # type: ignore[method-assign]
    inf.replace([], "1")


async def test_results_and_errors_drive_requeues(caplog: pytest.LogCaptureFixture) -> None:
    calls: dict[str, int] = {}

    async def reconcile(req: Request) -> Result | None:
        calls[req.name] = calls.get(req.name, 0) + 1
        n = calls[req.name]
        if req.name == "boom" and n < 3:
            raise RuntimeError("kaboom")
        if req.name == "terminal":
            raise TerminalError("bad spec")
        if req.name == "again" and n == 1:
            return Result(requeue_after=0.05)
        return None

    ctrl, metrics, cache = make(
        reconcile, workers=3, rate_limiter=ItemExponentialFailureRateLimiter(0.01, 1)
    )
    ctrl.watches(OWNER)
    inf = cache.informer(OWNER)
    offline(inf)
    await ctrl.start()
    for name in ("ok", "boom", "terminal", "again"):
        inf.apply("ADDED", obj(name))
    await asyncio.sleep(0.3)
    await ctrl.stop()
    assert calls == {"ok": 1, "boom": 3, "terminal": 1, "again": 2}
    reg = metrics.registry

    def total(result: str) -> float | None:
        return reg.get_sample_value(
            "controller_runtime_reconcile_total", {"controller": "test", "result": result}
        )

    assert total("success") == 3  # ok, boom (3rd), again (2nd)
    assert total("error") == 3  # boom twice, terminal once
    assert total("requeue_after") == 1
    assert (
        reg.get_sample_value("controller_runtime_reconcile_panics_total", {"controller": "test"})
        == 2
    )
    assert (
        reg.get_sample_value("controller_runtime_max_concurrent_reconciles", {"controller": "test"})
        == 3
    )
    failure = next(r for r in caplog.records if "kaboom" in r.getMessage())
    assert failure.key == "ns/boom"
    assert failure.controller == "test"
    assert len(failure.reconcile_id) == 36


async def test_reconcile_timeout_is_contained_and_requeued() -> None:
    calls = 0

    async def slow(req: Request) -> Result:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        return Result()

    ctrl, metrics, cache = make(
        slow, reconcile_timeout=0.05, rate_limiter=ItemExponentialFailureRateLimiter(0.01, 1)
    )
    ctrl.watches(OWNER)
    offline(cache.informer(OWNER))
    await ctrl.start()
    cache.informer(OWNER).apply("ADDED", obj("w"))
    await asyncio.sleep(0.3)
    await ctrl.stop()
    assert calls == 2
    assert (
        metrics.registry.get_sample_value(
            "controller_runtime_reconcile_timeouts_total", {"controller": "test"}
        )
        == 1
    )


async def test_owner_handler_and_predicates() -> None:
    seen: list[str] = []

    async def reconcile(req: Request) -> Result:
        seen.append(req.name)
        return Result()

    ctrl, _, cache = make(reconcile)
    ctrl.watches(CHILD, EnqueueForOwner(OWNER), predicates=[generation_changed])
    ctrl.watches(OWNER, predicates=[labels_changed])
    for gvk in (CHILD, OWNER):
        offline(cache.informer(gvk))
    await ctrl.start()
    child, owner = cache.informer(CHILD), cache.informer(OWNER)
    child.apply("ADDED", obj("ss-1", owner="ws-a"))
    await asyncio.sleep(0.02)
    child.apply("MODIFIED", obj("ss-1", gen=1, rv="2", owner="ws-a"))  # status-only: filtered
    owner.apply("ADDED", obj("ws-b"))
    await asyncio.sleep(0.02)
    owner.apply("MODIFIED", obj("ws-b", rv="3"))  # labels unchanged: filtered
    await asyncio.sleep(0.02)
    owner.apply("MODIFIED", obj("ws-b", rv="4", labels={"x": "y"}))
    await asyncio.sleep(0.02)
    child.apply("MODIFIED", obj("ss-1", gen=2, rv="5", owner="ws-c"))  # re-owned: old + new owner
    await asyncio.sleep(0.05)
    await ctrl.stop()
    assert seen[:3] == ["ws-a", "ws-b", "ws-b"]
    assert sorted(seen[3:]) == ["ws-a", "ws-c"]


async def test_initial_list_events_are_low_priority() -> None:
    order: list[str] = []
    gate = asyncio.Event()

    async def reconcile(req: Request) -> Result:
        await gate.wait()
        order.append(req.name)
        return Result()

    ctrl, _, cache = make(reconcile, workers=1)
    ctrl.watches(OWNER)
    inf = cache.informer(OWNER)
    inf.start = lambda: None  # type: ignore[method-assign]
    inf.replace([obj(f"listed-{i}") for i in range(50)], "1")
    await ctrl.start()
    await asyncio.sleep(0.01)  # the worker holds listed-0, waiting on the gate
    inf.apply("ADDED", obj("fresh"))
    gate.set()
    await asyncio.sleep(0.1)
    await ctrl.stop()
    assert order[0] == "listed-0"
    assert order[1] == "fresh"
    assert len(order) == 51


async def test_a_watch_can_queue_its_live_events_ahead_of_others() -> None:
    """Progress of started work (here: a child's MODIFIED) goes ahead of new owners queued
    before it; the watch's own creations keep the default order, replays stay last."""
    order: list[str] = []
    gate = asyncio.Event()

    async def reconcile(req: Request) -> Result:
        await gate.wait()
        order.append(req.name)
        return Result()

    ctrl, _, cache = make(reconcile, workers=1)
    ctrl.watches(OWNER)
    ctrl.watches(
        CHILD, EnqueueForOwner(OWNER), priority=lambda event: 10 if event.type == "MODIFIED" else 0
    )
    for gvk in (CHILD, OWNER):
        offline(cache.informer(gvk))
    child, owner = cache.informer(CHILD), cache.informer(OWNER)
    child.replace(
        [obj("ss-listed", owner="ws-listed"), obj("ss-progress", owner="ws-progress")], "1"
    )
    await ctrl.start()
    owner.apply("ADDED", obj("ws-busy"))
    await asyncio.sleep(0.01)  # the worker holds ws-busy, waiting on the gate
    for name in ("ws-new-1", "ws-new-2"):
        owner.apply("ADDED", obj(name))
    child.apply("ADDED", obj("ss-created", owner="ws-created"))
    child.apply("MODIFIED", obj("ss-progress", rv="2", owner="ws-progress"))
    gate.set()
    await asyncio.sleep(0.1)
    await ctrl.stop()
    assert order == ["ws-busy", "ws-progress", "ws-new-1", "ws-new-2", "ws-created", "ws-listed"]
    # without the watch's priority, ws-progress would have come after ws-created
