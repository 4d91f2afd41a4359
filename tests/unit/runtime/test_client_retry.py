"""Retry policy of the client, against a tiny local HTTP server (not an apiserver mock)."""

from __future__ import annotations

import json
import time

import pytest
from aiohttp import web

from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.errors import NotFound, ServerError, TooManyRequests
from kaito.runtime.metrics import Metrics


async def serve(handler: web.Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def status(code: int, reason: str) -> str:
    return json.dumps({"kind": "Status", "code": code, "reason": reason, "message": reason})


async def test_429_and_503_are_retried_honouring_retry_after() -> None:
    replies = [(429, {"Retry-After": "0.3"}), (503, {}), (200, {})]
    times: list[float] = []

    async def handler(_: web.Request) -> web.Response:
        times.append(time.monotonic())
        code, headers = replies.pop(0)
        body = '{"ok": true}' if code == 200 else status(code, "Busy")
        return web.Response(status=code, text=body, headers=headers)

    runner, url = await serve(handler)
    metrics = Metrics()
    client = Client(ClientConfig(host=url, ssl_context=None), metrics=metrics)
    try:
        assert await client.request("GET", "/x") == {"ok": True}
    finally:
        await client.close()
        await runner.cleanup()
    assert times[1] - times[0] >= 0.3  # waited as long as Retry-After said
    host = url.removeprefix("http://")
    reg = metrics.registry
    for code in ("429", "503", "200"):
        labels = {"code": code, "method": "GET", "host": host}
        assert reg.get_sample_value("rest_client_requests_total", labels) == 1
    assert (
        reg.get_sample_value(
            "rest_client_request_duration_seconds_count", {"verb": "GET", "host": host}
        )
        == 3
    )


async def test_gives_up_after_max_retries_and_never_retries_404_or_plain_500() -> None:
    calls = {"busy": 0, "missing": 0, "broken": 0}

    async def handler(request: web.Request) -> web.Response:
        which = request.path.strip("/")
        calls[which] += 1
        code = {"busy": 429, "missing": 404, "broken": 500}[which]
        headers = {"Retry-After": "0"} if which == "busy" else {}
        return web.Response(status=code, text=status(code, which), headers=headers)

    runner, url = await serve(handler)
    client = Client(ClientConfig(host=url, ssl_context=None), metrics=Metrics(), max_retries=2)
    try:
        with pytest.raises(TooManyRequests):
            await client.request("GET", "/busy")
        with pytest.raises(NotFound):
            await client.request("GET", "/missing")
        with pytest.raises(ServerError):
            await client.request("POST", "/broken", body={})
    finally:
        await client.close()
        await runner.cleanup()
    assert calls == {"busy": 3, "missing": 1, "broken": 1}
