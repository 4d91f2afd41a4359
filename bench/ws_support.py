"""Pieces of bench/workspaces.py: the Workspace it creates, the floor's copies of the
operator's objects, and the controller processes it starts and measures."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from kaito.api import constants as C
from kaito.controllers.common import NODECLAIM
from kaito.runtime.cache import Cache
from kaito.runtime.gvk import NODE, POD, STATEFULSET
from kaito.runtime.informer import InformerEvent
from ws_report import STAGES, percentile

REPO = Path(__file__).resolve().parent.parent


def load_hack() -> ModuleType:
    """hack/cluster.py as a module (and, through it, hack/pki.py as `pki`)."""
    spec = importlib.util.spec_from_file_location("hack_cluster", REPO / "hack" / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def client_kubeconfig(state: Any, user: str, path: Path) -> str:
    """A kubeconfig for a client certificate of its own: user `user`, group system:masters.

    Each controller the benchmark runs is its own user, so the audit log tells them apart.
    """
    import pki  # noqa: PLC0415  (hack/pki.py, on sys.path once hack/cluster.py is loaded)

    directory = state.path / "pki"
    pki.issue(directory, user, f"/O=system:masters/CN={user}", pki.CLIENT_EXT)
    pki.write_kubeconfig(path, directory, state.ports["kube-apiserver"], cert=user, user=user)
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def workspace(name: str, namespace: str) -> dict[str, Any]:
    """Upstream's phi-3 example (examples/inference/kaito_workspace_phi_3_mini_4k.yaml), the
    post-load benchmark off as in upstream's own measurements; both controllers take it."""
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"kaito.sh/disable-benchmark": "true"},
        },
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": "phi-3"}},
        },
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


# ------------------------------------------------------------------ the floor

_SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


def strip_template(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as read back, made creatable again: no server-set fields, no owner (the
    floor has no Workspace; the garbage collector would delete an orphan), no status but a
    node's capacity (nodes take theirs on create), no allocated cluster IP."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    for key in (*_SERVER_FIELDS, "ownerReferences", "finalizers"):
        meta.pop(key, None)
    status = out.pop("status", None) or {}
    if out.get("kind") == "Node":
        out["status"] = {k: status[k] for k in ("capacity", "allocatable") if k in status}
    if out.get("kind") == "Service":
        spec = out["spec"]
        if spec.get("clusterIP") != "None":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
    return out


def node_name_for(namespace: str, index: int) -> str:
    """11 lowercase alphanumerics, like the operator's NodeClaim (and node) names."""
    return "fl" + hashlib.sha256(f"{namespace}/{index}".encode()).hexdigest()[:9]


def floor_copies(
    templates: list[dict[str, Any]], ws_name: str, ws_namespace: str, namespace: str, n: int
) -> dict[str, list[dict[str, Any]]]:
    """N copies of the template objects, per Workspace name, in the order the operator
    needs them: the node first, the StatefulSet last."""
    order = {"Node": 0, "ControllerRevision": 1, "Service": 2, "StatefulSet": 3}
    ordered = sorted(templates, key=lambda o: order.get(o.get("kind", ""), 9))
    node = next(o for o in templates if o.get("kind") == "Node")
    node_name = node["metadata"]["name"]
    text = json.dumps(ordered)
    out: dict[str, list[dict[str, Any]]] = {}
    for i in range(n):
        name = f"ws-{i:04d}"
        stamped = (
            text.replace(node_name, node_name_for(namespace, i))
            .replace(ws_namespace, namespace)
            .replace(ws_name, name)
        )
        out[name] = json.loads(stamped)
    return out


# ------------------------------------------------------------------ controllers


class Controller:
    """A controller process started for one phase; only its own PID is ever signalled."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        log: Path,
        ready_url: str,
        metrics_url: str,
        ready_log_line: str | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.ready_url = ready_url
        self.metrics_url = metrics_url
        self.ready_log_line = ready_log_line
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=os.environ | self.env
            )

    async def start(self, limit_s: float = 120.0) -> None:
        """Start it and wait until it is ready to work."""
        self._spawn()
        deadline = time.monotonic() + limit_s
        while not await asyncio.to_thread(self._ready):
            if not self.alive() or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"{self.name} did not become ready; its log ends:\n{tail}")
            await asyncio.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1) as resp:
                if resp.status != 200:
                    return False
        except OSError:
            return False
        return self.ready_log_line is None or self.ready_log_line in self.log.read_text(
            errors="replace"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def _status(self, key: str) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stats(self) -> tuple[float, float]:
        """(CPU seconds so far, RSS MiB now)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return cpu, self._status("VmRSS")

    def peak_rss(self) -> float:
        return self._status("VmHWM")

    def reconcile_errors(self) -> float | None:
        """controller_runtime_reconcile_errors_total over all controllers (None: not exported)."""
        name = "controller_runtime_reconcile_errors_total"
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
                text = resp.read().decode()
            values = [
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith((name + "{", name + " "))
            ]
            return sum(values) if values else None
        return None


# ------------------------------------------------------------------ stages

WS_LABEL = C.LABEL_WORKSPACE_NAME
WS_NS_LABEL = C.LABEL_WORKSPACE_NAMESPACE


def _true(obj: Any, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or ()
    )


class Stages:
    """When each Workspace's objects appeared and turned Ready, as this process saw them.

    Where the time goes between a Workspace's create and its WorkspaceSucceeded (or, for the
    floor, between the first create and the pod's Ready): the answer to "why slower than the
    floor" is read off these, not guessed.
    """

    def __init__(
        self, cache: Cache, namespace: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.at: dict[str, dict[str, float]] = {}
        self.clock = clock
        selector = f"{WS_NS_LABEL}={namespace}"
        watches = (
            (cache.informer(NODECLAIM, label_selector=selector), self._claim),
            (cache.informer(NODE, label_selector=selector), self._node),
            (cache.informer(STATEFULSET, namespace=namespace), self._statefulset),
            (cache.informer(POD, namespace=namespace), self._pod),
        )
        for informer, listener in watches:
            informer.add_listener(listener)

    def mark(self, name: str, stage: str) -> None:
        seen = self.at.setdefault(name, {})
        if stage not in seen:
            seen[stage] = self.clock()

    def _claim(self, event: InformerEvent) -> None:
        name = (event.obj.labels or {}).get(WS_LABEL)
        if name:
            self.mark(name, "claim")
            if _true(event.obj, "Ready"):
                self.mark(name, "claim Ready")

    def _node(self, event: InformerEvent) -> None:
        name = (event.obj.labels or {}).get(WS_LABEL)
        if name:
            self.mark(name, "node")
            if _true(event.obj, "Ready"):
                self.mark(name, "node Ready")

    def _statefulset(self, event: InformerEvent) -> None:
        self.mark(event.obj.name, "StatefulSet")
        # what both operators wait for: the controller-manager's readyReplicas, not the pod
        wanted = (event.obj.get("spec") or {}).get("replicas", 1)
        if (event.obj.get("status") or {}).get("readyReplicas", 0) >= max(wanted, 1):
            self.mark(event.obj.name, "StatefulSet Ready")

    def _pod(self, event: InformerEvent) -> None:
        name = event.obj.name.rsplit("-", 1)[0]  # <StatefulSet>-<ordinal>
        self.mark(name, "pod")
        if (event.obj.get("spec") or {}).get("nodeName"):
            self.mark(name, "pod bound")
        if _true(event.obj, "Ready"):
            self.mark(name, "pod Ready")

    def all_reached(self, stage: str, names: Iterable[str]) -> bool:
        return all(stage in self.at.get(name, {}) for name in names)

    def summary(self, started: dict[str, float]) -> dict[str, list[float]]:
        """Per stage: [p50, p99] seconds after each Workspace's start, over those that got there."""
        out: dict[str, list[float]] = {}
        for stage in STAGES:
            values = sorted(
                self.at[n][stage] - t for n, t in started.items() if stage in self.at.get(n, {})
            )
            if not values:
                continue
            out[stage] = [percentile(values, 50), percentile(values, 99)]
        return out
