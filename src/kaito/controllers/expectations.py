"""Objects this process created that its cache has not shown yet.

client-go's ReplicaSet controller keeps "expectations" for the same reason: a reconcile that
runs before the watch event of its own create has arrived (the owner was woken again by
something else meanwhile) would create again and get 409 AlreadyExists, a failing request
on the common path. Expecting the object by name, the reconcile waits for that event
instead. An expectation that is never met (the object came and went between two lists, so
no event ever showed it) lapses after ``ttl``, as client-go's do after five minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kaito.runtime.indexer import object_key
from kaito.runtime.informer import InformerEvent

EXPECTATION_TTL_S = 300.0


class _LapsingStamps:
    """Keys with the time they were stamped; a key older than ``ttl`` counts as absent."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.clock = clock
        self._stamps: dict[str, float] = {}

    def _stamp(self, key: str) -> None:
        self._stamps[key] = self.clock()

    def _live(self, key: str) -> bool:
        since = self._stamps.get(key)
        if since is None:
            return False
        if self.clock() - since > self.ttl:
            del self._stamps[key]
            return False
        return True

    def __len__(self) -> int:
        return len(self._stamps)


class CreateExpectations(_LapsingStamps):
    """Names of created objects, until an informer event shows each (see module docstring)."""

    def __init__(
        self, ttl: float = EXPECTATION_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(ttl, clock)  # namespace/name -> when it was created

    def expect(self, namespace: str | None, name: str) -> None:
        """We are about to create this object (set before the request: its watch event may
        arrive before the response does)."""
        self._stamp(object_key(namespace, name))

    def forget(self, namespace: str | None, name: str) -> None:
        """The create failed, or the cache shows the object: nothing to wait for."""
        self._stamps.pop(object_key(namespace, name), None)

    def pending(self, namespace: str | None, name: str) -> bool:
        """Created by us and not yet seen by the cache (and not lapsed)."""
        return self._live(object_key(namespace, name))

    def observe(self, event: InformerEvent) -> None:
        """An informer listener: any event of the object means the cache has it (or saw it go)."""
        if self._stamps:
            self._stamps.pop(object_key(event.obj.namespace, event.obj.name), None)


class FinalWrites(_LapsingStamps):
    """Objects (by uid) this process has sent their last write: a delete, or the release of
    the finalizer that held them.

    Either write ends the object; until its watch event arrives the cache still shows it as
    before, and a reconcile woken meanwhile (by the object's own earlier events, or a
    dependent's) would send the write again and get 404 NotFound, a failing request on
    every delete. Keyed by uid, so a new object of the same name is never mistaken for the
    old one; entries lapse after ``ttl`` (a delete that did not take is then sent again).
    """

    def __init__(
        self, ttl: float = EXPECTATION_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(ttl, clock)  # uid -> when its final write was sent

    def mark(self, uid: str) -> None:
        """The final write for ``uid`` succeeded (or found the object already gone)."""
        if not uid:
            return
        if len(self._stamps) >= _FINAL_WRITES_PRUNE_AT:  # nothing else removes them
            now = self.clock()
            self._stamps = {u: t for u, t in self._stamps.items() if now - t <= self.ttl}
        self._stamp(uid)

    def sent(self, uid: str) -> bool:
        """True while ``uid``'s final write is recent enough that its event is still due."""
        return bool(uid) and self._live(uid)


_FINAL_WRITES_PRUNE_AT = 1024  # entries before lapsed ones are swept on the next mark
