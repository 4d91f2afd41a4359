"""Processes that hack/ starts and later stops: started detached, recorded, signalled by PID.

Standard library only (used before the project's virtual environment exists). A recorded
process is only ever signalled while its PID still runs the binary we started, so a reused
PID is never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Component:
    """One process we started: how, where it logs and how to tell it is healthy."""

    name: str
    pid: int
    argv: list[str]
    log: str
    health_url: str


def pid_alive(comp: Component) -> bool:
    """True when the PID still runs the binary we started (guards against PID reuse)."""
    try:
        stat = Path(f"/proc/{comp.pid}/stat").read_text()
        exe = os.readlink(f"/proc/{comp.pid}/exe")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}:
        return False
    return exe.removesuffix(" (deleted)") == os.path.realpath(comp.argv[0])


def log_tail(path: str, lines: int = 25) -> str:
    try:
        content = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(content[-lines:])


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    health_url: str,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> Component:
    """Start `argv` in its own session (it outlives the command that started it)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            env=dict(env) if env is not None else None,
        )
    return Component(name=name, pid=proc.pid, argv=argv, log=str(log), health_url=health_url)


def stop_component(comp: Component, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; only while the PID is still ours."""
    if not pid_alive(comp):
        return
    try:
        os.kill(comp.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(comp):
            reap(comp.pid)
            return
        reap(comp.pid)
        time.sleep(0.05)
    try:
        os.kill(comp.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    reap(comp.pid)


def reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (restart, tests)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0
