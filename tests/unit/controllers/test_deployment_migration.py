"""The pre-v0.8 Deployment check: a read only for Workspaces an older Kaito may have run."""

from __future__ import annotations

from typing import Any, cast

from kaito.api import parse_workspace
from kaito.controllers.apply import Applier
from kaito.controllers.common import WorkspaceSettings
from kaito.controllers.workload import Workload
from kaito.runtime.errors import NotFound

WS: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "phi", "namespace": "default", "uid": "ws-1"},
    "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {}}},
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
}
CONDITION = {
    "type": "WorkspaceSucceeded",
    "status": "True",
    "reason": "WorkspaceSucceeded",
    "message": "",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
}


class NoDeployments:
    def __init__(self) -> None:
        self.gets = 0

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        self.gets += 1
        raise NotFound(404, "NotFound", "deployments.apps not found")


def workload(client: NoDeployments) -> Workload:
    applier = Applier(cast(Any, client), cast(Any, None))
    return Workload(cast(Any, None), cast(Any, None), WorkspaceSettings(), applier)


async def test_a_workspace_first_seen_without_status_is_not_read_for() -> None:
    client = NoDeployments()
    work = workload(client)
    ws = parse_workspace(WS)
    work.note_first_sight(ws)
    await work.migrate_deployment(ws)
    assert client.gets == 0


async def test_a_workspace_with_status_is_read_for_once() -> None:
    """After an upgrade (or an operator restart) the Workspace already has status."""
    client = NoDeployments()
    work = workload(client)
    ws = parse_workspace({**WS, "status": {"conditions": [CONDITION]}})
    work.note_first_sight(ws)
    await work.migrate_deployment(ws)
    await work.migrate_deployment(ws)
    assert client.gets == 1
