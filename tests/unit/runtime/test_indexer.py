"""Indexer queries and cache isolation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from kaito.runtime.gvk import GVK
from kaito.runtime.indexer import Indexer
from kaito.runtime.objects import KObject, Scheme
from kaito.runtime.selectors import parse_selector


def pod(
    ns: str,
    name: str,
    labels: dict[str, str] | None = None,
    owner: str | None = None,
    node: str = "",
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "namespace": ns,
        "name": name,
        "uid": f"uid-{ns}-{name}",
        "resourceVersion": "1",
        "labels": labels or {},
    }
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "name": owner,
                "uid": f"uid-{owner}",
                "controller": True,
            }
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": node}}


@pytest.fixture
def indexer() -> Indexer:
    idx = Indexer()
    idx.add_index("node", lambda o: [o["spec"]["nodeName"]] if o["spec"].get("nodeName") else [])
    idx.upsert(pod("a", "p1", {"app": "web", "tier": "fe"}, owner="ss1", node="n1"))
    idx.upsert(pod("a", "p2", {"app": "web", "tier": "be"}, owner="ss1", node="n2"))
    idx.upsert(pod("b", "p3", {"app": "db"}, node="n1"))
    idx.upsert(pod("b", "p4", {}))
    return idx


def keys(entries: Any) -> list[str]:
    return [e.key for e in entries]


def test_queries(indexer: Indexer) -> None:
    assert keys(indexer.select()) == ["a/p1", "a/p2", "b/p3", "b/p4"]
    assert keys(indexer.select(namespace="b")) == ["b/p3", "b/p4"]
    assert keys(indexer.select(selector=parse_selector("app=web"))) == ["a/p1", "a/p2"]
    assert keys(indexer.select(selector=parse_selector("app=web,tier!=fe"))) == ["a/p2"]
    assert keys(indexer.select(selector=parse_selector("!app"))) == ["b/p4"]
    assert keys(indexer.select(selector=parse_selector("app in (db,web)"), namespace="b")) == [
        "b/p3"
    ]
    assert keys(indexer.select(owner_uid="uid-ss1")) == ["a/p1", "a/p2"]
    assert keys(indexer.select(index=("node", "n1"))) == ["a/p1", "b/p3"]
    assert keys(indexer.select(index=("node", "n1"), namespace="a")) == ["a/p1"]
    assert keys(indexer.select(namespace="zzz")) == []


def test_updates_and_deletes_move_index_entries(indexer: Indexer) -> None:
    old, _ = indexer.upsert(pod("a", "p1", {"app": "db"}, node="n3"))
    assert old is not None and old.labels == {"app": "web", "tier": "fe"}
    assert keys(indexer.select(selector=parse_selector("app=web"))) == ["a/p2"]
    assert keys(indexer.select(index=("node", "n1"))) == ["b/p3"]
    assert keys(indexer.select(index=("node", "n3"))) == ["a/p1"]
    assert keys(indexer.select(owner_uid="uid-ss1")) == ["a/p2"]
    indexer.remove("a/p2")
    assert keys(indexer.select(owner_uid="uid-ss1")) == []
    assert keys(indexer.select(namespace="a")) == ["a/p1"]
    assert len(indexer) == 3


def test_unknown_index_is_a_clear_error(indexer: Indexer) -> None:
    with pytest.raises(KeyError, match="no index named 'gpu'"):
        indexer.select(index=("gpu", "x"))


def test_reads_are_isolated_from_the_cache(indexer: Indexer) -> None:
    source = pod("c", "p5", {"app": "x"})
    _, entry = indexer.upsert(source)
    source["metadata"]["labels"]["app"] = "mutated-after-store"
    first = KObject(entry.decode())
    first.labels["app"] = "mutated-by-reader"
    first["spec"]["nodeName"] = "elsewhere"
    again = KObject(indexer.get("c/p5").decode())  # type: ignore[union-attr]
    assert again.labels == {"app": "x"}
    assert again.spec == {"nodeName": ""}
    assert keys(indexer.select(selector=parse_selector("app=x"))) == ["c/p5"]


class Widget(BaseModel):
    model_config = ConfigDict(extra="allow")
    apiVersion: str
    kind: str
    metadata: dict[str, Any]
    spec: dict[str, Any] = {}


def test_scheme_decodes_registered_kinds_into_models() -> None:
    gvk = GVK("example.com", "v1", "Widget")
    scheme = Scheme()
    scheme.register(gvk, Widget)
    raw = '{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},"spec":{"n":1}}'
    one = scheme.decode_json(gvk, raw)
    two = scheme.decode_json(gvk, raw)
    assert isinstance(one, Widget) and one.spec == {"n": 1}
    one.spec["n"] = 2
    assert isinstance(two, Widget) and two.spec == {"n": 1}
    other = scheme.decode_json(GVK("", "v1", "ConfigMap"), '{"metadata":{"name":"c"}}')
    assert isinstance(other, KObject) and other.name == "c"
