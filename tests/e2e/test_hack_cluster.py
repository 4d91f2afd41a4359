"""`hack/cluster` itself: idempotent up, crash reporting, and a down that leaves nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import REPO, hack_cluster

pytestmark = pytest.mark.e2e


def run(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "hack" / "cluster"), "--dir", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_up_is_idempotent_a_crash_is_reported_and_down_leaves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    started = time.monotonic()
    first = run(directory, "up")
    assert first.returncode == 0, first.stderr
    assert time.monotonic() - started < 60
    state = hack_cluster.ClusterState.load(directory)
    assert state is not None
    pids = {name: c.pid for name, c in state.components.items()}
    assert set(pids) == set(hack_cluster.COMPONENTS)

    again = run(directory, "up")
    assert again.returncode == 0 and "already up" in again.stdout
    state_again = hack_cluster.ClusterState.load(directory)
    assert state_again is not None
    assert {n: c.pid for n, c in state_again.components.items()} == pids

    node = run(directory, "add-node", "gpu-x", "--instance-type", "Standard_NC24s_v3")
    assert node.returncode == 0 and "4 GPU" in node.stdout, node.stderr

    healthy = run(directory, "status")
    assert healthy.returncode == 0 and healthy.stdout.count("healthy") == len(pids)

    os.kill(pids["kwok"], signal.SIGKILL)
    time.sleep(0.5)
    crashed = run(directory, "status")
    assert crashed.returncode == 1
    assert "kwok" in crashed.stdout and "DEAD" in crashed.stdout
    assert "last lines of" in crashed.stdout

    down = run(directory, "down")
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [name for name, pid in pids.items() if alive(pid)]
    assert not directory.exists()
    assert run(directory, "status").returncode == 1
