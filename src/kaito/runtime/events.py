"""A core/v1 Event recorder that aggregates repeats instead of writing a new Event each time.

``event()`` never blocks a reconcile: events go through a bounded in-memory queue that one
background task writes out. The same (object, type, reason, message) within ``window``
seconds bumps ``count`` and ``lastTimestamp`` of the existing Event with a merge patch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kaito.runtime.client import Client
from kaito.runtime.errors import ApiError, NotFound
from kaito.runtime.gvk import EVENT
from kaito.runtime.objects import Obj, to_dict

log = logging.getLogger("kaito.runtime.events")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_Pending = tuple[dict[str, Any], str, str, str]


@dataclass
class _Seen:
    namespace: str
    name: str
    count: int
    last: float


class EventRecorder:
    """Records Events about objects on behalf of one component."""

    def __init__(
        self,
        client: Client,
        component: str,
        *,
        host: str | None = None,
        window: float = 600.0,
        max_pending: int = 1000,
    ) -> None:
        self.client = client
        self.component = component
        self.host = host or socket.gethostname()
        self.window = window
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, str]] = asyncio.Queue(
            max_pending
        )
        self._seen: dict[tuple[str, str, str, str, str], _Seen] = {}
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0

    def event(self, obj: Obj | dict[str, Any], event_type: str, reason: str, message: str) -> None:
        """Record an Event (``event_type`` is "Normal" or "Warning")."""
        if event_type not in ("Normal", "Warning"):
            raise ValueError(f"event type must be Normal or Warning, not {event_type!r}")
        data = to_dict(obj)
        meta = data.get("metadata") or {}
        ref = {
            "apiVersion": data.get("apiVersion", ""),
            "kind": data.get("kind", ""),
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        try:
            self._queue.put_nowait(
                ({k: v for k, v in ref.items() if v}, event_type, reason, message[:1024])
            )
        except asyncio.QueueFull:
            self.dropped += 1
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"events {self.component}")

    async def flush(self) -> None:
        """Wait until every recorded event has been written."""
        await self._queue.join()

    async def close(self, *, flush: bool = True) -> None:
        """Stop; with ``flush`` first write what is queued (up to 5 s), else drop it."""
        if flush:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.flush(), 5)
        else:
            self.dropped += self._queue.qsize()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._write(*item)
            except (ApiError, OSError) as exc:
                log.warning("could not write event %s: %s", item[2], exc)
            finally:
                self._queue.task_done()

    async def _write(self, ref: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        namespace = ref.get("namespace") or "default"
        key = (
            str(ref.get("uid") or ref.get("name")),
            ref.get("kind", ""),
            event_type,
            reason,
            message,
        )
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen.last < self.window:
            seen.count += 1
            seen.last = now
            try:
                await self.client.patch(
                    EVENT, seen.namespace, seen.name, {"count": seen.count, "lastTimestamp": _now()}
                )
                self.written += 1
                return
            except NotFound:
                pass  # expired or deleted meanwhile: write a fresh one
        stamp = _now()
        name = f"{ref.get('name', 'object')}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": event_type,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        }
        await self.client.create(body)
        self.written += 1
        self._seen[key] = _Seen(namespace, name, 1, now)
        if len(self._seen) > 4096:  # forget the oldest half
            for old in sorted(self._seen, key=lambda k: self._seen[k].last)[:2048]:
                del self._seen[old]
