"""The InferenceSet's replica plan: scale, roll and respect nodeCountLimit, as pure decisions."""

from __future__ import annotations

from typing import Any

import pytest

from kaito.controllers.replicas import (
    Replica,
    free_names,
    max_unavailable,
    ordinal,
    plan_replicas,
)


def rep(n: int, *, ready: bool = True, new: bool = True, **kw: Any) -> Replica:
    return Replica(
        name=f"s-{n}",
        created=f"2026-01-01T00:00:{n:02d}Z",
        up_to_date=new,
        ready=ready,
        **kw,
    )


def plan(replicas: list[Replica], desired: int, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "set_name": "s",
        "desired": desired,
        "nodes_per_replica": 1,
        "node_limit": None,
        "strategy": "RollingUpdate",
        "max_unavailable_value": 1,
        "taken_names": {r.name for r in replicas},
    }
    return plan_replicas(replicas, **(args | kw))


def test_scale_up_takes_the_lowest_free_ordinals() -> None:
    p = plan([rep(1)], 3)
    assert p.create == ["s-0", "s-2"]
    assert not p.delete


def test_names_used_by_other_workspaces_are_skipped() -> None:
    p = plan([], 2, taken_names={"s-0"})
    assert p.create == ["s-1", "s-2"]


def test_scale_down_deletes_the_newest_first() -> None:
    p = plan([rep(0), rep(1), rep(2)], 1)
    assert p.delete == ["s-2", "s-1"]
    assert not p.create


def test_scale_down_deletes_not_ready_then_outdated_before_newest() -> None:
    p = plan([rep(0, ready=False), rep(1, new=False), rep(2), rep(3)], 2)
    assert p.delete == ["s-0", "s-1"]


def test_replicas_being_deleted_are_not_counted_or_deleted_again() -> None:
    p = plan([rep(0), rep(1, deleting=True)], 1)
    assert p.empty


def test_scale_to_zero_deletes_everything() -> None:
    p = plan([rep(0), rep(1)], 0)
    assert sorted(p.delete) == ["s-0", "s-1"]


def test_rolling_update_moves_one_ready_replica_at_a_time() -> None:
    p = plan([rep(0, new=False), rep(1, new=False), rep(2, new=False)], 3)
    assert p.update == ["s-2"]  # newest first
    # once it is updating (not ready), nothing else moves
    p = plan([rep(0, new=False), rep(1, new=False), rep(2, ready=False)], 3)
    assert p.empty


def test_rolling_update_replaces_what_a_workspace_cannot_change_in_place() -> None:
    p = plan([rep(0, new=False, in_place=False), rep(1, new=False, in_place=False)], 2)
    assert p.replace == ["s-1"]
    assert p.create == ["s-2"]  # s-1 is still terminating and keeps its name


def test_a_replaced_replica_still_counts_as_unavailable_while_its_successor_is_missing() -> None:
    # s-1 was replaced; its successor could not be created yet: s-0 must wait
    p = plan([rep(0, new=False, in_place=False), rep(1, deleting=True)], 2, node_limit=2)
    assert not p.replace
    assert p.blocked_by_nodes == 1


def test_not_ready_outdated_replicas_roll_first_and_free() -> None:
    p = plan([rep(0, new=False), rep(1, new=False, ready=False)], 2)
    assert p.update == ["s-1"]  # broken already: costs no availability
    p = plan([rep(0, new=False), rep(1, new=False, ready=False)], 2, max_unavailable_value=2)
    assert sorted(p.update) == ["s-0", "s-1"]


def test_max_unavailable_as_a_percentage() -> None:
    replicas = [rep(n, new=False) for n in range(8)]
    assert len(plan(replicas, 8, max_unavailable_value="25%").update) == 2
    assert max_unavailable("10%", 3) == 1  # rounds up, at least one
    assert max_unavailable("50%", 5) == 3
    assert max_unavailable(0, 5) == 1
    assert max_unavailable("bogus", 5) == 1


def test_on_delete_leaves_outdated_replicas_alone() -> None:
    p = plan([rep(0, new=False)], 2, strategy="OnDelete")
    assert not p.update and not p.replace
    assert p.create == ["s-1"]


def test_node_count_limit_caps_the_replicas() -> None:
    p = plan([], 5, nodes_per_replica=2, node_limit=5)
    assert p.allowed == 2
    assert p.create == ["s-0", "s-1"]
    p = plan([rep(0), rep(1), rep(2)], 3, nodes_per_replica=2, node_limit=5)
    assert p.delete == ["s-2"]


def test_node_count_limit_waits_for_deleted_replicas_to_release_nodes() -> None:
    p = plan([rep(0), rep(1, deleting=True)], 2, node_limit=2)
    assert p.create == []
    assert p.blocked_by_nodes == 1
    p = plan([rep(0)], 2, node_limit=2)
    assert p.create == ["s-1"]


def test_no_node_limit_means_any_number() -> None:
    assert plan([], 4, node_limit=0).allowed == 4


@pytest.mark.parametrize(
    ("name", "n"), [("s-0", 0), ("phi-4-mini-12", 12), ("noordinal", -1), ("s-x", -1)]
)
def test_ordinal(name: str, n: int) -> None:
    assert ordinal(name) == n


def test_free_names() -> None:
    assert free_names("a", {"a-1", "a-3"}, 3) == ["a-0", "a-2", "a-4"]
