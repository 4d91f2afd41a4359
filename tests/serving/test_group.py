"""The multi-node group's membership (serving.group, serving.group_worker), without vLLM.

The leader's state machine runs with a fake clock; then a real leader (its group port on
127.0.0.1) and a real worker supervisor whose "vLLM member" is a stand-in process show the
protocol end to end: gather, form, join; a member's death breaks the group; a new leader (a
restart) makes the worker leave the old group and join the new one; an unreachable leader
makes it leave after the timeout. The same protocol with vLLM, two pods of a Workspace's
StatefulSet through hack/run-pod, is tested in tests/e2e/controllers/test_multinode_serves.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from serving.group import (
    BROKEN,
    FORMING,
    GATHERING,
    IDLE,
    JOINED,
    REPORT_INTERVAL,
    SERVING,
    GroupLeader,
    GroupSpec,
    group_spec,
    member_flags,
)
from serving.group_worker import GroupWorker
from serving.options import LauncherOptions, OptionsError, split_args
from tests.serving.helpers import free_port


def spec_of(argv: list[str], env: dict[str, str]) -> GroupSpec | None:
    opts, vllm_argv = split_args(argv)
    return group_spec(opts, vllm_argv, env)


LEADER = ["--group-leader", "ws-0.ws-headless.ns.svc:5001"]


def test_one_node_is_no_group() -> None:
    assert spec_of(["--model", "m"], {}) is None
    assert spec_of(["--model", "m", "--nnodes", "1", *LEADER], {}) is None


def test_rank_comes_from_the_pod_index_or_the_host_name() -> None:
    spec = spec_of(["--nnodes", "2", *LEADER], {"POD_INDEX": "1"})
    assert spec == GroupSpec(2, 1, "ws-0.ws-headless.ns.svc", 5001)
    assert not spec.is_leader and spec.leader_url == "http://ws-0.ws-headless.ns.svc:5001"
    leader = spec_of(["--nnodes", "2", *LEADER], {"HOSTNAME": "ws-0"})
    assert leader is not None and leader.is_leader
    assert member_flags(spec, 29500) == [
        "--node-rank", "1", "--master-addr", "ws-0.ws-headless.ns.svc",
        "--master-port", "29500", "--headless",
    ]  # fmt: skip
    assert "--headless" not in member_flags(leader, 29500)


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["--nnodes", "2"], {"POD_INDEX": "0"}, "needs --group-leader"),
        (["--nnodes", "2", *LEADER], {"HOSTNAME": "no-ordinal"}, "rank is unknown"),
        (["--nnodes", "2", *LEADER], {"POD_INDEX": "2"}, "outside a group of --nnodes 2"),
        (["--nnodes", "2", *LEADER], {"POD_INDEX": "x"}, "POD_INDEX='x'"),
        (["--nnodes", "two", *LEADER], {"POD_INDEX": "0"}, "--nnodes 'two'"),
        (["--nnodes", "2", "--group-leader", "ws-0"], {"POD_INDEX": "0"}, "expected HOST:PORT"),
        (["--nnodes", "2", *LEADER, "--group-timeout", "4"], {"POD_INDEX": "0"}, "more than 4"),
    ],
)
def test_a_wrong_group_says_what_to_fix(argv: list[str], env: dict[str, str], says: str) -> None:
    with pytest.raises(OptionsError, match=says.replace("(", r"\(")):
        spec_of(argv, env)


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Breaks:
    reasons: list[str] = field(default_factory=list)

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


def leader_of(size: int, clock: Clock, breaks: Breaks) -> GroupLeader:
    spec = GroupSpec(size, 0, "127.0.0.1", 1, timeout=10, revision="r1")
    return GroupLeader(spec, 29500, breaks, clock)


def report(
    leader: GroupLeader, rank: int, instance: str, state: str = IDLE, revision: str = "r1"
) -> dict[str, Any]:
    group = leader.id if state == JOINED else None
    body = {"rank": rank, "instance": instance, "state": state, "group": group}
    return leader.report({**body, "revision": revision})


def test_mid_rollout_pods_of_another_revision_are_not_gathered() -> None:
    leader = leader_of(2, Clock(), Breaks())
    report(leader, 1, "old-pod", revision="r0")
    assert leader.missing() == [1]
    assert "pod template revision r0, not r1" in leader.waiting_for(1)
    report(leader, 1, "new-pod")
    assert leader.missing() == []


def test_the_leader_gathers_every_worker_then_forms_and_serves() -> None:
    clock, breaks = Clock(), Breaks()
    leader = leader_of(3, clock, breaks)
    assert leader.missing() == [1, 2]
    want = {"group": leader.id, "phase": GATHERING, "master_port": 29500, "revision": "r1"}
    assert report(leader, 1, "a") == want
    assert leader.missing() == [2]
    clock.now += 11  # worker 1's report is stale by the time worker 2 comes
    report(leader, 2, "b")
    assert leader.missing() == [1]
    report(leader, 1, "a")
    assert leader.missing() == []
    leader.form()
    assert report(leader, 1, "a", JOINED)["phase"] == FORMING
    report(leader, 2, "b")  # not joined yet: allowed for the timeout
    clock.now += 5
    leader.check()
    report(leader, 2, "b", JOINED)
    leader.serving()
    clock.now += 9
    report(leader, 1, "a", JOINED)
    report(leader, 2, "b", JOINED)
    leader.check()
    assert leader.phase == SERVING and breaks.reasons == []


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("restart", "worker 1 restarted"),
        ("member died", "worker 1 lost its vLLM member"),
        ("silence", "worker 1 has not reported for 11s"),
        ("never joined", "worker 2 did not start its vLLM member"),
    ],
)
def test_the_leader_breaks_the_group_when_a_worker_goes(event: str, reason: str) -> None:
    clock, breaks = Clock(), Breaks()
    leader = leader_of(3, clock, breaks)
    report(leader, 1, "a")
    report(leader, 2, "b")
    leader.form()
    report(leader, 1, "a", JOINED)
    if event == "restart":
        report(leader, 1, "a-again")
    elif event == "member died":
        report(leader, 1, "a", IDLE)
    elif event == "silence":
        clock.now += 11
        leader.check()
    else:
        clock.now += 6
        report(leader, 1, "a", JOINED)
        report(leader, 2, "b")
        clock.now += 5
        leader.check()
    assert leader.phase == BROKEN
    assert len(breaks.reasons) == 1 and breaks.reasons[0].startswith(reason)
    report(leader, 1, "a-again")  # once broken, nothing more happens
    assert len(breaks.reasons) == 1


def test_a_malformed_report_is_refused() -> None:
    leader = leader_of(2, Clock(), Breaks())
    for body in ([], {"rank": 0, "instance": "a", "state": IDLE}, {"rank": 1, "state": "x"}):
        with pytest.raises(ValueError):
            leader.report(body)


# --------------------------------------------------------------------------- real processes

STAND_IN = (
    "import os, sys, time; open(sys.argv[1], 'a').write(os.environ['KAITO_GROUP_MEMBER'] + '\\n');"
    " time.sleep(600)"
)


async def eventually(what: str, check: Callable[[], bool], within: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[tuple[GroupWorker, Path]]:
    """A worker supervisor (rank 1 of 2, timeout 5 s) whose members are stand-in processes."""
    group_port, health_port = free_port(), free_port()
    joins = tmp_path / "joins"
    spec = GroupSpec(2, 1, "127.0.0.1", group_port, timeout=5)

    def command(master_port: int) -> list[str]:
        return [sys.executable, "-c", STAND_IN, str(joins)]

    sup = GroupWorker(spec, command, host="127.0.0.1", port=health_port)
    task = asyncio.create_task(sup.run())
    try:
        yield sup, joins
    finally:
        sup.stopping.set()
        assert await asyncio.wait_for(task, 30) == 0
    assert sup.member is None


def groups_joined(joins: Path) -> list[str]:
    return joins.read_text().split() if joins.exists() else []


def worker_health(sup: GroupWorker) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{sup.port}/health", timeout=5) as resp:
        assert resp.status == 200
        body: dict[str, Any] = json.loads(resp.read())
        return body


async def formed(leader: GroupLeader, sup: GroupWorker) -> None:
    await asyncio.wait_for(leader.gathered(), 20)
    await eventually("the worker joined", lambda: leader.members[1].joined)
    assert sup.member is not None and sup.member_group == leader.id
    leader.serving()


async def test_a_worker_joins_each_new_group_and_its_death_breaks_the_group(
    worker: tuple[GroupWorker, Path],
) -> None:
    sup, joins = worker
    breaks = Breaks()
    leader = GroupLeader(sup.spec, 29500, breaks)
    await leader.start("127.0.0.1")
    try:
        await formed(leader, sup)
        assert (await asyncio.to_thread(worker_health, sup))["state"] == JOINED
        want = [leader.id]  # each member process knows its group
        await eventually("the member started", lambda: groups_joined(joins) == want)
        member = sup.member
        assert member is not None
        os.kill(member.pid, signal.SIGKILL)  # the vLLM member dies
        await eventually("the leader saw it", lambda: leader.phase == BROKEN)
        assert breaks.reasons == ["worker 1 lost its vLLM member"]
    finally:
        await leader.stop()

    # the leader restarts (a new process: a new group id) on the same address
    again = GroupLeader(sup.spec, 29500, breaks)
    await again.start("127.0.0.1")
    try:
        await formed(again, sup)
        want = [leader.id, again.id]
        await eventually("the new member started", lambda: groups_joined(joins) == want)
    finally:
        await again.stop()


async def test_a_worker_leaves_a_group_whose_leader_is_gone(
    worker: tuple[GroupWorker, Path],
) -> None:
    sup, _ = worker
    other = GroupLeader(dataclasses.replace(sup.spec, revision="other"), 29500, Breaks())
    await other.start("127.0.0.1")  # a leader of another pod template: never joined
    await eventually("the worker reported", lambda: 1 in other.members)
    assert other.missing() == [1]  # not gathered...
    other.form()  # ...and even if the leader formed a group, the worker would stay out
    await asyncio.sleep(3 * REPORT_INTERVAL)
    assert sup.member is None
    await other.stop()
    leader = GroupLeader(sup.spec, 29500, Breaks())
    await leader.start("127.0.0.1")
    await formed(leader, sup)
    await leader.stop()  # the leader's pod is gone
    assert (await asyncio.to_thread(worker_health, sup))["state"] == JOINED
    await eventually("the worker left", lambda: sup.member is None, within=5 + 10)
    health = await asyncio.to_thread(worker_health, sup)  # alive and waiting for the next group
    assert health["state"] == IDLE and health["role"] == "worker"


def test_options_reach_the_group() -> None:
    opts, rest = split_args(["--group-leader", "h:1", "--group-timeout", "30", "--nnodes", "2"])
    assert (opts.group_leader, opts.group_timeout, rest) == ("h:1", 30.0, ["--nnodes", "2"])
    assert LauncherOptions().group_timeout == 15.0
