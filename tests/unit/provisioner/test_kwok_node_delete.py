"""The KWOK backend deletes a claim's node once, however often the claim is reconciled."""

from __future__ import annotations

from typing import Any, cast

from kaito.operator import ClientNodes
from kaito.provisioner.kwok import KwokProvisioner
from kaito.runtime.errors import NotFound
from kaito.runtime.objects import KObject

NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ws0a1b2c3d", "uid": "node-1"}}


class StaleCache:
    """Shows the node until told it is gone (its delete event not yet in)."""

    def __init__(self) -> None:
        self.node: dict[str, Any] | None = NODE

    def get(self, gvk: object, namespace: str | None, name: str) -> KObject | None:
        return KObject(self.node) if self.node and name == self.node["metadata"]["name"] else None


class CountingDeletes:
    def __init__(self) -> None:
        self.deletes: list[str] = []

    async def delete(self, gvk: object, namespace: str | None, name: str, **_: Any) -> None:
        self.deletes.append(name)
        if len(self.deletes) > 1:
            raise NotFound(404, "NotFound", "nodes not found")


async def test_the_node_is_deleted_once_while_the_cache_still_shows_it() -> None:
    client, cache = CountingDeletes(), StaleCache()
    kwok = KwokProvisioner(ClientNodes(cast(Any, client), cast(Any, cache)), lambda _: None)
    assert not await kwok.delete("ws0a1b2c3d")  # asked; the node is still in the cache
    assert not await kwok.delete("ws0a1b2c3d")  # woken again before the delete event
    assert client.deletes == ["ws0a1b2c3d"]
    cache.node = None
    assert await kwok.delete("ws0a1b2c3d")


async def test_a_new_node_of_the_same_name_is_deleted_again() -> None:
    client, cache = CountingDeletes(), StaleCache()
    nodes = ClientNodes(cast(Any, client), cast(Any, cache))
    await nodes.delete_node("ws0a1b2c3d")
    cache.node = {**NODE, "metadata": {"name": "ws0a1b2c3d", "uid": "node-2"}}
    await nodes.delete_node("ws0a1b2c3d")
    assert client.deletes == ["ws0a1b2c3d", "ws0a1b2c3d"]
