"""The reflector against a misbehaving HTTP server (a fault, not an apiserver mock)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.gvk import CONFIGMAP
from kaito.runtime.informer import Informer
from kaito.runtime.metrics import Metrics

from .test_client_retry import serve

RESOURCES = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [
        {"name": "configmaps", "namespaced": True, "kind": "ConfigMap", "verbs": ["list", "watch"]}
    ],
}


async def test_a_watch_that_closes_at_once_backs_off() -> None:
    """A server that ends every watch at once, empty, must not make the reflector spin."""
    watches = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal watches
        if request.path == "/api/v1":
            return web.json_response(RESOURCES)
        if request.query.get("watch") == "true":
            watches += 1
            return web.Response(text="", content_type="application/json")
        body = {"kind": "ConfigMapList", "metadata": {"resourceVersion": "7"}, "items": []}
        return web.Response(text=json.dumps(body), content_type="application/json")

    runner, url = await serve(handler)
    client = Client(ClientConfig(host=url, ssl_context=None), metrics=Metrics())
    informer = Informer(client, CONFIGMAP)
    informer.start()
    try:
        await asyncio.wait_for(informer.wait_for_sync(), 5)
        await asyncio.sleep(3)
    finally:
        await informer.stop()
        await client.close()
        await runner.cleanup()
    # backoff 0.8-1.6 s, then 1.6-3.2 s, ...: a few watches in 3 s, not thousands
    assert 1 <= watches <= 4, watches
    assert informer.reflector.lists == 1  # it resumed from the list's resourceVersion
