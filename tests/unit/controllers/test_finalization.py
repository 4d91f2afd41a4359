"""A Workspace's finalizer is released once: a stale cached copy afterwards sends nothing."""

from __future__ import annotations

from typing import Any, cast

from kaito.api import parse_workspace
from kaito.controllers import objects as o
from kaito.controllers.common import WorkspaceSettings
from kaito.controllers.finalization import Finalizer

WS = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {
        "name": "phi",
        "namespace": "default",
        "uid": "ws-uid-1",
        "finalizers": ["workspace.finalizer.kaito.sh"],
        "deletionTimestamp": "2026-01-01T00:00:00Z",
    },
    "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {}}},
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
}


class NoClaims:
    def list(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


class Recording:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def list(self, *args: Any, **kwargs: Any) -> list[Any]:
        self.calls.append("list")
        return []

    async def patch(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("patch")
        return {}


async def test_released_once_then_the_stale_copy_is_left_alone() -> None:
    client = Recording()
    fin = Finalizer(cast(Any, client), cast(Any, NoClaims()), WorkspaceSettings())
    ws = parse_workspace(WS)
    assert ws.metadata.finalizers == ["workspace.finalizer.kaito.sh"]
    owner = o.Owner(name="phi", namespace="default", uid="ws-uid-1")
    assert not fin.released(ws)
    assert await fin.finalize(ws, owner) == (True, None)
    assert client.calls == ["list", "patch"]
    assert fin.released(ws)
    other = parse_workspace({**WS, "metadata": {**WS["metadata"], "uid": "ws-uid-2"}})
    assert not fin.released(other)  # a new Workspace of the same name
