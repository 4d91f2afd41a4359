"""The informer's store: compact entries keyed by namespace/name, plus secondary indexes.

Each object is kept as one compact JSON string (managedFields already stripped by the
reflector's transform). That costs about the object's wire size, needs no deep copy on read
(every read decodes a fresh, caller-owned object) and keeps the cache immune to callers that
mutate what they got. The fields that indexes and predicates need are pulled out once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from kaito.runtime.selectors import Selector

IndexFunc = Callable[[Mapping[str, Any]], Iterable[str]]
"""Maps a decoded object to the index values it should be found under."""

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, check_circular=False).encode


def object_key(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


class Entry:
    """One cached object: its identity, the fields indexes use, and its JSON."""

    __slots__ = (
        "annotations_hash",
        "custom",
        "generation",
        "key",
        "labels",
        "name",
        "namespace",
        "owners",
        "raw",
        "resource_version",
        "uid",
    )

    def __init__(self, obj: Mapping[str, Any], raw: str | None = None) -> None:
        meta = obj.get("metadata") or {}
        self.namespace: str = meta.get("namespace") or ""
        self.name: str = meta.get("name") or ""
        self.key = object_key(self.namespace, self.name)
        self.uid: str = meta.get("uid") or ""
        self.resource_version: str = meta.get("resourceVersion") or ""
        self.generation: int = int(meta.get("generation") or 0)
        labels = meta.get("labels")
        self.labels: dict[str, str] | None = dict(labels) if labels else None
        annotations = meta.get("annotations")
        self.annotations_hash = hash(_dumps(annotations)) if annotations else 0
        self.owners: tuple[tuple[str, str, str, bool], ...] = tuple(
            (
                o.get("uid", ""),
                o.get("apiVersion", ""),
                o.get("kind", ""),
                bool(o.get("controller")),
            )
            for o in meta.get("ownerReferences") or ()
        )
        self.custom: dict[str, tuple[str, ...]] | None = None
        self.raw: str = raw if raw is not None else _dumps(obj)

    def decode(self) -> dict[str, Any]:
        """A fresh, caller-owned copy of the object."""
        result: dict[str, Any] = json.loads(self.raw)
        return result


class Indexer:
    """Entries by key, with indexes by namespace, owner UID, label pair and custom functions."""

    def __init__(self) -> None:
        self._items: dict[str, Entry] = {}
        self._by_namespace: dict[str, set[str]] = {}
        self._by_owner: dict[str, set[str]] = {}
        self._by_label: dict[tuple[str, str], set[str]] = {}
        self._funcs: dict[str, IndexFunc] = {}
        self._custom: dict[str, dict[str, set[str]]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._items.values()))

    def keys(self) -> set[str]:
        return set(self._items)

    def get(self, key: str) -> Entry | None:
        return self._items.get(key)

    # ------------------------------------------------------------------ indexes
    def add_index(self, name: str, func: IndexFunc) -> None:
        """Register a custom index; existing entries are indexed now."""
        if name in self._funcs:
            raise ValueError(f"index {name!r} already exists")
        self._funcs[name] = func
        self._custom[name] = {}
        for entry in self._items.values():
            self._index_custom(entry, name, func, entry.decode())

    def _index_custom(
        self, entry: Entry, name: str, func: IndexFunc, obj: Mapping[str, Any]
    ) -> None:
        values = tuple(func(obj))
        if entry.custom is None:
            entry.custom = {}
        entry.custom[name] = values
        bucket = self._custom[name]
        for value in values:
            bucket.setdefault(value, set()).add(entry.key)

    @staticmethod
    def _discard(index: dict[Any, set[str]], value: Any, key: str) -> None:
        keys = index.get(value)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del index[value]

    def _unindex(self, entry: Entry) -> None:
        self._discard(self._by_namespace, entry.namespace, entry.key)
        for uid, *_ in entry.owners:
            self._discard(self._by_owner, uid, entry.key)
        for pair in (entry.labels or {}).items():
            self._discard(self._by_label, pair, entry.key)
        for name, values in (entry.custom or {}).items():
            for value in values:
                self._discard(self._custom[name], value, entry.key)

    def _index(self, entry: Entry, obj: Mapping[str, Any]) -> None:
        self._by_namespace.setdefault(entry.namespace, set()).add(entry.key)
        for uid, *_ in entry.owners:
            self._by_owner.setdefault(uid, set()).add(entry.key)
        for pair in (entry.labels or {}).items():
            self._by_label.setdefault(pair, set()).add(entry.key)
        for name, func in self._funcs.items():
            self._index_custom(entry, name, func, obj)

    # ------------------------------------------------------------------ mutation
    def upsert(self, obj: Mapping[str, Any]) -> tuple[Entry | None, Entry]:
        """Store ``obj``; returns (previous entry, new entry)."""
        entry = Entry(obj)
        old = self._items.get(entry.key)
        if old is not None:
            self._unindex(old)
        self._items[entry.key] = entry
        self._index(entry, obj)
        return old, entry

    def put(self, entry: Entry) -> Entry | None:
        """Store a ready-made entry; returns the previous one (decodes only for custom indexes)."""
        old = self._items.get(entry.key)
        if old is not None:
            self._unindex(old)
        self._items[entry.key] = entry
        self._index(entry, entry.decode() if self._funcs else {})
        return old

    def remove(self, key: str) -> Entry | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(old)
        return old

    # ------------------------------------------------------------------ queries
    def select(
        self,
        namespace: str | None = None,
        selector: Selector | None = None,
        index: tuple[str, str] | None = None,
        owner_uid: str | None = None,
    ) -> list[Entry]:
        """Entries matching every given criterion, narrowed through the smallest index."""
        candidates: list[set[str]] = []
        if namespace is not None:
            candidates.append(self._by_namespace.get(namespace, set()))
        if owner_uid is not None:
            candidates.append(self._by_owner.get(owner_uid, set()))
        if index is not None:
            name, value = index
            if name not in self._custom:
                raise KeyError(f"no index named {name!r}; add it with add_index() first")
            candidates.append(self._custom[name].get(value, set()))
        if selector:
            for pair in selector.equalities():
                candidates.append(self._by_label.get(pair, set()))
        if candidates:
            smallest = min(candidates, key=len)
            keys = smallest.intersection(*[c for c in candidates if c is not smallest])
            entries = [self._items[k] for k in keys]
        else:
            entries = list(self._items.values())
        if selector:
            entries = [e for e in entries if selector.matches(e.labels)]
        entries.sort(key=lambda e: e.key)
        return entries
