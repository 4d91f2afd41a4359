"""Which StatefulSet writes become Events on the Workspace (issue 21: requests per Workspace)."""

from __future__ import annotations

from typing import Any, cast

from kaito.api import parse_workspace
from kaito.controllers.common import WorkspaceSettings
from kaito.controllers.workload import Workload

WS: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "phi", "namespace": "default", "uid": "ws-1"},
    "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {}}},
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
}


class Cache:
    def __init__(self) -> None:
        self.statefulset: dict[str, Any] | None = None

    def get(self, *args: Any) -> dict[str, Any] | None:
        return self.statefulset


class Recorder:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def event(self, obj: Any, event_type: str, reason: str, message: str) -> None:
        self.reasons.append(reason)


class Applier:
    async def apply_if_changed(self, gvk: Any, desired: dict[str, Any]) -> bool:
        return True


async def test_a_new_statefulset_is_no_event_and_a_new_revision_is_one() -> None:
    """Upstream records no Event when it creates the workload; ours did, one request in ten
    of a new Workspace's. A changed spec still leaves WorkloadUpdated on the Workspace."""
    cache, recorder = Cache(), Recorder()
    work = Workload(
        cast(Any, cache), cast(Any, recorder), WorkspaceSettings(), cast(Any, Applier())
    )
    ws = parse_workspace(WS)
    await work._apply(ws, {"kind": "StatefulSet"}, "1", "model weights come from the hub")
    assert recorder.reasons == []
    cache.statefulset = {"kind": "StatefulSet"}
    await work._apply(ws, {"kind": "StatefulSet"}, "2", "model weights come from the hub")
    assert recorder.reasons == ["WorkloadUpdated"]
