"""Work queue semantics: order, de-duplication, exclusion, delays, priorities, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from kaito.runtime.metrics import Metrics
from kaito.runtime.ratelimiter import ItemExponentialFailureRateLimiter
from kaito.runtime.workqueue import LOW_PRIORITY, ShutDown, WorkQueue


async def drain(q: WorkQueue[str]) -> list[str]:
    out = []
    while len(q):
        item = await q.get()
        out.append(item)
        q.done(item)
    return out


async def test_fifo_order_and_dedup() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    for item in ["a", "b", "a", "c", "b"]:
        q.add(item)
    assert len(q) == 3
    assert await drain(q) == ["a", "b", "c"]


async def test_item_added_while_processing_is_requeued_once_after_done() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a")
    item = await q.get()
    q.add("a")
    q.add("a")
    assert len(q) == 0  # not handed to a second worker while the first holds it
    assert q.is_processing("a")
    q.done(item)
    assert len(q) == 1
    assert await drain(q) == ["a"]


async def test_no_key_is_processed_by_two_workers_at_once() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    active: set[str] = set()
    overlaps = 0
    processed = 0

    async def worker() -> None:
        nonlocal overlaps, processed
        while True:
            try:
                item = await q.get()
            except ShutDown:
                return
            if item in active:
                overlaps += 1
            active.add(item)
            await asyncio.sleep(0.001)
            active.discard(item)
            processed += 1
            q.done(item)

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    for round_ in range(50):
        for key in ("x", "y", "z"):
            q.add(key)
        await asyncio.sleep(0 if round_ % 2 else 0.0005)
    await asyncio.sleep(0.05)
    assert await q.shut_down_with_drain(1.0)
    await asyncio.gather(*workers)
    assert overlaps == 0
    assert processed >= 3


async def test_priorities_high_first_and_bump() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("initial-1", LOW_PRIORITY)
    q.add("initial-2", LOW_PRIORITY)
    q.add("live", 0)
    q.add("initial-2", 10)  # re-added at a higher priority: bumped ahead
    q.add("live", LOW_PRIORITY)  # lower priority never demotes
    assert await drain(q) == ["initial-2", "live", "initial-1"]


async def test_user_change_not_stuck_behind_initial_list() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    for i in range(1000):
        q.add(f"listed-{i}", LOW_PRIORITY)
    q.add("fresh-change")
    assert await q.get() == "fresh-change"


async def test_add_after_waits_and_earliest_wins() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add_after("a", 0.2)
    q.add_after("a", 0.05)  # earlier time replaces the later one
    q.add_after("a", 0.5)  # later time ignored
    assert len(q) == 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await asyncio.wait_for(q.get(), 1) == "a"
    waited = loop.time() - start
    assert 0.04 <= waited < 0.15
    q.done("a")
    await asyncio.sleep(0.5)
    assert len(q) == 0  # the superseded timers did not fire again


async def test_add_rate_limited_backs_off_and_forget_resets() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.01, 1.0)
    q: WorkQueue[str] = WorkQueue("t", rate_limiter=limiter)
    q.add_rate_limited("a")
    q.add_rate_limited("b")
    q.add_rate_limited("b")  # b now waits 0.02
    assert q.num_requeues("b") == 2
    q.forget("b")
    assert q.num_requeues("b") == 0
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_shutdown_releases_getters_and_refuses_adds() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.shut_down()
    with pytest.raises(ShutDown):
        await getter
    q.add("late")
    assert len(q) == 0


async def test_shut_down_with_drain_waits_for_in_flight() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a")
    item = await q.get()
    drain_task = asyncio.create_task(q.shut_down_with_drain(2))
    await asyncio.sleep(0.05)
    assert not drain_task.done()
    q.done(item)
    assert await drain_task is True


async def test_metrics_follow_the_queue() -> None:
    metrics = Metrics()
    q: WorkQueue[str] = WorkQueue("ctl", metrics=metrics)
    q.add("a")
    q.add("a")
    q.add("b", LOW_PRIORITY)
    reg = metrics.registry
    assert reg.get_sample_value("workqueue_adds_total", {"name": "ctl", "controller": "ctl"}) == 2
    labels = {"name": "ctl", "controller": "ctl", "priority": "0"}
    assert reg.get_sample_value("workqueue_depth", labels) == 1
    item = await q.get()
    q.done(item)
    assert reg.get_sample_value("workqueue_depth", labels) == 0
    count = reg.get_sample_value(
        "workqueue_work_duration_seconds_count", {"name": "ctl", "controller": "ctl"}
    )
    assert count == 1
    q.add_after("c", 0.01)
    assert (
        reg.get_sample_value("workqueue_retries_total", {"name": "ctl", "controller": "ctl"}) == 1
    )
