"""A worker pod of a multi-node group (rank > 0): a supervisor that joins the leader's groups.

It runs without vLLM. Every :data:`~serving.group.REPORT_INTERVAL` seconds it reports to the
leader's group port; when the leader is forming a group it starts the vLLM member (``python -m
serving`` again, with vLLM's ``--node-rank R --master-addr LEADER --master-port P --headless``
and :data:`~serving.group.MEMBER_ENV` set), and it stops that member (and the processes it
started, by PID) when the leader's group id changes or the leader has been unreachable for the group
timeout. It then waits for the next group instead of exiting: the pod stays, so a leader's
restart costs the worker no container restart and no crash-loop back-off.

It also answers the pod's probes on the serving port: ``GET /health`` is 200 while the
supervisor runs, with the member's state in the body. The model's health is the leader's to
report (the client Service sends traffic to the leader only), so a worker waiting for a new
group is alive and ready, not failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from serving.group import (
    FORMING,
    IDLE,
    JOINED,
    MEMBER_ENV,
    REPORT_INTERVAL,
    GroupSpec,
    member_flags,
)
from serving.options import OPTIONS_EXIT_CODE

log = logging.getLogger("serving.group")
STOP_GRACE = 10.0  # seconds a member gets to exit on SIGTERM before SIGKILL


class GroupWorker:
    """Joins, watches and leaves the leader's groups; see the module docstring."""

    def __init__(
        self,
        spec: GroupSpec,
        member_command: Callable[[int], list[str]],
        *,
        host: str | None,
        port: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.member_command = member_command
        self.host = host
        self.port = port
        self.clock = clock
        self.instance = uuid.uuid4().hex[:12]
        self.member: asyncio.subprocess.Process | None = None
        self.member_group: str | None = None
        self.abandoned: str | None = None  # a group whose member ended: never rejoined
        self.last_contact = clock()
        self.leader_phase: str | None = None
        self.stopping = asyncio.Event()
        self.tree: list[Any] = []  # the member's descendants (psutil.Process), last seen

    def state(self) -> dict[str, Any]:
        return {
            "rank": self.spec.rank,
            "instance": self.instance,
            "state": JOINED if self.member is not None else IDLE,
            "group": self.member_group,
            "revision": self.spec.revision,
        }

    async def run(self) -> int:
        """Supervise until SIGTERM (0) or a member fails on its options (their exit code)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        runner = await self._serve_probes()
        log.info(
            "group worker rank %d of %d: reporting to %s",
            self.spec.rank,
            self.spec.size,
            self.spec.leader_url,
        )
        try:
            timeout = aiohttp.ClientTimeout(total=min(5.0, self.spec.timeout / 2))
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while not self.stopping.is_set():
                    code = await self.step(session)
                    if code is not None:
                        return code
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), REPORT_INTERVAL)
            return 0
        finally:
            await self.drop("the pod is stopping")
            await runner.cleanup()

    async def step(self, session: aiohttp.ClientSession) -> int | None:
        """One round: notice a finished member, report, then leave or join as the reply says."""
        if self.member is not None and self.member.returncode is not None:
            code = self.member.returncode
            log.warning("vLLM member of group %s exited with status %s", self.member_group, code)
            self.abandoned, self.member, self.member_group = self.member_group, None, None
            self._kill_leftovers()
            if code == OPTIONS_EXIT_CODE:
                return code  # its options are wrong: every new group would fail the same way
        if self.member is not None:
            self.tree = _descendants(self.member.pid)
        sent = self.state()
        reply = await self.report(session)
        now = self.clock()
        if reply is not None:
            self.last_contact = now
            self.leader_phase = str(reply.get("phase"))
        if self.member is not None:
            silent = now - self.last_contact
            if reply is None and silent > self.spec.timeout:
                await self.drop(f"the leader has been unreachable for {silent:.0f}s")
            elif reply is not None and reply.get("group") != self.member_group:
                await self.drop(f"the leader started group {reply.get('group')}")
        if (
            self.member is None
            and reply is not None
            and reply.get("phase") == FORMING
            and reply.get("group") != self.abandoned
            and reply.get("revision", "") == self.spec.revision  # never mix two pod templates
        ):
            await self.join(str(reply["group"]), int(reply["master_port"]))
        if reply is not None and self.state()["state"] != sent["state"]:
            await self.report(session)  # tell the leader at once, not a round later
        return None

    async def report(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        try:
            async with session.post(
                self.spec.leader_url + "/group/report", json=self.state()
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200 or not isinstance(body, dict):
                    log.error("the leader refused this worker's report: %s", body)
                    return None
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            log.debug("leader %s unreachable: %s", self.spec.leader_url, err)
            return None

    async def join(self, group: str, master_port: int) -> None:
        argv = self.member_command(master_port)
        log.info("joining group %s (master port %d)", group, master_port)
        # In the supervisor's process group: whatever ends the pod's container ends it too.
        self.member = await asyncio.create_subprocess_exec(
            *argv, env={**os.environ, MEMBER_ENV: group}
        )
        self.member_group = group

    async def drop(self, why: str) -> None:
        """Stop the member (SIGTERM, SIGKILL after a grace), then any process it left."""
        member, self.member, self.member_group = self.member, None, None
        if member is None:
            return
        if member.returncode is None:
            log.warning("leaving the group: %s", why)
            self.tree = _descendants(member.pid)
            with contextlib.suppress(ProcessLookupError):
                member.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(member.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    member.kill()
                await member.wait()
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """The member's vLLM processes that outlived it (each checked against PID reuse)."""
        for proc in self.tree:
            with contextlib.suppress(Exception):
                if proc.is_running():
                    proc.kill()
        self.tree = []

    async def _serve_probes(self) -> web.AppRunner:
        async def health(_: web.Request) -> web.Response:
            body = {**self.state(), "role": "worker", "leader_phase": self.leader_phase}
            return web.json_response(body)

        app = web.Application()
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        return runner


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def run_worker(spec: GroupSpec, argv: Sequence[str], *, host: str | None, port: int) -> int:
    """The worker pod's main: supervise members started as ``python -m serving ARGV ...``."""

    def command(master_port: int) -> list[str]:
        return [sys.executable, "-m", "serving", *argv, *member_flags(spec, master_port)]

    return asyncio.run(GroupWorker(spec, command, host=host, port=port).run())
