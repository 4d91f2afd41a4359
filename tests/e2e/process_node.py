"""A node whose pods are local processes: the kubelet part an e2e test needs, and no more.

KWOK nodes run no containers and mark every pod Ready at once; an autoscaling test needs pods
that really serve and become Ready only when they do.  Until the real kubelet node lands, this
harness registers a Node (not KWOK's: no ``type=kwok`` label), keeps its Ready heartbeat, and
for each pod the scheduler binds to it runs the pod's containers with ``hack/run-pod`` on a
loopback pod IP of its own (127.x.y.n, port 5000 as in the spec), reporting the pod Running at
once and Ready when /health answers, as a kubelet's readiness probe would.  A deleted pod gets
what the kubelet gives it: its preStop sleep, SIGTERM, up to its grace period, then the final
delete.  Only processes started here are ever signalled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaito.provisioner.kwok_node import KWOK_ANNOTATION, KWOK_MANAGED_LABEL, fake_gpu_node

from .conftest import REPO
from .kube_http import ApiError, KubeHttp

HEARTBEAT_S = 10.0
POLL_S = 0.5


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodProcess:
    namespace: str
    name: str
    uid: str
    ip: str
    proc: subprocess.Popen[str]
    log: Path
    labels: dict[str, str] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)
    terminating: bool = False
    started: float = field(default_factory=time.monotonic)
    ready_after_s: float | None = None


class ProcessNode:
    """See the module docstring; ``start()`` / ``stop()`` from the test's fixture."""

    def __init__(
        self,
        api: KubeHttp,
        name: str,
        *,
        instance_type: str,
        labels: dict[str, str],
        kubeconfig: Path,
        kubectl: str,
        work_dir: Path,
        env: dict[str, str] | None = None,
        targets_file: Path | None = None,
    ) -> None:
        self.api = api
        self.name = name
        self.instance_type = instance_type
        self.labels = labels
        self.kubeconfig = kubeconfig
        self.kubectl = kubectl
        self.work_dir = work_dir
        self.env = env or {}
        self.targets_file = targets_file
        self.pods: dict[str, PodProcess] = {}
        self.history: list[PodProcess] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        # one random /16 of the loopback range per node, so parallel tests do not collide
        self._prefix = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
        self._next_ip = 2

    # ------------------------------------------------------------------ node
    def _node(self) -> dict[str, Any]:
        node = fake_gpu_node(
            self.name, self.instance_type, gpus=0, cpu=16, memory_gib=64, labels=self.labels
        )
        node["metadata"]["labels"].pop(KWOK_MANAGED_LABEL[0], None)
        node["metadata"]["annotations"].pop(KWOK_ANNOTATION[0], None)
        node["spec"]["providerID"] = f"process://{self.name}"
        node["status"] |= {
            "conditions": self._conditions(),
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "v1.36.4",
                "containerRuntimeVersion": "process://run-pod",
                "kernelVersion": "",
                "osImage": "",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
                "kubeProxyVersion": "",
            },
        }
        return node

    @staticmethod
    def _conditions() -> list[dict[str, str]]:
        stamp = now()
        ok = {"lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
        return [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", **ok},
            {"type": "MemoryPressure", "status": "False", "reason": "Fine", **ok},
            {"type": "DiskPressure", "status": "False", "reason": "Fine", **ok},
            {"type": "PIDPressure", "status": "False", "reason": "Fine", **ok},
        ]

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(ApiError, OSError):
                self.api.merge_patch(
                    f"/api/v1/nodes/{self.name}/status",
                    {"status": {"conditions": self._conditions()}},
                )

    # ------------------------------------------------------------------ pods
    def _pod_ip(self) -> str:
        ip = f"{self._prefix}.{self._next_ip}"
        self._next_ip += 1
        return ip

    def _status(self, pod: PodProcess, spec: dict[str, Any], ready: bool) -> dict[str, Any]:
        stamp = now()
        containers = [c["name"] for c in spec.get("containers") or ()]
        flag = "True" if ready else "False"
        return {
            "status": {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": pod.ip,
                "podIPs": [{"ip": pod.ip}],
                "startTime": stamp,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
                    {"type": "ContainersReady", "status": flag, "lastTransitionTime": stamp},
                    {"type": "Ready", "status": flag, "lastTransitionTime": stamp},
                ],
                "containerStatuses": [
                    {
                        "name": name,
                        "image": "process",
                        "imageID": "",
                        "ready": ready,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": stamp}},
                    }
                    for name in containers
                ],
            }
        }

    def _start(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        ip = self._pod_ip()
        log = self.work_dir / f"{ns}-{name}-{meta['uid'][:8]}.log"
        proc = subprocess.Popen(
            [
                str(REPO / "hack" / "run-pod"), f"pod/{name}", "-n", ns,
                "--kubeconfig", str(self.kubeconfig), "--kubectl", self.kubectl,
                "--host", ip, "--port", "5000", "--wait", "600",
                "--work-dir", str(self.work_dir / f"{name}-{meta['uid'][:8]}"),
            ],
            cwd=REPO, env={**os.environ, **self.env}, stdout=subprocess.PIPE,
            stderr=log.open("wb"), text=True, start_new_session=True,
        )  # fmt: skip
        running = PodProcess(ns, name, meta["uid"], ip, proc, log, dict(meta.get("labels") or {}))
        self.pods[meta["uid"]] = running
        self.history.append(running)
        self._write_targets()
        self.api.merge_patch(
            f"/api/v1/namespaces/{ns}/pods/{name}/status", self._status(running, pod["spec"], False)
        )
        spec = pod["spec"]

        def watch_health() -> None:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.startswith("URL=") and not running.terminating:
                running.ready_after_s = time.monotonic() - running.started
                running.ready.set()
                with contextlib.suppress(ApiError, OSError):
                    self.api.merge_patch(
                        f"/api/v1/namespaces/{ns}/pods/{name}/status",
                        self._status(running, spec, True),
                    )

        thread = threading.Thread(target=watch_health, daemon=True, name=f"health {name}")
        thread.start()

    def _terminate(self, running: PodProcess, pod: dict[str, Any]) -> None:
        """What the kubelet does for a deleted pod, in a thread of its own."""
        running.terminating = True
        spec = pod["spec"]
        grace = int(pod["metadata"].get("deletionGracePeriodSeconds") or 30)
        sleep = 0
        for container in spec.get("containers") or ():
            pre = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
            sleep = max(sleep, int(pre.get("seconds") or 0))

        def run() -> None:
            deadline = time.monotonic() + grace
            time.sleep(min(sleep, grace))
            self._signal(running, signal.SIGTERM)
            try:
                running.proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(running, signal.SIGKILL)
                running.proc.wait(10)
            with contextlib.suppress(ApiError, OSError):
                self.api.delete(
                    f"/api/v1/namespaces/{running.namespace}/pods/{running.name}",
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": running.uid}},
                )
            with self._lock:
                self.pods.pop(running.uid, None)
            self._write_targets()

        threading.Thread(target=run, daemon=True, name=f"terminate {running.name}").start()

    @staticmethod
    def _signal(running: PodProcess, sig: signal.Signals) -> None:
        if running.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.proc.pid, sig)

    def _sync(self) -> None:
        items = self.api.get("/api/v1/pods", fieldSelector=f"spec.nodeName={self.name}")["items"]
        seen = set()
        for pod in items:
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            with self._lock:
                running = self.pods.get(uid)
            if pod["metadata"].get("deletionTimestamp"):
                if running is None:
                    with contextlib.suppress(ApiError, OSError):
                        self.api.delete(
                            f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/"
                            f"{pod['metadata']['name']}",
                            {"gracePeriodSeconds": 0},
                        )
                elif not running.terminating:
                    self._terminate(running, pod)
            elif running is None and pod["status"].get("phase", "Pending") == "Pending":
                self._start(pod)
        with self._lock:
            gone = [p for uid, p in self.pods.items() if uid not in seen and not p.terminating]
        for running in gone:  # force-deleted: stop what is left
            running.terminating = True
            self._signal(running, signal.SIGTERM)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            with contextlib.suppress(ApiError, OSError):
                self._sync()

    def _write_targets(self) -> None:
        """Prometheus file_sd targets: each pod's :5000 with its namespace and name as labels
        (what a PodMonitor or kubernetes_sd scrape gives a real cluster's Prometheus)."""
        if self.targets_file is None:
            return
        with self._lock:
            pods = list(self.pods.values())
        groups = [
            {
                "targets": [f"{p.ip}:5000"],
                "labels": {
                    "namespace": p.namespace,
                    "pod": p.name,
                    "inferenceset": p.labels.get("inferenceset.kaito.sh/created-by", ""),
                },
            }
            for p in pods
        ]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_file)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._write_targets()
        self.api.post("/api/v1/nodes", self._node())
        for target in (self._heartbeat, self._loop):
            thread = threading.Thread(target=target, daemon=True, name=f"{self.name} {target}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        for running in list(self.history):
            self._signal(running, signal.SIGTERM)
        for running in self.history:
            try:
                running.proc.wait(30)
            except subprocess.TimeoutExpired:
                self._signal(running, signal.SIGKILL)
                running.proc.wait(10)
        with contextlib.suppress(ApiError, OSError):
            self.api.delete(f"/api/v1/nodes/{self.name}")

    def url_of(self, pod_ip: str) -> str:
        return f"http://{pod_ip}:5000"
