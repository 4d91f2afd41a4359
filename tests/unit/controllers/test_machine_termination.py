"""Releasing a claim after its node is gone: an API error is a failure, not a success."""

from __future__ import annotations

from typing import Any, cast

import pytest

from kaito.controllers.common import NODECLAIM
from kaito.controllers.machine import MachineReconciler
from kaito.runtime.errors import ApiError, Forbidden, NotFound
from kaito.runtime.objects import KObject
from kaito.runtime.request import Request

CLAIM = {
    "apiVersion": "karpenter.sh/v1",
    "kind": "NodeClaim",
    "metadata": {
        "name": "ws0a1b2c3d",
        "labels": {"karpenter.sh/nodepool": "kaito"},
        "uid": "claim-uid-1",
        "finalizers": ["karpenter.sh/termination"],
        "deletionTimestamp": "2026-01-01T00:00:00Z",
    },
}


class OneClaim:
    def get(self, gvk: object, namespace: str | None, name: str) -> KObject | None:
        return KObject(CLAIM) if name == CLAIM["metadata"]["name"] else None


class NodeGone:
    async def delete(self, name: str) -> bool:
        return True


class FailingPatch:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.patches: list[Any] = []

    async def patch(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.patches.append(args)
        if self.error is not None:
            raise self.error
        return {}


def reconciler(client: FailingPatch) -> MachineReconciler:
    return MachineReconciler(
        cast(Any, client),
        cast(Any, OneClaim()),
        recorder=cast(Any, None),
        provisioner=cast(Any, NodeGone()),
        claim_gvk=NODECLAIM,
        gpus_of=lambda _: 1,
    )


@pytest.mark.parametrize(
    "error", [ApiError(500, "InternalError", "etcd timeout"), Forbidden(403, "Forbidden", "no")]
)
async def test_a_failed_finalizer_removal_is_an_error(error: ApiError) -> None:
    client = FailingPatch(error)
    with pytest.raises(type(error)):
        await reconciler(client)(Request("", "ws0a1b2c3d"))
    assert len(client.patches) == 1


async def test_a_claim_already_gone_is_done() -> None:
    client = FailingPatch(NotFound(404, "NotFound", "gone"))
    assert await reconciler(client)(Request("", "ws0a1b2c3d")) is None


async def test_the_finalizer_is_removed_by_a_tested_json_patch() -> None:
    client = FailingPatch(None)
    assert await reconciler(client)(Request("", "ws0a1b2c3d")) is None
    (args,) = client.patches
    assert args[3] == [
        {"op": "test", "path": "/metadata/finalizers/0", "value": "karpenter.sh/termination"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]


async def test_a_stale_copy_after_the_release_sends_nothing() -> None:
    """The cache still shows the claim with its finalizer until the delete event arrives;
    a reconcile woken meanwhile must not patch again (that can only answer 404)."""
    client = FailingPatch(None)
    rec = reconciler(client)
    await rec(Request("", "ws0a1b2c3d"))
    await rec(Request("", "ws0a1b2c3d"))
    assert len(client.patches) == 1


async def test_a_new_claim_of_the_same_name_is_released_again() -> None:
    client = FailingPatch(None)
    rec = reconciler(client)
    await rec(Request("", "ws0a1b2c3d"))
    CLAIM["metadata"]["uid"] = "claim-uid-2"
    try:
        await rec(Request("", "ws0a1b2c3d"))
    finally:
        CLAIM["metadata"]["uid"] = "claim-uid-1"
    assert len(client.patches) == 2
