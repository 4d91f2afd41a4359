"""Event filters: which informer events are worth a reconcile."""

from __future__ import annotations

from collections.abc import Callable

from kaito.runtime.indexer import Entry
from kaito.runtime.informer import MODIFIED, InformerEvent

Predicate = Callable[[InformerEvent], bool]


def _update_pair(event: InformerEvent) -> tuple[Entry, Entry] | None:
    """(old, new) entries for an update; None for create/delete (which always pass)."""
    if event.type != MODIFIED or event.old is None:
        return None
    return event.old, Entry(event.obj, raw="")


def generation_changed(event: InformerEvent) -> bool:
    """Updates pass only when ``metadata.generation`` moved (spec changes, not status)."""
    pair = _update_pair(event)
    return pair is None or pair[0].generation != pair[1].generation


def labels_changed(event: InformerEvent) -> bool:
    pair = _update_pair(event)
    return pair is None or (pair[0].labels or {}) != (pair[1].labels or {})


def annotations_changed(event: InformerEvent) -> bool:
    pair = _update_pair(event)
    return pair is None or pair[0].annotations_hash != pair[1].annotations_hash


def resource_version_changed(event: InformerEvent) -> bool:
    """Drops resync replays (same resourceVersion)."""
    pair = _update_pair(event)
    return pair is None or pair[0].resource_version != pair[1].resource_version


def any_of(*predicates: Predicate) -> Predicate:
    def check(event: InformerEvent) -> bool:
        return any(p(event) for p in predicates)

    return check


def all_of(*predicates: Predicate) -> Predicate:
    def check(event: InformerEvent) -> bool:
        return all(p(event) for p in predicates)

    return check


def negate(predicate: Predicate) -> Predicate:
    def check(event: InformerEvent) -> bool:
        return not predicate(event)

    return check
