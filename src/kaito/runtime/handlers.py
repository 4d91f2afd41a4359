"""Event handlers: turn an informer event into the requests a controller must reconcile."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from kaito.runtime.gvk import GVK
from kaito.runtime.informer import InformerEvent
from kaito.runtime.objects import KObject
from kaito.runtime.request import Request
from kaito.runtime.workqueue import LOW_PRIORITY


class Handler(Protocol):
    """Maps one event to zero or more requests."""

    def requests(self, event: InformerEvent) -> Iterable[Request]: ...


def priority_of(event: InformerEvent, live: int = 0) -> int:
    """Events replayed from a list or a resync wait behind live changes, which get ``live``."""
    return LOW_PRIORITY if event.initial else live


class EnqueueForObject:
    """Reconcile the object the event is about."""

    def requests(self, event: InformerEvent) -> Iterable[Request]:
        return (Request(event.obj.namespace, event.obj.name),)


class EnqueueForOwner:
    """Reconcile the owner (of kind ``owner``) named in the object's ownerReferences.

    With ``only_controller`` only the reference with ``controller: true`` counts. On updates
    the previous owners are enqueued too, so an owner that lost a child hears about it.
    """

    def __init__(self, owner: GVK, *, only_controller: bool = True) -> None:
        self.owner = owner
        self.only_controller = only_controller

    def requests(self, event: InformerEvent) -> Iterable[Request]:
        namespace = event.obj.namespace
        api_version, kind = self.owner.api_version, self.owner.kind
        found: dict[str, Request] = {}
        for ref in event.obj.owner_references:
            if self.only_controller and not ref.get("controller"):
                continue
            if ref.get("kind") == kind and _same_group(ref.get("apiVersion", ""), api_version):
                found.setdefault(str(ref.get("uid")), Request(namespace, str(ref.get("name"))))
        if event.old is not None and event.old.owners:
            for ref in event.old.decode().get("metadata", {}).get("ownerReferences") or ():
                if self.only_controller and not ref.get("controller"):
                    continue
                if ref.get("kind") == kind and _same_group(ref.get("apiVersion", ""), api_version):
                    found.setdefault(str(ref.get("uid")), Request(namespace, str(ref.get("name"))))
        return found.values()


def _same_group(a: str, b: str) -> bool:
    """Owner references match across versions of the same group, as controller-runtime's do."""
    return a.rpartition("/")[0] == b.rpartition("/")[0]


class EnqueueMapped:
    """Reconcile whatever ``fn(obj)`` returns (e.g. every Workspace that uses this Node)."""

    def __init__(self, fn: Callable[[KObject], Iterable[Request]]) -> None:
        self.fn = fn

    def requests(self, event: InformerEvent) -> Iterable[Request]:
        return self.fn(event.obj)
