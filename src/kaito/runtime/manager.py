"""The manager: owns the client, cache, metrics and controllers, and runs them.

``run()`` serves /healthz, /readyz and /metrics, starts the informers, waits for their sync,
optionally wins the Lease, starts every controller, and on ``stop()`` / SIGTERM drains the
work queues, releases the Lease and closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig, load_config
from kaito.runtime.controller import Controller
from kaito.runtime.events import EventRecorder
from kaito.runtime.leaderelection import LeaderElection, LeaderElector, LeadershipLost
from kaito.runtime.metrics import Metrics
from kaito.runtime.objects import Scheme
from kaito.runtime.ratelimiter import RateLimiter
from kaito.runtime.reflector import Transform, strip_managed_fields
from kaito.runtime.request import Reconciler

log = logging.getLogger("kaito.runtime.manager")

Check = Callable[[], bool | Awaitable[bool]]


class Manager:
    """See the module docstring."""

    def __init__(
        self,
        client_config: ClientConfig,
        *,
        metrics_port: int | None = 8080,
        health_port: int | None = 8081,
        bind_address: str = "127.0.0.1",
        leader_election: LeaderElection | None = None,
        scheme: Scheme | None = None,
        metrics: Metrics | None = None,
        transform: Transform | None = strip_managed_fields,
        resync_period: float | None = 10 * 3600.0,
        graceful_shutdown_timeout: float = 30.0,
        cache_sync_timeout: float = 120.0,
        handle_signals: bool = True,
        user_agent: str = "kaito-runtime",
    ) -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self.scheme = scheme if scheme is not None else Scheme()
        self.client = Client(
            client_config, scheme=self.scheme, metrics=self.metrics, user_agent=user_agent
        )
        self.cache = Cache(
            self.client, scheme=self.scheme, transform=transform, resync_period=resync_period
        )
        self.metrics_port = metrics_port
        self.health_port = health_port
        self.bind_address = bind_address
        self.leader_election = leader_election
        # the elector has a client of its own: its Lease writes must pass when the manager's
        # client refuses writes for want of a valid Lease
        self.elector = (
            LeaderElector(
                Client(
                    client_config, scheme=self.scheme, metrics=self.metrics, user_agent=user_agent
                ),
                leader_election,
                self.metrics,
            )
            if leader_election
            else None
        )
        self.graceful_shutdown_timeout = graceful_shutdown_timeout
        self.cache_sync_timeout = cache_sync_timeout
        self.handle_signals = handle_signals
        self.controllers: list[Controller] = []
        self.recorders: list[EventRecorder] = []
        self.healthz_checks: dict[str, Check] = {"ping": lambda: True}
        self.readyz_checks: dict[str, Check] = {"informers": lambda: self.cache.synced}
        self.ready = asyncio.Event()
        self.bound_ports: dict[str, int] = {}
        self._stop = asyncio.Event()
        self.lost_leadership: str | None = None  # why, once the Lease was lost
        self._runner: list[web.AppRunner] = []

    @classmethod
    async def create(
        cls, kubeconfig: str | None = None, context: str | None = None, **kwargs: object
    ) -> Manager:
        """Load the kubeconfig (or in-cluster config) and build a manager."""
        return cls(await load_config(kubeconfig, context), **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ building
    def controller(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        workers: int = 1,
        rate_limiter: RateLimiter | None = None,
        reconcile_timeout: float | None = None,
    ) -> Controller:
        """A new controller; add its watches with ``.watches()`` before ``run()``."""
        if any(c.name == name for c in self.controllers):
            raise ValueError(f"a controller named {name!r} already exists")
        ctrl = Controller(
            name,
            reconciler,
            self.cache,
            metrics=self.metrics,
            workers=workers,
            rate_limiter=rate_limiter,
            reconcile_timeout=reconcile_timeout,
            cache_sync_timeout=self.cache_sync_timeout,
        )
        self.controllers.append(ctrl)
        return ctrl

    def event_recorder(self, component: str) -> EventRecorder:
        recorder = EventRecorder(self.client, component)
        self.recorders.append(recorder)
        return recorder

    def add_healthz_check(self, name: str, check: Check) -> None:
        self.healthz_checks[name] = check

    def add_readyz_check(self, name: str, check: Check) -> None:
        self.readyz_checks[name] = check

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader if self.elector else True

    # ------------------------------------------------------------------ http
    async def _checks(self, checks: dict[str, Check]) -> web.Response:
        failed = []
        for name, check in checks.items():
            try:
                result = check()
                ok = await result if asyncio.iscoroutine(result) else bool(result)
            except Exception:
                ok = False
            if not ok:
                failed.append(name)
        if failed:
            return web.Response(status=500, text="".join(f"[-]{n} failed\n" for n in failed))
        return web.Response(text="ok")

    async def _healthz(self, _: web.Request) -> web.Response:
        return await self._checks(self.healthz_checks)

    async def _readyz(self, _: web.Request) -> web.Response:
        return await self._checks(self.readyz_checks)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _serve(self) -> None:
        routes: dict[int, list[web.RouteDef]] = {}
        if self.health_port is not None:
            routes.setdefault(self.health_port, []).extend(
                [
                    web.get("/healthz", self._healthz),
                    web.get("/readyz", self._readyz),
                ]
            )
        if self.metrics_port is not None:
            routes.setdefault(self.metrics_port, []).append(web.get("/metrics", self._metrics))
        for port, defs in routes.items():
            app = web.Application()
            app.add_routes(defs)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.bind_address, port)
            await site.start()
            self._runner.append(runner)
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            actual = sockets[0].getsockname()[1] if sockets else port
            for d in defs:
                self.bound_ports[d.path.strip("/")] = actual

    def url(self, endpoint: str) -> str:
        """http URL of "metrics", "healthz" or "readyz" (after ``run()`` bound it)."""
        return f"http://{self.bind_address}:{self.bound_ports[endpoint]}/{endpoint}"

    # ------------------------------------------------------------------ running
    def stop(self) -> None:
        """Ask ``run()`` to drain and return."""
        self._stop.set()

    async def run(self) -> None:
        """Run until ``stop()`` (or SIGTERM/SIGINT); raises LeadershipLost if the Lease is lost."""
        loop = asyncio.get_running_loop()
        if self.handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop)
        hold: asyncio.Task[None] | None = None
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            await self._serve()
            self.cache.start()
            if not await self._until_stopped(
                self.cache.wait_for_cache_sync(self.cache_sync_timeout), stop_wait
            ):
                return
            if self.elector is not None:
                log.info("waiting for leadership of %s", self.leader_election)
                acquire = self._until_stopped(self.elector.acquire(), stop_wait)
                if not await acquire:
                    return
                self.client.guard_writes(self.elector.write_check)
                hold = asyncio.create_task(self._hold(self.elector), name="lease renewal")
            for ctrl in self.controllers:
                await ctrl.start()
            self.ready.set()
            waits: set[asyncio.Task[Any]] = {stop_wait}
            if hold is not None:
                waits.add(hold)
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if hold is not None and hold in done:
                hold.result()  # raises LeadershipLost
        finally:
            await self._shutdown(hold, stop_wait)
            if self.handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(sig)

    async def _hold(self, elector: LeaderElector) -> None:
        """Renew the Lease; on its loss fence the client before anything else can run.

        Fencing happens in the same step as the loss (no await in between), so no worker,
        event recorder or background task gets another write out; the workers are then
        cancelled rather than drained, as controller-runtime does on lease loss.
        """
        try:
            await elector.hold()
        except LeadershipLost as exc:
            self.lost_leadership = str(exc)
            self.client.fence(f"leadership lost ({exc})")
            for ctrl in self.controllers:
                ctrl.queue.shut_down()  # no reconcile starts from here on
            log.error("%s; stopping at once", exc)
            raise

    async def _until_stopped(self, work: Awaitable[object], stop_wait: asyncio.Task[bool]) -> bool:
        """Await ``work`` unless a stop comes first; True when ``work`` finished."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            result = task.result()
            if result is False:
                raise TimeoutError(
                    f"informer caches did not sync within {self.cache_sync_timeout}s"
                )
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _shutdown(
        self, hold: asyncio.Task[None] | None, stop_wait: asyncio.Task[bool]
    ) -> None:
        self.ready.clear()
        stop_wait.cancel()
        lost = self.lost_leadership is not None
        await asyncio.gather(
            *(
                c.abort() if lost else c.stop(self.graceful_shutdown_timeout)
                for c in self.controllers
            ),
            return_exceptions=True,
        )
        if hold is not None and not hold.done():
            hold.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeadershipLost):
                await hold
        for recorder in self.recorders:
            await recorder.close(flush=not lost)  # a lost leader's Events would be writes
        if (
            not lost
            and self.elector is not None
            and self.leader_election
            and self.leader_election.release_on_cancel
        ):
            await self.elector.release()
        await self.cache.stop()
        for runner in self._runner:
            await runner.cleanup()
        self._runner.clear()
        await self.client.close()
        if self.elector is not None:
            await self.elector.client.close()
        log.info("manager stopped")
