"""Informers against a real apiserver: ordering, apiserver restarts, 410 after compaction."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from typing import Any

import pytest

from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.gvk import CONFIGMAP, EVENT
from kaito.runtime.informer import InformerEvent

from ..conftest import Cluster
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
