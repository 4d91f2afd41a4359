"""Run the real operator (a subprocess, out of cluster) against the local control plane."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import REPO, Cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Operator:
    """One kaito-operator process; `start`, `kill` (SIGKILL) and `stop` (SIGTERM)."""

    def __init__(
        self,
        cluster: Cluster,
        log_dir: Path,
        extra: list[str],
        env: dict[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.log_dir = log_dir
        self.extra = extra
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0
        self.starts = 0

    def start(self) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        self.starts += 1
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1") | self.env
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "kaito",
                f"--kubeconfig={self.cluster.kubeconfig}",
                f"--metrics-port={self.metrics_port}", f"--health-port={self.health_port}",
                "--gc-interval=2", *self.extra,
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"operator exited; see {log.name}"
            try:
                url = f"http://127.0.0.1:{self.health_port}/readyz"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("operator never became ready")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "manifests" / "crd"))
    for crd in (
        "workspaces.kaito.sh",
        "inferencesets.kaito.sh",
        "nodeclaims.karpenter.sh",
        "machines.karpenter.sh",
    ):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    install_crds(cluster)


def _operator(
    cluster: Cluster,
    tmp_path_factory: pytest.TempPathFactory,
    extra: list[str],
    env: dict[str, str] | None = None,
) -> Iterator[Operator]:
    op = Operator(cluster, tmp_path_factory.mktemp("operator"), extra, env)
    op.start()
    yield op
    op.stop()


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    yield from _operator(cluster, tmp_path_factory, [])


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return result


def kaito_status(cluster: Cluster, namespace: str) -> str:
    """`kaito status -n NAMESPACE` against the cluster (the CLI reads through the API)."""
    cli = subprocess.run(
        [sys.executable, "-m", "kaito.cli", "status", "-n", namespace],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONPATH": str(REPO / "src")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    return cli.stdout


WS_LABEL = "kaito.sh/workspace"


def example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())
    return doc


def workspace(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    return cluster.get("workspace", name, namespace)


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        ws = workspace(cluster, namespace, name)
        cond = condition(ws, "WorkspaceSucceeded")
        return ws if cond and cond["status"] == "True" else None

    result: dict[str, Any] = wait_until(f"Workspace {name} ready", ready, timeout)
    return result


def wait_condition(
    cluster: Cluster,
    namespace: str,
    name: str,
    type_: str,
    *,
    reason: str | None = None,
    status: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """The Workspace's condition ``type_`` once it has ``reason`` and/or ``status``."""

    def found() -> dict[str, Any] | None:
        cond = condition(workspace(cluster, namespace, name), type_)
        if cond is None or reason not in (None, cond.get("reason")):
            return None
        return cond if status in (None, cond.get("status")) else None

    result: dict[str, Any] = wait_until(f"{name} {type_} {reason or status}", found, timeout)
    return result


def claims_of(cluster: Cluster, namespace: str, name: str, kind: str = "nodeclaims") -> list[Any]:
    selector = f"{WS_LABEL}={name},kaito.sh/workspacenamespace={namespace}"
    items: list[Any] = get_json(cluster, kind, "-l", selector)["items"]
    return items


@pytest.fixture
def ns(cluster: Cluster, namespace: str, operator: Operator) -> Iterator[str]:
    """A namespace whose Workspaces are deleted (and finalized) before the test ends."""
    yield namespace
    cluster.kubectl("-n", namespace, "delete", "workspaces", "--all", "--wait=false")
    wait_until(
        "Workspaces finalized",
        lambda: not get_json(cluster, "workspaces", "-n", namespace)["items"],
        timeout=60,
    )
