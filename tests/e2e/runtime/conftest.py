"""Fixtures for the runtime's e2e tests: a client config for the session cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig, load_config
from kaito.runtime.metrics import Metrics

from ..conftest import Cluster


@pytest.fixture
async def client_config(cluster: Cluster) -> ClientConfig:
    return await load_config(str(cluster.kubeconfig))


@pytest.fixture
async def client(client_config: ClientConfig) -> AsyncIterator[Client]:
    async with Client(client_config, metrics=Metrics()) as c:
        yield c


async def eventually(
    what: str,
    check: Callable[[], Any | Awaitable[Any]],
    timeout: float = 30.0,  # noqa: ASYNC109
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
