"""The status writer compares with our own last write while the cache has not shown it."""

from __future__ import annotations

from typing import Any, cast

from kaito.api import WorkspaceBase, parse_workspace
from kaito.api.constants import ConditionType, Reason
from kaito.controllers.common import Facts
from kaito.controllers.status import MESSAGE_REFRESH_S, StatusWriter


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


def unschedulable(message: str) -> Facts:
    f = Facts(target=1)
    f.set(ConditionType.INFERENCE_READY, False, Reason.UNSCHEDULABLE, message)
    f.set(ConditionType.WORKSPACE_SUCCEEDED, False, Reason.WORKSPACE_PENDING, message)
    return f


async def test_a_change_of_messages_alone_waits_for_the_refresh_interval() -> None:
    """The scheduler rewrites its message on each attempt; one patch per attempt was 6.3
    status patches per Workspace at N=100. A new reason, an error or a new state goes out
    at once; a new message alone once MESSAGE_REFRESH_S have passed since our last write."""
    now = [1000.0]
    client = Recorder()
    writer = StatusWriter(cast(Any, client), clock=lambda: now[0])
    await writer.write(cached("5", None), unschedulable("49 node(s) had untolerated taint(s)"))
    assert len(client.patches) == 1
    shown = cached("101", client.patches[-1])
    now[0] += 2
    wait = await writer.write(shown, unschedulable("48 node(s) had untolerated taint(s)"))
    assert len(client.patches) == 1, "only the message changed: held back"
    assert wait == MESSAGE_REFRESH_S - 2, "and looked at again when the interval ends"
    failing = unschedulable("48 node(s) had untolerated taint(s)")
    failing.error = "409 Conflict"
    await writer.write(shown, failing)
    assert len(client.patches) == 2, "an error is shown at once"
    shown = cached("102", client.patches[-1])
    now[0] += 1
    bound = Facts(target=1)
    bound.set(ConditionType.INFERENCE_READY, False, Reason.INFERENCE_STATUS_PENDING, "0/2 ready")
    await writer.write(shown, bound)  # the pod was bound: a new reason
    assert len(client.patches) == 3
    shown = cached("103", client.patches[-1])
    now[0] += MESSAGE_REFRESH_S
    bound.set(ConditionType.INFERENCE_READY, False, Reason.INFERENCE_STATUS_PENDING, "1/2 ready")
    assert await writer.write(shown, bound) is None
    assert len(client.patches) == 4, "a new message alone, after the interval"
