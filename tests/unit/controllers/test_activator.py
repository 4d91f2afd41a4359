"""The activator against a hand-fed informer cache and a real local upstream (no cluster):
routing by Host, holding requests while a set at zero wakes, forwarding, and clear refusals."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from kaito.controllers.activator import Activator
from kaito.controllers.inferenceset import INFERENCESET
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.gvk import POD
from kaito.runtime.metrics import Metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iset(name: str, ns: str = "team", replicas: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"u-{ns}-{name}",
            "resourceVersion": "1",
        },
        "spec": {"replicas": replicas, "labelSelector": {}, "template": {"inference": {}}},
    }


def pod(name: str, ready: bool, ip: str = "127.0.0.1", ns: str = "team") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-0-0",
            "namespace": ns,
            "uid": f"p-{name}",
            "resourceVersion": "2",
            "labels": {
                "kaito.sh/workspace": f"{name}-0",
                "inferenceset.kaito.sh/created-by": name,
                "apps.kubernetes.io/pod-index": "0",
            },
        },
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


class Harness:
    def __init__(
        self,
        activator: Activator,
        cache: Cache,
        upstream_hits: list[str],
        registry: CollectorRegistry,
    ) -> None:
        self.registry = registry
        self.activator = activator
        self.cache = cache
        self.hits = upstream_hits
        self.woken: list[tuple[str, str, int]] = []
        self.url = f"http://127.0.0.1:{activator.port}"

    async def post(self, host: str, **headers: str) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.url + "/v1/completions",
                json={"prompt": "hi"},
                headers={"Host": host, **headers},
            ) as resp,
        ):
            return resp.status, await resp.json()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    hits: list[str] = []

    async def completions(request: web.Request) -> web.Response:
        hits.append(request.headers.get("Host", ""))
        return web.json_response({"choices": [{"text": "ok"}], "echo": await request.json()})

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    upstream = web.AppRunner(app)
    await upstream.setup()
    port = free_port()
    await web.TCPSite(upstream, "127.0.0.1", port).start()

    metrics = Metrics()
    client = Client(ClientConfig(host="http://127.0.0.1:9", ssl_context=None), metrics=metrics)
    cache = Cache(client)
    cache.informer(INFERENCESET).replace([], "1")
    cache.informer(POD, label_selector="kaito.sh/workspace").replace([], "1")
    activator = Activator(
        client, cache, INFERENCESET, registry=metrics.registry, hold_timeout_s=3, max_held=2,
        serving_port=port,
    )  # fmt: skip
    h = Harness(activator, cache, hits, metrics.registry)

    async def fake_scale(namespace: str, name: str, replicas: int) -> None:
        h.woken.append((namespace, name, replicas))

    activator.scale = fake_scale  # type: ignore[method-assign]
    await activator.start("127.0.0.1", 0)
    h.url = f"http://127.0.0.1:{activator.port}"
    yield h
    await activator.stop()
    await upstream.cleanup()
    await client.close()


async def test_a_request_for_a_set_at_zero_is_held_woken_and_forwarded(harness: Harness) -> None:
    harness.cache.informer(INFERENCESET).apply("ADDED", iset("tiny"))
    pods = harness.cache.informer(POD, label_selector="kaito.sh/workspace")
    pods.apply("ADDED", pod("tiny", ready=False))
    held = asyncio.ensure_future(harness.post("tiny.team.svc.cluster.local"))
    await asyncio.sleep(0.5)
    assert not held.done()
    assert harness.woken == [("team", "tiny", 1)]  # once, not once per poll
    assert harness.activator.idle_for("team", "tiny") == 0.0  # a request is held
    held_now = {"inferenceset": "tiny", "inferenceset_namespace": "team"}
    assert harness.registry.get_sample_value("kaito_activator_held_requests", held_now) == 1
    pods.apply(
        "MODIFIED",
        {
            **pod("tiny", ready=True),
            "metadata": {**pod("tiny", True)["metadata"], "resourceVersion": "3"},
        },
    )
    status, body = await asyncio.wait_for(held, 5)
    assert status == 200 and body["echo"] == {"prompt": "hi"}
    assert len(harness.hits) == 1 and harness.hits[0].startswith("127.0.0.1")
    cold = harness.registry.get_sample_value("kaito_activator_cold_start_seconds_sum", held_now)
    assert cold is not None and cold > 0.4
    assert harness.registry.get_sample_value("kaito_activator_held_requests", held_now) == 0
    assert harness.activator.idle_for("team", "tiny") < 1


async def test_warm_sets_are_forwarded_at_once_by_host_or_header(harness: Harness) -> None:
    harness.cache.informer(INFERENCESET).apply("ADDED", iset("tiny", replicas=1))
    harness.cache.informer(POD, label_selector="kaito.sh/workspace").apply(
        "ADDED", pod("tiny", ready=True)
    )
    for host in ("tiny.team", "tiny.team.svc", "tiny.team.svc.cluster.local:80", "tiny"):
        status, _ = await harness.post(host)
        assert status == 200, host
    status, _ = await harness.post("whatever", **{"X-Kaito-InferenceSet": "team/tiny"})
    assert status == 200
    assert not harness.woken


async def test_unknown_or_ambiguous_targets_are_refused_with_the_fix(harness: Harness) -> None:
    sets = harness.cache.informer(INFERENCESET)
    sets.apply("ADDED", iset("tiny", ns="a"))
    sets.apply("ADDED", iset("tiny", ns="b"))
    status, body = await harness.post("tiny")
    assert status == 400 and "several namespaces (a, b)" in body["error"]["message"]
    status, body = await harness.post("nope.team")
    assert status == 404 and "team/nope not found" in body["error"]["message"]
    status, body = await harness.post("10.0.0.1")
    assert status == 400 and "X-Kaito-InferenceSet" in body["error"]["message"]
    status, body = await harness.post("x", **{"X-Kaito-InferenceSet": "broken"})
    assert status == 400


async def test_a_set_that_never_gets_ready_answers_503_with_retry_after(harness: Harness) -> None:
    harness.cache.informer(INFERENCESET).apply("ADDED", iset("slow"))
    first = [asyncio.ensure_future(harness.post("slow.team")) for _ in range(2)]
    await asyncio.sleep(0.3)
    status, body = await harness.post("slow.team")  # over max_held=2
    assert status == 503 and "already held" in body["error"]["message"]
    for status, body in await asyncio.gather(*first):
        assert status == 503 and "no ready replica within 3s" in body["error"]["message"]


async def test_the_idle_clock_starts_when_a_set_is_first_seen(harness: Harness) -> None:
    first = harness.activator.idle_for("team", "new")
    assert first < 0.5  # not "idle since the operator started"
    await asyncio.sleep(0.3)
    assert harness.activator.idle_for("team", "new") >= 0.3
