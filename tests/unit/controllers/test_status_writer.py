"""The status writer compares with our own last write while the cache has not shown it."""

from __future__ import annotations

from typing import Any, cast

from kaito.api import WorkspaceBase, parse_workspace
from kaito.api.constants import ConditionType, Reason
from kaito.controllers.common import Facts
from kaito.controllers.status import StatusWriter


class Recorder:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_status(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.patches.append(args[3]["status"])
        return {"metadata": {"resourceVersion": str(100 + len(self.patches))}}


def cached(resource_version: str, status: dict[str, Any] | None) -> WorkspaceBase:
    doc: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": "ws",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": resource_version,
            "creationTimestamp": "2020-01-01T00:00:00Z",
        },
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    if status is not None:
        doc["status"] = status
    return cast(WorkspaceBase, parse_workspace(doc))


def facts(ready: bool, nodes: list[str]) -> Facts:
    f = Facts(worker_nodes=nodes, target=1)
    reason = Reason.WORKSPACE_SUCCEEDED if ready else Reason.WORKSPACE_PENDING
    f.set(ConditionType.WORKSPACE_SUCCEEDED, ready, reason, "m")
    return f


async def test_the_newest_known_status_is_the_baseline() -> None:
    client = Recorder()
    writer = StatusWriter(cast(Any, client))
    await writer.write(cached("5", None), facts(True, ["n1"]))
    ready = client.patches[-1]
    assert ready["state"] == "Ready" and ready["workerNodes"] == ["n1"]
    old = cached("101", ready)  # the cache shows our write
    assert await writer.write(old, facts(True, ["n1"])) is None
    assert len(client.patches) == 1, "nothing changed: no patch"

    await writer.write(old, facts(False, []))  # the node went away
    not_ready = client.patches[-1]
    assert not_ready["state"] == "NotReady"
    assert "workerNodes" in not_ready and not_ready["workerNodes"] is None, "cleared, not kept"
    await writer.write(old, facts(False, []))  # the cache still shows Ready: no repeat
    assert len(client.patches) == 2
    await writer.write(old, facts(True, ["n1"]))  # back to Ready before the cache caught up
    assert len(client.patches) == 3 and client.patches[-1]["state"] == "Ready"

    caught_up = cached("103", {k: v for k, v in client.patches[-1].items() if v is not None})
    await writer.write(caught_up, facts(True, ["n1"]))
    assert len(client.patches) == 3


async def test_a_failed_reconcile_is_shown_on_every_condition_until_one_succeeds() -> None:
    client = Recorder()
    writer = StatusWriter(cast(Any, client))
    first = facts(False, [])
    first.set(ConditionType.RESOURCE_READY, True, Reason.RESOURCE_STATUS_SUCCESS, "nodes ok")
    first.error = "403 Forbidden: exceeded quota"
    await writer.write(cached("5", None), first)
    failed = client.patches[-1]
    assert {c["message"] for c in failed["conditions"]} == {
        "m (last reconcile error: 403 Forbidden: exceeded quota)",
        "nodes ok (last reconcile error: 403 Forbidden: exceeded quota)",
    }
    # the next reconcile succeeds and sets only one condition: the other loses its suffix too
    await writer.write(cached("101", failed), facts(True, ["n1"]))
    assert {c["message"] for c in client.patches[-1]["conditions"]} == {"m", "nodes ok"}


async def test_a_condition_set_once_survives_a_write_made_while_the_cache_lags() -> None:
    """The benchmark's condition is set by one reconcile only; the next reconcile, run on a
    cached copy older than that write, must carry it over rather than write it away."""
    client = Recorder()
    writer = StatusWriter(cast(Any, client))
    first = facts(True, ["n1"])
    first.set(ConditionType.BENCHMARK_COMPLETED, False, "BenchmarkResultUnavailable", "no log")
    stale = cached("5", None)
    await writer.write(stale, first)
    second = facts(True, ["n1"])
    second.target = 2  # something else changed, so the second reconcile writes
    await writer.write(stale, second)  # the cache has not shown the first write yet
    assert len(client.patches) == 2
    kept = {c["type"]: c["reason"] for c in client.patches[-1]["conditions"]}
    assert kept[ConditionType.BENCHMARK_COMPLETED] == "BenchmarkResultUnavailable"
    assert client.patches[-1]["state"] == "Ready"
