"""LIST then WATCH one resource, forever, feeding a store (client-go's reflector, in asyncio).

- The first LIST is paginated; the WATCH starts at the list's resourceVersion with
  ``allowWatchBookmarks`` so idle streams still advance the resourceVersion.
- 410 Gone / "too old resource version" (the RV was compacted away) → relist and replace the
  store; the store emits deletes for objects that vanished meanwhile.
- Any other failure → reconnect after a jittered exponential backoff (0.8 s … 30 s, reset
  after two healthy minutes), resuming from the last resourceVersion seen.
- Watches rotate after a random 5-10 min server timeout, as client-go's do.
- A watch the server closes at once with nothing on it (< 1 s, no event) counts as a
  failure and backs off, so a misbehaving server or proxy cannot make us spin.
- A connection that carries nothing for ``idle_timeout`` is dead (the apiserver sends a
  bookmark about every minute on an idle watch; a vanished peer sends no FIN): reconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp

from kaito.runtime.client import Client
from kaito.runtime.errors import ApiError, Gone, WatchExpired
from kaito.runtime.gvk import GVK

log = logging.getLogger("kaito.runtime.reflector")

Transform = Callable[[dict[str, Any]], dict[str, Any]]


def strip_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """Default transform: managedFields are large and no controller reads them from a cache."""
    meta = obj.get("metadata")
    if meta:
        meta.pop("managedFields", None)
    return obj


class Sink(Protocol):
    """Where a reflector delivers what it sees (the informer)."""

    def begin_relist(self) -> None: ...

    def relist_page(self, items: list[dict[str, Any]]) -> None: ...

    def end_relist(self, resource_version: str) -> None: ...

    def apply(self, event_type: str, obj: dict[str, Any]) -> None: ...


class Backoff:
    """Jittered exponential delays that reset after a healthy stretch."""

    def __init__(self, initial: float = 0.8, cap: float = 30.0, reset_after: float = 120.0) -> None:
        self.initial, self.cap, self.reset_after = initial, cap, reset_after
        self._current = 0.0
        self._last = 0.0

    def next(self) -> float:
        now = time.monotonic()
        if self._current == 0.0 or now - self._last > self.reset_after:
            self._current = self.initial
        else:
            self._current = min(self._current * 2, self.cap)
        self._last = now
        return self._current * (1 + random.random())  # jitter factor 1.0, as client-go


SHORT_WATCH_S = 1.0
# comfortably above the apiserver's bookmark period (a minute) so healthy idle watches stay up
DEFAULT_IDLE_TIMEOUT_S = 100.0


class ShortWatch(Exception):
    """The server ended a watch at once without sending anything."""


class Reflector:
    """Keeps a sink in step with the apiserver for one GVK (+ namespace/selectors)."""

    def __init__(
        self,
        client: Client,
        gvk: GVK,
        sink: Sink,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        transform: Transform | None = strip_managed_fields,
        page_size: int = 500,
        min_watch_timeout: float = 300.0,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.gvk = gvk
        self.sink = sink
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.transform = transform
        self.page_size = page_size
        self.min_watch_timeout = min_watch_timeout
        self.idle_timeout = idle_timeout
        self.resource_version = ""
        self.lists = 0  # how many LISTs ran (tests assert relists through it)
        self.expired = 0  # how many watches ended with 410
        self.watches = 0  # how many watch connections were opened
        self._events = 0  # events (bookmarks included) received on the current watch
        self.backoff = Backoff()
        self._stopped = False

    def __repr__(self) -> str:
        scope = f" ns={self.namespace}" if self.namespace else ""
        sel = f" labels={self.label_selector}" if self.label_selector else ""
        return f"Reflector({self.gvk}{scope}{sel})"

    def stop(self) -> None:
        self._stopped = True

    async def run(self) -> None:
        """List, then watch; on failure relist or resume, until cancelled or stopped."""
        need_list = not self.resource_version
        while not self._stopped:
            try:
                if need_list:
                    await self.list_and_replace()
                    need_list = False
                await self.watch()
            except asyncio.CancelledError:
                raise
            except (WatchExpired, Gone) as exc:
                self.expired += 1
                log.info(
                    "%r: resourceVersion %s expired (%s); relisting",
                    self,
                    self.resource_version,
                    exc,
                )
                need_list = True
                continue
            except (
                TimeoutError,
                ShortWatch,
                ApiError,
                aiohttp.ClientError,
                OSError,
                ValueError,
            ) as exc:
                delay = self.backoff.next()
                log.warning("%r: %s: %s; retrying in %.1fs", self, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
            except Exception:
                # a bug (ours or a transform's) must not silently end the informer
                delay = self.backoff.next()
                log.exception("%r: unexpected error; relisting in %.1fs", self, delay)
                need_list = True
                await asyncio.sleep(delay)

    async def list_and_replace(self) -> None:
        """Page by page into the sink (only one page is ever decoded in memory)."""
        api_version, kind = self.gvk.api_version, self.gvk.kind
        transform = self.transform
        rv = ""
        self.sink.begin_relist()
        async for items, page_rv in self.client.list_pages(
            self.gvk,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            page_size=self.page_size,
        ):
            for item in items:
                item["apiVersion"] = api_version  # list items come without them
                item["kind"] = kind
                if transform is not None:
                    transform(item)
            self.sink.relist_page(items)
            rv = page_rv
            del items
        self.lists += 1
        self.sink.end_relist(rv)
        self.resource_version = rv

    async def watch(self) -> None:
        """One watch connection; returns when the server closes it normally.

        Raises ``ShortWatch`` when the server closed it at once with nothing on it, and
        ``TimeoutError`` when nothing arrived for ``idle_timeout``.
        """
        started = time.monotonic()
        self._events = 0
        self.watches += 1
        await self._watch()
        if self._events == 0 and time.monotonic() - started < SHORT_WATCH_S:
            raise ShortWatch("the server closed the watch at once, without an event")

    async def _watch(self) -> None:
        res = await self.client.resource(self.gvk)
        timeout = int(self.min_watch_timeout * (1 + random.random()))
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version,
            "timeoutSeconds": timeout,
            "labelSelector": self.label_selector,
            "fieldSelector": self.field_selector,
        }
        path = res.path(self.namespace if res.namespaced else None)
        # no byte for this long means the connection is dead (bookmarks arrive every ~minute)
        async with self.client.stream(path, query, read_timeout=self.idle_timeout) as resp:
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._handle(json.loads(line))
            if buffer.strip():
                self._handle(json.loads(buffer))

    def _handle(self, event: dict[str, Any]) -> None:
        self._events += 1
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            message = str(obj.get("message", ""))
            if code == 410 or "too old resource version" in message:
                raise WatchExpired(410, str(obj.get("reason", "Expired")), message, obj)
            raise ApiError(code or 500, str(obj.get("reason", "")), message, obj)
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            log.debug("%r: ignoring watch event %r", self, kind)
            return
        if self.transform is not None:
            obj = self.transform(obj)
        self.sink.apply(kind, obj)
        if rv:
            self.resource_version = rv
