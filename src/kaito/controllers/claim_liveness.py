"""How long a claim waits on its backend and on its node, and how often it asks the backend.

- A claim whose backend is still working (a pool being created, a node name not yet known)
  asks the backend again after 2 s, then 4, 8, ... up to 30 s; every other event that wakes
  the claim in between (its own status write, node heartbeats) reuses the last answer, so
  cloud reads grow with time, not with cluster activity.
- A launched claim whose node does not register within the registration timeout (Karpenter's
  registration TTL, 15 min, measured from the launch) is given up: its claim is deleted and
  its owner asks for a new one.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kaito.controllers.diagnosis import timestamp
from kaito.provisioner.base import NodeStatus

POLL_INITIAL_S = 2.0
POLL_MAX_S = 30.0
REGISTRATION_TIMEOUT_S = 15 * 60.0
REGISTRATION_TIMEOUT_REASON = "RegistrationTimeout"


@dataclass
class _Answer:
    status: NodeStatus | None
    next_read: float
    interval: float


class BackendPolls:
    """The backend's last answer per claim and when to ask again (see the module docstring)."""

    def __init__(self) -> None:
        self._answers: dict[str, _Answer] = {}

    def cached(self, name: str) -> tuple[bool, NodeStatus | None]:
        """(True, last answer) while that answer is fresh; (False, None) when a read is due."""
        answer = self._answers.get(name)
        if answer is not None and time.monotonic() < answer.next_read:
            return True, answer.status
        return False, None

    def remember(self, name: str, status: NodeStatus | None) -> None:
        """Record a fresh answer: the same state as before doubles the wait, a change resets it."""
        answer = self._answers.get(name)
        same = answer is not None and _shape(answer.status) == _shape(status)
        interval = min(answer.interval * 2, POLL_MAX_S) if same and answer else POLL_INITIAL_S
        self._answers[name] = _Answer(status, time.monotonic() + interval, interval)

    def next_read_in(self, name: str) -> float:
        answer = self._answers.get(name)
        if answer is None:
            return POLL_INITIAL_S
        return max(0.1, answer.next_read - time.monotonic())

    def forget(self, name: str) -> None:
        self._answers.pop(name, None)


def _shape(status: NodeStatus | None) -> tuple[str, str | None] | None:
    return None if status is None else (status.phase, status.node_name)


def registration_left(status: Mapping[str, Any], timeout_s: float) -> float | None:
    """Seconds a launched claim's node still has to register (None: not waiting for one)."""
    conditions = {c.get("type"): c for c in status.get("conditions") or ()}
    launched, registered = conditions.get("Launched"), conditions.get("Registered")
    if launched is None or launched.get("status") != "True":
        return None
    if registered is not None and registered.get("status") == "True":
        return None
    since = timestamp(launched.get("lastTransitionTime"))
    if since is None:
        return None
    return timeout_s - (dt.datetime.now(dt.UTC) - since).total_seconds()
