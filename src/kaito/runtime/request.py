"""What a reconciler receives and returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Request:
    """Which object to reconcile; ``namespace`` is "" for cluster-scoped kinds."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True)
class Result:
    """``requeue_after`` > 0 re-runs after that many seconds; ``requeue`` re-runs rate-limited."""

    requeue: bool = False
    requeue_after: float = 0.0
    priority: int | None = None


class TerminalError(Exception):
    """A reconcile error that retrying cannot fix: logged and counted, never requeued."""


Reconciler = Callable[[Request], Awaitable[Result | None]]
