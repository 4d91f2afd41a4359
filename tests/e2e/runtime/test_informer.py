"""Informers against a real apiserver: ordering, apiserver restarts, 410 after compaction."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
import urllib.request
from typing import Any

import pytest

from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.gvk import CONFIGMAP, EVENT
from kaito.runtime.informer import InformerEvent
from kaito.runtime.metrics import Metrics
from kaito.runtime.objects import to_dict

from ..conftest import Cluster
from ..tcp_proxy import TcpProxy
from .conftest import eventually

pytestmark = pytest.mark.e2e


def cm(ns: str, name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }


class Recorder:
    """Collects (type, name, resourceVersion, initial) of every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, bool]] = []

    def __call__(self, event: InformerEvent) -> None:
        self.events.append((event.type, event.obj.name, event.obj.resource_version, event.initial))

    def of(self, name: str) -> list[str]:
        return [t for t, n, _, _ in self.events if n == name]


async def server_state(client: Client, gvk: Any, ns: str) -> dict[str, str]:
    items, _ = await client.list_raw(gvk, ns)
    return {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}


def cache_state(cache: Cache, gvk: Any, ns: str) -> dict[str, str]:
    return {e.name: e.resource_version for e in cache.entries(gvk, namespace=ns)}


async def test_informer_sees_create_update_delete_in_order(client: Client, namespace: str) -> None:
    cache = Cache(client)
    informer = cache.informer(CONFIGMAP, namespace=namespace)
    rec = Recorder()
    informer.add_listener(rec)
    cache.start()
    try:
        assert await cache.wait_for_cache_sync(30)
        await client.create(cm(namespace, "a", v="1"))
        await client.patch(CONFIGMAP, namespace, "a", {"data": {"v": "2"}})
        await client.patch(CONFIGMAP, namespace, "a", {"data": {"v": "3"}})
        await client.delete(CONFIGMAP, namespace, "a")
        await eventually("the delete event", lambda: "DELETED" in rec.of("a"))
        assert rec.of("a") == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
        rvs = [int(rv) for _, n, rv, _ in rec.events if n == "a"]
        assert rvs == sorted(rvs) and len(set(rvs[:3])) == 3
        assert not any(initial for _, n, _, initial in rec.events if n == "a")
        assert cache.get(CONFIGMAP, namespace, "a") is None
        # the initial list came first and was flagged as such
        assert rec.events[0] == ("ADDED", "kube-root-ca.crt", rec.events[0][2], True)
    finally:
        await cache.stop()


async def test_resumes_after_apiserver_restart(
    cluster: Cluster, client: Client, namespace: str
) -> None:
    cache = Cache(client)
    informer = cache.informer(CONFIGMAP, namespace=namespace)
    rec = Recorder()
    informer.add_listener(rec)
    for i in range(10):
        await client.create(cm(namespace, f"cm-{i}", v="0"))
    cache.start()
    try:
        assert await cache.wait_for_cache_sync(30)
        assert len(cache_state(cache, CONFIGMAP, namespace)) == 11
        await asyncio.to_thread(cluster.restart, "kube-apiserver")
        # change things while the informer is still reconnecting
        await client.patch(CONFIGMAP, namespace, "cm-1", {"data": {"v": "1"}})
        await client.delete(CONFIGMAP, namespace, "cm-2")
        for i in range(10, 15):
            await client.create(cm(namespace, f"cm-{i}", v="0"))

        async def converged() -> bool:
            return cache_state(cache, CONFIGMAP, namespace) == await server_state(
                client, CONFIGMAP, namespace
            )

        await eventually("the cache to match the apiserver", converged, timeout=60)
        for i in range(15):
            assert rec.of(f"cm-{i}").count("ADDED") == 1, rec.of(f"cm-{i}")
        assert rec.of("cm-2")[-1] == "DELETED" and rec.of("cm-2").count("DELETED") == 1
        assert rec.of("cm-1")[-1] == "MODIFIED"
        assert rec.of("cm-5") == ["ADDED"]  # untouched objects are not replayed
        got = cache.get(CONFIGMAP, namespace, "cm-1")
        assert got is not None and got["data"] == {"v": "1"}
        assert informer.reflector.lists + informer.reflector.expired >= 1
    finally:
        await cache.stop()


def etcd_post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def compact_etcd(etcd: str) -> int:
    """Compact etcd's history up to its current revision; returns that revision."""
    head = etcd_post(f"{etcd}/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
    revision = int(head["header"]["revision"])
    etcd_post(f"{etcd}/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


def event(ns: str, name: str, message: str = "m") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": ns},
        "reason": "Test",
        "message": message,
        "type": "Normal",
    }


async def test_relists_after_compaction_forces_410(
    cluster: Cluster, client: Client, namespace: str
) -> None:
    """What really provokes 410: a watch from a compacted RV that no watch cache can serve.

    The apiserver's watch cache answers watches from its own window, so compacting etcd is
    invisible for cached kinds (ConfigMaps); core/v1 Events have no watch cache by default,
    so their watches go to etcd, which refuses a compacted revision with 410. The informer is
    paused (as a dropped connection would leave it), the world changes, etcd is compacted,
    and the informer must relist, emitting deletes for what vanished meanwhile.
    """
    etcd = cluster.etcd_url
    cache = Cache(client)
    informer = cache.informer(EVENT, namespace=namespace)
    rec = Recorder()
    informer.add_listener(rec)
    for i in range(5):
        await client.create(event(namespace, f"ev-{i}"))
    cache.start()
    assert await cache.wait_for_cache_sync(30)
    assert sorted(cache_state(cache, EVENT, namespace)) == [f"ev-{i}" for i in range(5)]
    await informer.stop()
    stale_rv = informer.reflector.resource_version
    try:
        await client.delete(EVENT, namespace, "ev-0")
        await client.delete(EVENT, namespace, "ev-1")
        await client.patch(EVENT, namespace, "ev-2", {"message": "changed"})
        await client.create(event(namespace, "ev-5"))
        revision = await asyncio.to_thread(compact_etcd, etcd)
        assert revision > int(stale_rv)
        informer.start()  # resumes the watch from the stale, now compacted, RV

        async def converged() -> bool:
            return cache_state(cache, EVENT, namespace) == await server_state(
                client, EVENT, namespace
            )

        await eventually("the cache to match the apiserver", converged, timeout=30)
        assert informer.reflector.expired == 1  # the watch got 410 ...
        assert informer.reflector.lists == 2  # ... and the informer relisted
        assert rec.of("ev-0") == ["ADDED", "DELETED"]
        assert rec.of("ev-1") == ["ADDED", "DELETED"]
        assert rec.of("ev-2") == ["ADDED", "MODIFIED"]
        assert rec.of("ev-5") == ["ADDED"]
        assert rec.of("ev-3") == ["ADDED"]
        got = cache.get(EVENT, namespace, "ev-2")
        assert got is not None and got["message"] == "changed"
    finally:
        await cache.stop()


async def test_silently_dead_watch_is_noticed_within_the_idle_timeout(
    client_config: ClientConfig, client: Client, namespace: str
) -> None:
    """The watch's connection stops carrying bytes without closing (a peer gone, no FIN)."""
    port = int(client_config.host.rsplit(":", 1)[1])
    async with TcpProxy(port) as proxy:
        proxied = Client(dataclasses.replace(client_config, host=proxy.url), metrics=Metrics())
        cache = Cache(proxied)
        informer = cache.informer(CONFIGMAP, namespace=namespace)
        informer.reflector.idle_timeout = 2.0
        cache.start()
        try:
            assert await cache.wait_for_cache_sync(30)
            await asyncio.sleep(0.5)  # the watch is open
            proxy.blackhole()
            cut = time.monotonic()
            await client.create(cm(namespace, "after-the-cut"))
            await eventually(
                "the informer to reconnect and see the new object",
                lambda: cache.get(CONFIGMAP, namespace, "after-the-cut") is not None,
                timeout=20,
            )
            took = time.monotonic() - cut
            # a dead watch (2 s), maybe a dead pooled connection (2 s), and two backoffs
            assert took < 2 + 2 + 1.6 + 3.2, took
            assert informer.reflector.lists == 1  # resumed from its resourceVersion
        finally:
            await cache.stop()
            await proxied.close()


async def test_paginated_relist_replaces_the_cache_atomically(
    client: Client, namespace: str
) -> None:
    """Readers between two pages of a relist see the old list or the new one, never a mix."""
    names = [f"cm-{i:02d}" for i in range(12)]
    for name in names:
        await client.create(cm(namespace, name, v="old"))
    cache = Cache(client)
    informer = cache.informer(CONFIGMAP, namespace=namespace)
    informer.reflector.page_size = 3
    cache.start()
    assert await cache.wait_for_cache_sync(30)
    await informer.stop()  # as if the watch broke; what follows needs a relist
    try:
        for name in names[:6]:
            await client.patch(CONFIGMAP, namespace, name, {"data": {"v": "new"}})
        for name in names[6:9]:
            await client.delete(CONFIGMAP, namespace, name)
        await client.create(cm(namespace, "cm-99", v="new"))

        def snapshot() -> dict[str, str]:
            return {
                obj.name: to_dict(obj)["data"]["v"]
                for obj in cache.list(CONFIGMAP, namespace=namespace)
                if obj.name.startswith("cm-")
            }

        old = {name: "old" for name in names}
        new = {**dict.fromkeys(names[:6], "new"), **dict.fromkeys(names[9:], "old")}
        new["cm-99"] = "new"
        assert snapshot() == old
        seen: list[dict[str, str]] = []
        pages = client.list_pages

        async def slow_pages(*args: Any, **kwargs: Any) -> Any:
            async for page in pages(*args, **kwargs):
                yield page
                await asyncio.sleep(0.05)  # a reconcile runs between two pages
                seen.append(snapshot())

        client.list_pages = slow_pages  # type: ignore[method-assign]
        try:
            await informer.reflector.list_and_replace()
        finally:
            del client.list_pages
        assert len(seen) >= 4  # the list really came in several pages
        mixed = [s for s in seen if s not in (old, new)]
        assert not mixed, f"a reader saw a mix of two lists: {mixed[0]}"
        assert snapshot() == new
    finally:
        await cache.stop()
