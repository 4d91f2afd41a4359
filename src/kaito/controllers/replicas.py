"""Which replica Workspaces an InferenceSet creates, deletes and rolls: a pure plan.

The InferenceSet controller turns what its cache shows into :class:`Replica` values and acts on
the :class:`ReplicaPlan` this module returns, so every rule below is unit-tested without a
cluster.  The rules, in the order they are applied:

* **nodeCountLimit**: a set never holds more nodes than the limit.  Replicas being deleted
  still hold theirs until the Workspace finalizer has released them, so a new replica waits
  for that; the replica count the limit allows is ``limit // nodes per replica``.
* **scale down**: surplus replicas are deleted not-ready first, then outdated, then newest.
* **rolling update** (``RollingUpdate``): outdated replicas move to the new template while at
  most ``maxUnavailable`` of the wanted replicas are not ready; not-ready outdated replicas go
  first (they serve nothing).  A replica whose change a Workspace accepts in place (adapters,
  config, annotations) is patched, which keeps its nodes; any other change (model, instance
  type, node selector) replaces it.  ``OnDelete`` leaves outdated replicas alone.
* **scale up**: missing replicas get the lowest free ordinal names, ``<set>-<n>``; a name the
  namespace already uses for another Workspace is skipped.  Names are deterministic, so a
  create repeated from a stale cache fails with AlreadyExists instead of adding a replica.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Replica:
    """One replica Workspace as the controller sees it."""

    name: str
    created: str
    """creationTimestamp (RFC 3339, so it sorts as text)."""
    up_to_date: bool
    """Made from the set's current template."""
    ready: bool
    """Serving at its current spec (WorkspaceSucceeded=True for its generation)."""
    deleting: bool = False
    nodes: int = 1
    """Nodes it holds (or will hold) until its Workspace is finalized."""
    in_place: bool = True
    """The change to the current template can be patched into the Workspace."""


@dataclass
class ReplicaPlan:
    """What to do now; an empty plan means the set is where it should be."""

    create: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    """Surplus replicas (scale down)."""
    update: list[str] = field(default_factory=list)
    """Outdated replicas patched to the current template in place."""
    replace: list[str] = field(default_factory=list)
    """Outdated replicas deleted so that a replica of the current template takes their place."""
    allowed: int = 0
    """Replicas the set may have: spec.replicas, lowered by nodeCountLimit."""
    blocked_by_nodes: int = 0
    """Replicas wanted now that must wait for nodes to be released (nodeCountLimit)."""

    @property
    def empty(self) -> bool:
        return not (self.create or self.delete or self.update or self.replace)


def max_unavailable(value: int | str, desired: int) -> int:
    """maxUnavailable as a count: a percentage of the desired replicas rounds up, at least 1."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                return 1
            return max(1, math.ceil(desired * percent / 100))
        try:
            value = int(text)
        except ValueError:
            return 1
    return max(1, value)


def _newest_first(replicas: Iterable[Replica]) -> list[Replica]:
    return sorted(replicas, key=lambda r: (r.created, ordinal(r.name)), reverse=True)


def ordinal(name: str) -> int:
    """The n of ``<set>-<n>`` (-1 when the name has no ordinal)."""
    found = re.search(r"-(\d+)$", name)
    return int(found.group(1)) if found else -1


def free_names(set_name: str, taken: set[str], count: int) -> list[str]:
    """The ``count`` lowest ``<set>-<n>`` names nobody in the namespace uses."""
    out: list[str] = []
    n = 0
    while len(out) < count:
        name = f"{set_name}-{n}"
        if name not in taken:
            out.append(name)
        n += 1
    return out


def plan_replicas(
    replicas: Sequence[Replica],
    *,
    set_name: str,
    desired: int,
    nodes_per_replica: int,
    node_limit: int | None,
    strategy: str,
    max_unavailable_value: int | str,
    taken_names: set[str],
) -> ReplicaPlan:
    """The next step towards `desired` replicas of the current template; see the module doc."""
    per_replica = max(1, nodes_per_replica)
    allowed = desired
    if node_limit:
        allowed = min(desired, node_limit // per_replica)
    plan = ReplicaPlan(allowed=allowed)
    live = [r for r in replicas if not r.deleting]

    # scale down: not ready first, then outdated, then newest
    surplus = len(live) - allowed
    if surplus > 0:
        order = sorted(_newest_first(live), key=lambda r: (r.ready, r.up_to_date))
        plan.delete = [r.name for r in order[:surplus]]
        live = [r for r in live if r.name not in plan.delete]

    # rolling update, within maxUnavailable of the replicas wanted
    outdated = [r for r in live if not r.up_to_date]
    if strategy == "RollingUpdate" and outdated:
        ready = sum(r.ready for r in live)
        budget = max_unavailable(max_unavailable_value, allowed) - max(0, allowed - ready)
        for r in sorted(_newest_first(outdated), key=lambda r: r.ready):
            if r.ready:
                if budget <= 0:
                    break
                budget -= 1
            (plan.update if r.in_place else plan.replace).append(r.name)
        live = [r for r in live if r.name not in plan.replace]

    # scale up, within the nodes the limit leaves
    missing = allowed - len(live)
    if missing > 0:
        creatable = missing
        if node_limit:
            held = sum(r.nodes for r in replicas)  # the deleted ones hold theirs until finalized
            creatable = max(0, min(missing, (node_limit - held) // per_replica))
            plan.blocked_by_nodes = missing - creatable
        plan.create = free_names(set_name, taken_names, creatable)
    return plan
