"""The workspace controller's watches order its queue: a rollout's progress goes first."""

from __future__ import annotations

import asyncio
from typing import Any

from kaito.api import constants as C
from kaito.controllers import workspace_watches
from kaito.controllers.common import NODECLAIM, WORKSPACE
from kaito.controllers.expectations import CreateExpectations
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.controller import Controller
from kaito.runtime.gvk import POD
from kaito.runtime.informer import Informer
from kaito.runtime.metrics import Metrics
from kaito.runtime.request import Request, Result


def workspace(name: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "uid": f"u-{name}", "generation": 1}
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": meta}


def pod(workspace_name: str, ready: str, rv: str) -> dict[str, Any]:
    meta = {
        "name": f"{workspace_name}-0",
        "namespace": "ns",
        "uid": f"u-{workspace_name}-0",
        "resourceVersion": rv,
        "labels": {C.LABEL_WORKSPACE_NAME: workspace_name},
    }
    status = {"conditions": [{"type": "Ready", "status": ready}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}


def offline(inf: Informer) -> None:
    inf.start = lambda: None  # type: ignore[method-assign]
    inf.replace([], "1")


async def test_a_pod_becoming_ready_is_reconciled_before_new_workspaces() -> None:
    """100 Workspaces applied at once: the one whose pod turned Ready is finished next,
    not after the first reconciles of all the others (a pod's creation does not jump)."""
    order: list[str] = []
    gate = asyncio.Event()

    async def reconcile(req: Request) -> Result:
        await gate.wait()
        order.append(req.name)
        return Result()

    metrics = Metrics()
    client = Client(ClientConfig(host="http://127.0.0.1:9", ssl_context=None), metrics=metrics)
    cache = Cache(client)
    ctrl = Controller("workspace", reconcile, cache, metrics=metrics, workers=1)
    workspace_watches.watch(ctrl, cache, NODECLAIM, CreateExpectations())
    for inf in ctrl._informers:
        offline(inf)
    workspaces = cache.informer(WORKSPACE)
    pods = cache.informer(POD, label_selector=C.LABEL_WORKSPACE_NAME)
    await ctrl.start()
    workspaces.apply("ADDED", workspace("ws-busy"))
    await asyncio.sleep(0.01)  # the worker holds ws-busy
    for i in range(5):
        workspaces.apply("ADDED", workspace(f"ws-new-{i}"))
    pods.apply("ADDED", pod("ws-created", "False", "2"))
    pods.apply("ADDED", pod("ws-started", "False", "3"))
    pods.apply("MODIFIED", pod("ws-started", "True", "4"))
    gate.set()
    await asyncio.sleep(0.1)
    await ctrl.stop()
    assert order[:2] == ["ws-busy", "ws-started"]
    assert order[2:] == [*(f"ws-new-{i}" for i in range(5)), "ws-created"]
