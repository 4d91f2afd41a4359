"""The garbage collector's loop under cloud errors (found by the chaos suite's Azure storm)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from kaito.controllers import garbage
from kaito.provisioner.base import ProvisionerError
from kaito.runtime.gvk import GVK


class FailingBackend:
    name = "failing"
    on_settled = None

    def __init__(self) -> None:
        self.calls = 0

    async def list_requests(self) -> list[str]:
        self.calls += 1
        raise ProvisionerError("AzureServerError", "An internal server error occurred.")


class SyncedCache:
    """A synced cache without claims: nothing orphaned, every backend resource unclaimed."""

    synced = True

    def entries(self, *_: Any, **__: Any) -> list[Any]:
        return []

    def get(self, *_: Any) -> None:
        return None


async def test_a_cloud_error_is_one_warning_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = FailingBackend()
    task = asyncio.create_task(
        garbage.run_garbage_collector(
            None,  # type: ignore[arg-type]  # no claim is orphaned: the client is not used
            backend,  # type: ignore[arg-type]
            SyncedCache(),  # type: ignore[arg-type]
            GVK("karpenter.sh", "v1", "NodeClaim"),
            interval_s=0.01,
        )
    )
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.calls >= 2  # retried on the next interval
    failures = [r for r in caplog.records if "garbage collection failed" in r.getMessage()]
    assert failures and all(r.levelno == logging.WARNING and not r.exc_info for r in failures)
    assert "internal server error" in failures[0].getMessage()
