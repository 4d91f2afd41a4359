"""The informer cache: one shared informer per GVK + scope, typed reads that never hit the API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from kaito.runtime.client import Client
from kaito.runtime.gvk import GVK
from kaito.runtime.indexer import Entry, IndexFunc, object_key
from kaito.runtime.informer import Informer
from kaito.runtime.objects import Obj, Scheme
from kaito.runtime.reflector import Transform, strip_managed_fields
from kaito.runtime.selectors import Selector, parse_selector

_Entries = list[Entry]
InformerKey = tuple[GVK, str | None, str | None, str | None]


class InformerNotFound(LookupError):
    """A read for a kind nobody asked the cache to watch."""


class Cache:
    """Shared informers and reads from them.

    Reads decode a fresh object per call: a caller may mutate what it gets without touching
    the cache. Objects of kinds registered in the scheme come back as their pydantic model,
    others as ``KObject`` dicts.
    """

    def __init__(
        self,
        client: Client,
        *,
        scheme: Scheme | None = None,
        transform: Transform | None = strip_managed_fields,
        resync_period: float | None = 10 * 3600.0,
    ) -> None:
        self.client = client
        self.scheme = scheme if scheme is not None else client.scheme
        self.transform = transform
        self.resync_period = resync_period
        self._informers: dict[InformerKey, Informer] = {}
        self._started = False

    # ------------------------------------------------------------------ informers
    def informer(
        self,
        gvk: GVK,
        *,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
    ) -> Informer:
        """The shared informer for this GVK and scope, created (and started) on first use."""
        labels = str(parse_selector(label_selector)) or None if label_selector else None
        key: InformerKey = (gvk, namespace, labels, field_selector)
        found = self._informers.get(key)
        if found is None:
            found = Informer(
                self.client,
                gvk,
                namespace=namespace,
                label_selector=labels,
                field_selector=field_selector,
                transform=self.transform,
                resync_period=self.resync_period,
            )
            self._informers[key] = found
            if self._started:
                found.start()
        return found

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    def add_index(self, gvk: GVK, name: str, func: IndexFunc) -> None:
        """A custom index on every informer of ``gvk`` (e.g. pods by ``spec.nodeName``)."""
        for inf in self._informers_for(gvk) or [self.informer(gvk)]:
            inf.add_index(name, func)

    def start(self) -> None:
        self._started = True
        for inf in self._informers.values():
            inf.start()

    async def stop(self) -> None:
        self._started = False
        for inf in self._informers.values():
            await inf.stop()

    async def wait_for_cache_sync(self, timeout: float | None = 120.0) -> bool:  # noqa: ASYNC109
        """True once every informer has listed; False if ``timeout`` passes first."""
        waits = [inf.wait_for_sync() for inf in self._informers.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def synced(self) -> bool:
        return all(inf.has_synced for inf in self._informers.values())

    async def ensure(self, gvk: GVK, timeout: float | None = 120.0) -> Informer:  # noqa: ASYNC109
        """Make sure an all-namespaces informer for ``gvk`` runs and has synced."""
        inf = self.informer(gvk)
        if not inf.running:
            inf.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inf.wait_for_sync(), timeout)
        return inf

    def _informers_for(self, gvk: GVK) -> list[Informer]:
        return [inf for (g, *_), inf in self._informers.items() if g == gvk]

    def _readers(self, gvk: GVK, namespace: str | None) -> list[Informer]:
        """The informers of ``gvk`` that cover ``namespace``, the preferred first."""
        # prefer an unscoped informer, then one scoped to the namespace asked for
        readers = [
            inf
            for inf in sorted(
                self._informers_for(gvk),
                key=lambda i: (i.label_selector is not None, i.field_selector is not None),
            )
            if inf.namespace is None or inf.namespace == namespace
        ]
        if not readers:
            raise InformerNotFound(
                f"no informer caches {gvk}"
                + (f" in namespace {namespace!r}" if namespace else "")
                + "; watch it from a controller or call cache.informer()/ensure() first"
            )
        return readers

    def _reader(self, gvk: GVK, namespace: str | None) -> Informer:
        return self._readers(gvk, namespace)[0]

    # ------------------------------------------------------------------ reads
    def _decode(self, gvk: GVK, entry: Entry) -> Obj:
        return self.scheme.decode_json(gvk, entry.raw)

    def get(self, gvk: GVK, namespace: str | None, name: str) -> Obj | None:
        """The cached object, or None. Never issues an API request.

        Controllers that watch one kind through differently labelled informers (a
        Workspace's Services and an InferenceSet's) each find their own objects: every
        informer of the kind covering the namespace is asked, the preferred first.
        """
        key = object_key(namespace, name)
        for reader in self._readers(gvk, namespace):
            entry = reader.indexer.get(key)
            if entry is not None:
                return self._decode(gvk, entry)
        return None

    def list(
        self,
        gvk: GVK,
        *,
        namespace: str | None = None,
        labels: str | Mapping[str, str] | Selector | None = None,
        index: tuple[str, str] | None = None,
        owner_uid: str | None = None,
    ) -> list[Obj]:
        """Cached objects matching every given filter, sorted by namespace/name."""
        entries = self.entries(
            gvk, namespace=namespace, labels=labels, index=index, owner_uid=owner_uid
        )
        return [self._decode(gvk, e) for e in entries]

    def entries(
        self,
        gvk: GVK,
        *,
        namespace: str | None = None,
        labels: str | Mapping[str, str] | Selector | None = None,
        index: tuple[str, str] | None = None,
        owner_uid: str | None = None,
    ) -> _Entries:
        """Like ``list`` but returns the compact entries (no decoding): keys, labels, RVs."""
        selector = parse_selector(labels) if labels is not None else None
        return self._reader(gvk, namespace).indexer.select(
            namespace=namespace, selector=selector, index=index, owner_uid=owner_uid
        )

    def count(self, gvk: GVK, namespace: str | None = None) -> int:
        return len(self.entries(gvk, namespace=namespace))
