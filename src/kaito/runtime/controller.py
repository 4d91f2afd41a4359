"""A controller: watches feed a work queue; N workers run the reconciler on each key.

Errors and exceptions never escape a worker: they are logged with the key and the
reconcile ID, counted, and the key is requeued with the rate limiter's backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence

from kaito.runtime.cache import Cache
from kaito.runtime.errors import ApiError, Fenced
from kaito.runtime.gvk import GVK
from kaito.runtime.handlers import EnqueueForObject, Handler, priority_of
from kaito.runtime.informer import Informer, InformerEvent
from kaito.runtime.logs import log_context
from kaito.runtime.metrics import RECONCILE_RESULTS, Metrics
from kaito.runtime.predicates import Predicate
from kaito.runtime.ratelimiter import RateLimiter
from kaito.runtime.request import Reconciler, Request, Result, TerminalError
from kaito.runtime.workqueue import ShutDown, WorkQueue

log = logging.getLogger("kaito.runtime.controller")


class ReconcileTimeout(Exception):
    """The reconciler ran past the controller's reconcile timeout."""


class Controller:
    """See the module docstring. Build it with ``Manager.controller``."""

    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        cache: Cache,
        *,
        metrics: Metrics,
        workers: int = 1,
        rate_limiter: RateLimiter | None = None,
        reconcile_timeout: float | None = None,
        cache_sync_timeout: float = 120.0,
    ) -> None:
        self.name = name
        self.reconciler = reconciler
        self.cache = cache
        self.metrics = metrics
        self.workers = workers
        self.reconcile_timeout = reconcile_timeout
        self.cache_sync_timeout = cache_sync_timeout
        self.queue: WorkQueue[Request] = WorkQueue(name, rate_limiter=rate_limiter, metrics=metrics)
        self._informers: list[Informer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._active = 0

    def __repr__(self) -> str:
        return f"Controller({self.name!r})"

    # ------------------------------------------------------------------ wiring
    def watches(
        self,
        gvk: GVK,
        handler: Handler | None = None,
        predicates: Sequence[Predicate] = (),
        *,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        priority: int | Callable[[InformerEvent], int] = 0,
    ) -> Controller:
        """Enqueue requests from events of ``gvk`` (through the shared informer).

        Live events queue their requests at ``priority`` (higher first; a request already
        queued keeps the higher of the two), or at what ``priority(event)`` says, so a
        controller can let the progress of work it has started go ahead of new work; list
        and resync replays always queue at ``LOW_PRIORITY``.
        """
        informer = self.cache.informer(gvk, namespace=namespace, label_selector=label_selector)
        chosen: Handler = handler if handler is not None else EnqueueForObject()
        preds = tuple(predicates)
        queue = self.queue

        def on_event(event: InformerEvent) -> None:
            for predicate in preds:
                if not predicate(event):
                    return
            requests: Iterable[Request] = chosen.requests(event)
            live = priority if isinstance(priority, int) else priority(event)
            queued_at = priority_of(event, live)
            for request in requests:
                queue.add(request, queued_at)

        informer.add_listener(on_event)
        self._informers.append(informer)
        return self

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Wait for this controller's informers to sync, then start the workers."""
        for result in RECONCILE_RESULTS:
            self.metrics.reconcile_total.labels(self.name, result).inc(0)
        for counter in (
            self.metrics.reconcile_errors,
            self.metrics.reconcile_panics,
            self.metrics.reconcile_timeouts,
        ):
            counter.labels(self.name).inc(0)
        self.metrics.max_concurrent_reconciles.labels(self.name).set(self.workers)
        self.metrics.active_workers.labels(self.name).set(0)
        for informer in self._informers:
            if not informer.running:
                informer.start()
        waits = [inf.wait_for_sync() for inf in self._informers]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), self.cache_sync_timeout)
        except TimeoutError as exc:
            raise TimeoutError(
                f"controller {self.name}: caches did not sync within {self.cache_sync_timeout}s"
            ) from exc
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"{self.name} worker {i}")
            for i in range(self.workers)
        ]
        log.info("controller started", extra={"controller": self.name, "workers": self.workers})

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Stop taking work and let in-flight reconciles finish (up to ``timeout``)."""
        self._stopping = True
        drained = await self.queue.shut_down_with_drain(timeout)
        if not drained:
            log.warning(
                "reconciles still running after %.0fs; cancelling",
                timeout,
                extra={"controller": self.name},
            )
        await self._cancel_workers()

    async def abort(self) -> None:
        """Stop at once: in-flight reconciles are cancelled at their next await, not drained.

        What the manager does when the leader Lease is lost (controller-runtime skips the
        graceful shutdown then): a reconcile left running could write beside the new leader.
        """
        self._stopping = True
        self.queue.shut_down()
        if self._active:
            log.warning(
                "cancelling %d reconcile(s) in flight",
                self._active,
                extra={"controller": self.name},
            )
        await self._cancel_workers()

    async def _cancel_workers(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _worker(self) -> None:
        while not self._stopping:
            try:
                request, priority = await self.queue.get_with_priority()
            except ShutDown:
                return
            if self._stopping:
                self.queue.done(request)
                return
            try:
                await self._process(request, priority)
            finally:
                self.queue.done(request)

    async def _process(self, request: Request, priority: int) -> None:
        rid = str(uuid.uuid4())
        extra = {
            "controller": self.name,
            "namespace": request.namespace,
            "key": str(request),  # namespace/name (name alone when cluster-scoped)
            "reconcile_id": rid,
        }
        token = log_context.set(extra)
        self._active += 1
        self.metrics.active_workers.labels(self.name).set(self._active)
        started = time.monotonic()
        try:
            result = await self._call(request)
        except TerminalError as exc:
            self.metrics.reconcile_total.labels(self.name, "error").inc()
            self.metrics.reconcile_errors.labels(self.name).inc()
            log.error("terminal reconcile error: %s", exc, extra=extra)
            self.queue.forget(request)
            return
        except ReconcileTimeout:
            self.metrics.reconcile_total.labels(self.name, "error").inc()
            self.metrics.reconcile_errors.labels(self.name).inc()
            self.metrics.reconcile_timeouts.labels(self.name).inc()
            log.error("reconcile timed out after %ss", self.reconcile_timeout, extra=extra)
            self.queue.add_rate_limited(request, priority)
            return
        except asyncio.CancelledError:
            raise
        except Fenced as exc:
            # the leader Lease is gone and the manager is stopping us: not a failure
            log.info("reconcile stopped: %s", exc.message, extra=extra)
            return
        except Exception as exc:
            self.metrics.reconcile_total.labels(self.name, "error").inc()
            self.metrics.reconcile_errors.labels(self.name).inc()
            if isinstance(exc, (ApiError, OSError, TimeoutError)):
                # an API or network hiccup: one line, as controller-runtime logs an error
                log.error("reconcile failed: %s: %s", type(exc).__name__, exc, extra=extra)
            else:
                # an unexpected exception is Python's panic: a bug, so its traceback
                self.metrics.reconcile_panics.labels(self.name).inc()
                log.exception("reconcile failed: %s", exc, extra=extra)
            self.queue.add_rate_limited(request, priority)
            return
        finally:
            self.metrics.reconcile_time.labels(self.name).observe(time.monotonic() - started)
            self._active -= 1
            self.metrics.active_workers.labels(self.name).set(self._active)
            log_context.reset(token)
        result = result or Result()
        log.debug("reconciled %s: %s", request, result, extra=extra)
        again = result.priority if result.priority is not None else priority
        if result.requeue_after > 0:
            self.metrics.reconcile_total.labels(self.name, "requeue_after").inc()
            self.queue.forget(request)
            self.queue.add_after(request, result.requeue_after, again)
        elif result.requeue:
            self.metrics.reconcile_total.labels(self.name, "requeue").inc()
            self.queue.add_rate_limited(request, again)
        else:
            self.metrics.reconcile_total.labels(self.name, "success").inc()
            self.queue.forget(request)

    async def _call(self, request: Request) -> Result | None:
        if self.reconcile_timeout is None:
            return await self.reconciler(request)
        try:
            return await asyncio.wait_for(self.reconciler(request), self.reconcile_timeout)
        except TimeoutError as exc:
            raise ReconcileTimeout(str(request)) from exc
