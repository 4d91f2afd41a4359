"""A de-duplicating, rate-limited priority work queue (client-go's workqueue semantics).

- An item queued twice is processed once (dirty set); an item re-added while a worker holds
  it waits until ``done`` and is then queued again, so no key is ever processed by two workers
  at once (processing set).
- Higher priority first, FIFO within a priority. Adding an item that is already queued keeps
  the higher of the two priorities. Informer list/resync events use ``LOW_PRIORITY`` so a
  fresh user change is never stuck behind a full relist (controller-runtime ≥ 0.23).
- ``add_after`` delays an item (the earliest wins); ``add_rate_limited`` asks the rate limiter
  how long; ``forget`` resets its failure count.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

from kaito.runtime.metrics import Metrics
from kaito.runtime.ratelimiter import RateLimiter, default_controller_rate_limiter

T = TypeVar("T", bound=Hashable)
LOW_PRIORITY = -100
MAX_PRIORITY_LABELS = 25


class ShutDown(Exception):
    """The queue is shut down and empty; workers should exit."""


class WorkQueue(Generic[T]):
    """See the module docstring."""

    def __init__(
        self,
        name: str = "",
        *,
        rate_limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        self.rate_limiter: RateLimiter = rate_limiter or default_controller_rate_limiter()
        self.metrics = metrics
        self._heap: list[tuple[int, int, T]] = []
        self._seq = itertools.count()
        self._queued: dict[
            T, tuple[int, int]
        ] = {}  # item -> (priority, seq) of its live heap entry
        self._added_at: dict[T, float] = {}
        self._dirty_while_processing: dict[T, int] = {}
        self._processing: dict[T, float] = {}
        self._waiting: dict[T, tuple[float, int, asyncio.TimerHandle]] = {}
        self._getters: list[asyncio.Future[None]] = []
        self._drained: asyncio.Event | None = None
        self._shutting_down = False
        self._depth: dict[int, int] = {}
        if metrics is not None:
            labels = (name, name)
            metrics.workqueue_unfinished_work.labels(*labels).set_function(self._unfinished_seconds)
            metrics.workqueue_longest_running.labels(*labels).set_function(self._longest_running)
            metrics.workqueue_adds.labels(*labels)
            metrics.workqueue_retries.labels(*labels)

    # ------------------------------------------------------------------ introspection
    def __len__(self) -> int:
        return len(self._queued)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def is_processing(self, item: T) -> bool:
        return item in self._processing

    def _unfinished_seconds(self) -> float:
        now = time.monotonic()
        return sum(now - t for t in self._processing.values())

    def _longest_running(self) -> float:
        if not self._processing:
            return 0.0
        return time.monotonic() - min(self._processing.values())

    def _set_depth(self, priority: int, delta: int) -> None:
        count = self._depth.get(priority, 0) + delta
        self._depth[priority] = count
        if self.metrics is not None:
            label = (
                str(priority)
                if len(self._depth) <= MAX_PRIORITY_LABELS
                else "exceeded_cardinality_limit"
            )
            self.metrics.workqueue_depth.labels(self.name, self.name, label).set(count)

    # ------------------------------------------------------------------ adding
    def add(self, item: T, priority: int = 0) -> None:
        """Queue ``item`` now (no-op if queued at ≥ priority; deferred if being processed)."""
        if self._shutting_down:
            return
        if item in self._processing:
            previous = self._dirty_while_processing.get(item)
            self._dirty_while_processing[item] = (
                priority if previous is None else max(previous, priority)
            )
            return
        current = self._queued.get(item)
        if current is not None:
            if priority <= current[0]:
                return
            self._set_depth(current[0], -1)  # bump: the old heap entry becomes stale
        else:
            self._added_at[item] = time.monotonic()
            if self.metrics is not None:
                self.metrics.workqueue_adds.labels(self.name, self.name).inc()
        seq = next(self._seq)
        self._queued[item] = (priority, seq)
        heapq.heappush(self._heap, (-priority, seq, item))
        self._set_depth(priority, +1)
        self._wake_one()

    def add_after(self, item: T, delay: float, priority: int = 0) -> None:
        """Queue ``item`` after ``delay`` seconds; an earlier pending time wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(item, priority)
            return
        if self.metrics is not None:
            self.metrics.workqueue_retries.labels(self.name, self.name).inc()
        ready_at = time.monotonic() + delay
        pending = self._waiting.get(item)
        if pending is not None:
            if pending[0] <= ready_at:
                return
            pending[2].cancel()
        handle = asyncio.get_running_loop().call_later(delay, self._fire, item)
        self._waiting[item] = (ready_at, priority, handle)

    def _fire(self, item: T) -> None:
        pending = self._waiting.pop(item, None)
        if pending is not None:
            self.add(item, pending[1])

    def add_rate_limited(self, item: T, priority: int = 0) -> None:
        """Queue ``item`` after the rate limiter's delay (failures back off exponentially)."""
        self.add_after(item, self.rate_limiter.when(item), priority)

    def forget(self, item: T) -> None:
        """Reset ``item``'s failure history (after a successful reconcile)."""
        self.rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self.rate_limiter.num_requeues(item)

    # ------------------------------------------------------------------ taking
    def _wake_one(self) -> None:
        while self._getters:
            fut = self._getters.pop(0)
            if not fut.done():
                fut.set_result(None)
                return

    def _pop(self) -> tuple[T, int]:
        while True:
            neg_priority, seq, item = heapq.heappop(self._heap)
            live = self._queued.get(item)
            if live is not None and live[1] == seq:
                del self._queued[item]
                return item, -neg_priority

    async def get(self) -> T:
        """The next item; the caller must call ``done(item)`` when finished with it."""
        item, _ = await self.get_with_priority()
        return item

    async def get_with_priority(self) -> tuple[T, int]:
        while not self._queued:
            if self._shutting_down:
                raise ShutDown(self.name)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            finally:
                if fut in self._getters:
                    self._getters.remove(fut)
        item, priority = self._pop()
        self._set_depth(priority, -1)
        now = time.monotonic()
        added = self._added_at.pop(item, now)
        if self.metrics is not None:
            self.metrics.workqueue_queue_duration.labels(self.name, self.name).observe(now - added)
        self._processing[item] = now
        # someone else may be waiting too and there is more work
        if self._queued:
            self._wake_one()
        return item, priority

    def done(self, item: T) -> None:
        """Mark ``item`` finished; if it was re-added meanwhile, queue it again now."""
        started = self._processing.pop(item, None)
        if started is not None and self.metrics is not None:
            self.metrics.workqueue_work_duration.labels(self.name, self.name).observe(
                time.monotonic() - started
            )
        priority = self._dirty_while_processing.pop(item, None)
        if priority is not None:
            shutting, self._shutting_down = self._shutting_down, False
            try:
                if not shutting:
                    self.add(item, priority)
            finally:
                self._shutting_down = shutting
        if self._drained is not None and not self._processing:
            self._drained.set()

    # ------------------------------------------------------------------ shutdown
    def shut_down(self) -> None:
        """Refuse new items, drop delayed ones and release waiting getters."""
        self._shutting_down = True
        for _, _, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        for fut in self._getters:
            if not fut.done():
                fut.set_result(None)
        self._getters.clear()

    async def shut_down_with_drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Shut down, then wait until every item handed out is ``done``; False on timeout."""
        self.shut_down()
        if not self._processing:
            return True
        self._drained = asyncio.Event()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True
