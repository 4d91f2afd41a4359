"""The operator run inside the test's event loop, for races that need a hand on its caches.

Some defects only show when a watch event arrives late (a slow or reconnecting watch, a
busy apiserver). Out of process that is luck; here a test holds back the events of one
informer (:class:`Hold`) for as long as it likes, against the real control plane, so the
race happens every time. Tests here must not block the loop: use the async client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from kaito import operator
from kaito.runtime.client import Client
from kaito.runtime.config import load_config
from kaito.runtime.gvk import GVK
from kaito.runtime.informer import Informer
from kaito.runtime.manager import Manager
from kaito.runtime.metrics import Metrics

from ..conftest import Cluster
from ..runtime.conftest import eventually as _eventually

__all__ = ["Hold", "InProcessOperator", "eventually", "running_operator"]


class Hold:
    """Holds back the watch events of an informer until ``release`` (they are then applied
    in order, as a watch that catches up would)."""

    def __init__(self, informers: list[Informer]) -> None:
        assert informers, "nothing to hold: no informer for that kind yet"
        self.informers = informers
        self.held: list[tuple[Informer, str, dict[str, Any]]] = []
        for inf in informers:
            inf.apply = self._holder(inf)  # type: ignore[method-assign]

    def _holder(self, inf: Informer) -> Callable[[str, dict[str, Any]], None]:
        def hold(event_type: str, obj: dict[str, Any]) -> None:
            self.held.append((inf, event_type, obj))

        return hold

    def release(self) -> None:
        for inf in self.informers:
            del inf.apply  # type: ignore[method-assign]
        held, self.held = self.held, []
        for inf, event_type, obj in held:
            inf.apply(event_type, obj)


@dataclass
class InProcessOperator:
    mgr: Manager
    client: Client  # a separate client for the test's own reads and writes
    holds: list[Hold] = field(default_factory=list)

    def hold(self, gvk: GVK) -> Hold:
        found = Hold([i for i in self.mgr.cache.informers if i.gvk == gvk])
        self.holds.append(found)
        return found

    def counter(self, name: str, **labels: str) -> float:
        """The sum of an operator counter's samples that carry ``labels``."""
        total = 0.0
        for metric in self.mgr.metrics.registry.collect():
            for sample in metric.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def requests(self, **labels: str) -> float:
        """The operator's API requests so far (``method=``, ``code=`` narrow them)."""
        return self.counter("rest_client_requests_total", **labels)

    def idle(self) -> bool:
        """No controller has a key queued or in a worker (delayed requeues aside)."""
        return all(len(c.queue) == 0 and c._active == 0 for c in self.mgr.controllers)

    async def settle(self, quiet_s: float = 3.0, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Wait until no workspace reconcile has run for ``quiet_s`` (late events are in)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.reconciles()
            await asyncio.sleep(quiet_s)
            if self.reconciles() == seen and self.idle():
                return
        raise AssertionError(f"the operator kept reconciling for {timeout}s")

    def reconciles(self, controller: str = "workspace") -> float:
        return self.counter("controller_runtime_reconcile_total", controller=controller)


@contextlib.asynccontextmanager
async def running_operator(cluster: Cluster, *flags: str) -> AsyncIterator[InProcessOperator]:
    """The operator's controllers (built by ``kaito.operator.build``) in this event loop."""
    args = operator.parse_args(
        [f"--kubeconfig={cluster.kubeconfig}", "--workers=4", "--gc-interval=1", *flags]
    )
    config = await load_config(str(cluster.kubeconfig))
    mgr = Manager(config, metrics_port=None, health_port=None, handle_signals=False)
    provisioner = operator.build(mgr, args)
    task = asyncio.create_task(mgr.run())
    collector = operator.start_garbage_collector(mgr, provisioner, args)
    client = Client(config, metrics=Metrics())
    op = InProcessOperator(mgr, client)
    try:
        await asyncio.wait_for(mgr.ready.wait(), 60)
        yield op
    finally:
        for held in op.holds:
            if held.held or any("apply" in vars(i) for i in held.informers):
                held.release()
        if collector is not None:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
        mgr.stop()
        await asyncio.wait_for(task, 60)
        if provisioner is not None:
            await provisioner.close()
        await client.close()


async def eventually(
    what: str,
    check: Callable[[], Any],
    timeout: float = 60.0,  # noqa: ASYNC109
) -> Any:
    """The runtime tests' ``eventually`` with a minute to spare: the machine is shared."""
    return await _eventually(what, check, timeout)
