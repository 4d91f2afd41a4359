"""A reconcile's independent writes run at once, and a failure leaves none running."""

from __future__ import annotations

import asyncio

import pytest

from kaito.controllers.common import all_of


async def test_writes_overlap_and_the_first_failure_is_raised_after_all_ended() -> None:
    started: list[str] = []
    ended: list[str] = []
    both_started = asyncio.Event()

    async def write(name: str, fail: bool) -> None:
        started.append(name)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 1)  # each waits for the other: overlap
        await asyncio.sleep(0.01 if fail else 0.05)
        ended.append(name)
        if fail:
            raise RuntimeError(name)

    with pytest.raises(RuntimeError, match="service"):
        await all_of(write("service", True), write("statefulset", False))
    assert sorted(ended) == ["service", "statefulset"]  # the slower write was not dropped


async def test_nothing_to_write_is_fine() -> None:
    await all_of()
