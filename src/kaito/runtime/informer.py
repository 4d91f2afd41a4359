"""A shared informer: one reflector feeding one indexed store, fanning events out to handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kaito.runtime.client import Client
from kaito.runtime.gvk import GVK
from kaito.runtime.indexer import Entry, Indexer, IndexFunc, object_key
from kaito.runtime.objects import KObject
from kaito.runtime.reflector import Reflector, Transform, strip_managed_fields

log = logging.getLogger("kaito.runtime.informer")

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass(slots=True)
class InformerEvent:
    """One change seen by an informer.

    ``obj`` is the new state (the last known state for DELETED); it is shared by every
    handler of the informer, so treat it as read-only. ``old`` is the previous cache entry
    (``old.decode()`` gives the full previous object). ``initial`` marks events replayed from
    a (re)list or a periodic resync rather than a live watch event.
    """

    type: str
    gvk: GVK
    obj: KObject
    old: Entry | None
    initial: bool = False


Listener = Callable[[InformerEvent], None]


class Informer:
    """Keeps an ``Indexer`` in step with the apiserver and tells listeners about changes."""

    def __init__(
        self,
        client: Client,
        gvk: GVK,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        transform: Transform | None = strip_managed_fields,
        resync_period: float | None = 10 * 3600.0,
    ) -> None:
        self.gvk = gvk
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.indexer = Indexer()
        self.reflector = Reflector(
            client,
            gvk,
            self,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            transform=transform,
        )
        self.resync_period = resync_period
        self._listeners: list[Listener] = []
        self._synced = asyncio.Event()
        self._relist_seen: set[str] = set()
        self._relist_changed: list[Entry] = []
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"Informer({self.gvk}, ns={self.namespace!r}, labels={self.label_selector!r})"

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self.reflector.run(), name=f"reflector {self.gvk}"))
        if self.resync_period:
            self._tasks.append(asyncio.create_task(self._resync_loop(), name=f"resync {self.gvk}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_for_sync(self) -> None:
        await self._synced.wait()

    # ------------------------------------------------------------------ listeners
    def add_listener(self, listener: Listener) -> None:
        """Subscribe; a listener added after sync first gets every cached object as ADDED."""
        self._listeners.append(listener)
        if self.has_synced:
            for entry in self.indexer:
                self._deliver(
                    listener, InformerEvent(ADDED, self.gvk, KObject(entry.decode()), None, True)
                )

    def add_index(self, name: str, func: IndexFunc) -> None:
        self.indexer.add_index(name, func)

    def _deliver(self, listener: Listener, event: InformerEvent) -> None:
        try:
            listener(event)
        except Exception:
            log.exception("%r: event handler failed on %s %s", self, event.type, event.obj.name)

    def _emit(self, event: InformerEvent) -> None:
        for listener in self._listeners:
            self._deliver(listener, event)

    # ------------------------------------------------------------------ sink (reflector)
    def replace(self, items: list[dict[str, Any]], resource_version: str) -> None:
        """A full list in one go (tests; the reflector streams pages instead)."""
        self.begin_relist()
        self.relist_page(items)
        self.end_relist(resource_version)

    def begin_relist(self) -> None:
        self._relist_seen = set()
        self._relist_changed = []

    def relist_page(self, items: list[dict[str, Any]]) -> None:
        """Stage one page of a list; the store is left untouched until ``end_relist``.

        Applying pages as they arrive would let a reconcile (running between two page
        requests) read a mix of the old and the new list; client-go replaces its store in
        one step, and so do we. Unchanged objects (same resourceVersion) stage nothing, and
        changed ones are staged as compact entries, so at most one page is ever decoded.
        """
        seen, changed = self._relist_seen, self._relist_changed
        for item in items:
            entry = Entry(item)
            seen.add(entry.key)
            current = self.indexer.get(entry.key)
            if current is None or current.resource_version != entry.resource_version:
                changed.append(entry)

    def end_relist(self, resource_version: str) -> None:
        """The list is complete: swap it in at once (no await), then tell the listeners.

        Whatever the list did not contain was deleted meanwhile.
        """
        changes = [(self.indexer.put(entry), entry) for entry in self._relist_changed]
        gone = [
            entry
            for entry in map(self.indexer.remove, self.indexer.keys() - self._relist_seen)
            if entry is not None
        ]
        self._relist_seen, self._relist_changed = set(), []
        if self._listeners:
            for old, entry in changes:
                obj = KObject(entry.decode())
                self._emit(
                    InformerEvent(MODIFIED if old is not None else ADDED, self.gvk, obj, old, True)
                )
            for entry in gone:
                self._emit(InformerEvent(DELETED, self.gvk, KObject(entry.decode()), entry, True))
        log.debug("%r listed %d objects at RV %s", self, len(self.indexer), resource_version)
        self._synced.set()

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        """One watch event."""
        if event_type == DELETED:
            meta = obj.get("metadata") or {}
            old = self.indexer.remove(object_key(meta.get("namespace"), meta.get("name", "")))
            self._emit(InformerEvent(DELETED, self.gvk, KObject(obj), old))
            return
        old, _ = self.indexer.upsert(obj)
        self._emit(InformerEvent(ADDED if old is None else MODIFIED, self.gvk, KObject(obj), old))

    async def _resync_loop(self) -> None:
        """Replay the cache as updates now and then (no API call), as controller-runtime does."""
        assert self.resync_period
        while True:
            await asyncio.sleep(self.resync_period * (1 + 0.1 * random.random()))
            if not self.has_synced:
                continue
            for entry in self.indexer:
                self._emit(InformerEvent(MODIFIED, self.gvk, KObject(entry.decode()), entry, True))
