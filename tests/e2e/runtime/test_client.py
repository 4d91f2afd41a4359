"""The client against a real apiserver: typed errors, patches, apply, status, preconditions."""

from __future__ import annotations

import pytest

from kaito.runtime.client import Client, Preconditions
from kaito.runtime.errors import AlreadyExists, Conflict, Invalid, NotFound
from kaito.runtime.gvk import CONFIGMAP, DEPLOYMENT, GVK
from kaito.runtime.objects import KObject

pytestmark = pytest.mark.e2e


def cm(ns: str, name: str, **data: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }


async def test_crud_errors_and_patches(client: Client, namespace: str) -> None:
    created = await client.create(cm(namespace, "a", x="1"))
    assert isinstance(created, KObject) and created.namespace == namespace and created.uid
    with pytest.raises(AlreadyExists):
        await client.create(cm(namespace, "a"))
    with pytest.raises(NotFound):
        await client.get(CONFIGMAP, namespace, "missing")
    with pytest.raises(Invalid) as invalid:
        await client.create(cm(namespace, "Not_Valid"))
    assert [c.field for c in invalid.value.causes] == ["metadata.name"]

    stale = KObject(dict(created))
    merged = await client.patch(CONFIGMAP, namespace, "a", {"data": {"y": "2"}})
    assert merged["data"] == {"x": "1", "y": "2"}
    stale["data"] = {"z": "3"}
    with pytest.raises(Conflict):
        await client.update(stale)  # resourceVersion is old
    with pytest.raises(Conflict):
        await client.patch_diff(created, {**created, "data": {"w": "4"}})  # test op fails
    fresh = await client.get(CONFIGMAP, namespace, "a")
    patched = await client.patch_diff(fresh, {**fresh, "data": {"w": "4"}})
    assert patched is not None and patched["data"] == {"w": "4"}
    assert await client.patch_diff(patched, patched) is None  # nothing to do, no request
    json_patched = await client.patch(
        CONFIGMAP,
        namespace,
        "a",
        [{"op": "add", "path": "/data/v", "value": "5"}],
        patch_type="json",
    )
    assert json_patched["data"] == {"w": "4", "v": "5"}

    with pytest.raises(Conflict):
        await client.delete(CONFIGMAP, namespace, "a", preconditions=Preconditions(uid="nope"))
    await client.delete(CONFIGMAP, namespace, "a", preconditions=Preconditions(uid=created.uid))
    await client.delete(CONFIGMAP, namespace, "a", ignore_not_found=True)
    assert [o.name for o in await client.list(CONFIGMAP, namespace)] == ["kube-root-ca.crt"]


async def test_server_side_apply_conflicts_and_force(client: Client, namespace: str) -> None:
    await client.apply(cm(namespace, "ssa", owner="alice"), field_manager="alice")
    with pytest.raises(Conflict):
        await client.apply(cm(namespace, "ssa", owner="bob"), field_manager="bob")
    forced = await client.apply(cm(namespace, "ssa", owner="bob"), field_manager="bob", force=True)
    assert forced["data"] == {"owner": "bob"}


async def test_status_subresource(client: Client, namespace: str) -> None:
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }
    created = await client.create(deploy)
    status = await client.patch_status(
        DEPLOYMENT, namespace, "d", {"status": {"observedGeneration": 7}}
    )
    assert status["status"]["observedGeneration"] == 7
    # the main resource ignores status; the status subresource ignores spec
    spec_change = await client.patch_status(DEPLOYMENT, namespace, "d", {"spec": {"replicas": 3}})
    assert spec_change["spec"]["replicas"] == 0
    assert created.generation == spec_change.generation  # type: ignore[union-attr]


async def test_discovery_resolves_plural_and_scope(client: Client) -> None:
    res = await client.resource(GVK("coordination.k8s.io", "v1", "Lease"))
    assert res.plural == "leases" and res.namespaced
    node = await client.resource(GVK("", "v1", "Node"))
    assert node.plural == "nodes" and not node.namespaced
    assert node.path(None, "n1") == "/api/v1/nodes/n1"
    with pytest.raises(NotFound):
        await client.resource(GVK("", "v1", "NoSuchKind"))
