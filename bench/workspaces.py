"""Time from `apply` to WorkspaceSucceeded for N Workspaces on the local control plane.

Starts its own cluster (hack/cluster, in a temporary directory), installs the CRDs, runs
the operator as a separate process (KWOK backend) and creates N copies of the seed
phi-3 Workspace at once through the API.  An informer timestamps the moment each
Workspace turns Ready.  Prints p50/p99/max latency, wall time, API requests per
Workspace (the operator's own rest_client_requests_total), idle requests, requests answered
409 (a stale cache or a duplicate create: none are expected), operator CPU
and RSS, and deletion time — with upstream Kaito's figures measured on the same kind of
machine (shared/reference/performance.md) as the baseline for the ratios.

Usage: .venv/bin/python bench/workspaces.py [N ...]      (default: 1 100)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from kaito.runtime.cache import Cache  # noqa: E402
from kaito.runtime.client import Client  # noqa: E402
from kaito.runtime.config import load_config  # noqa: E402
from kaito.runtime.gvk import GVK  # noqa: E402
from kaito.runtime.informer import InformerEvent  # noqa: E402

WORKSPACE = GVK("kaito.sh", "v1beta1", "Workspace")
NODECLAIM = GVK("karpenter.sh", "v1", "NodeClaim")
# upstream Kaito v0.12 on this kind of machine: N -> (p50 s, p99 s, requests/Workspace)
UPSTREAM = {1: (2.04, 2.04, 24.0), 20: (7.29, 8.25, 16.9), 100: (41.5, 45.0, 16.4)}


def load_cluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hack_cluster", REPO / "hack" / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if (line.startswith(name + "{") or line.startswith(name + " "))
        and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return cpu, rss


def workspace(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace},
        "resource": {
            "instanceType": "Standard_NC6s_v3",
            "labelSelector": {"matchLabels": {"apps": "phi-3"}},
        },
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


async def delete(client: Client, namespace: str, name: str, gate: asyncio.Semaphore) -> None:
    async with gate:
        await client.delete(WORKSPACE, namespace, name)


def succeeded(obj: dict[str, Any]) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "WorkspaceSucceeded":
            return bool(cond.get("status") == "True")
    return False


async def run_one(n: int, kubeconfig: str, metrics_port: int, pid: int) -> dict[str, float]:
    client = Client(await load_config(kubeconfig))
    cache = Cache(client)
    namespace = f"bench-{n}-{int(time.time())}"
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    started: dict[str, float] = {}
    ready: dict[str, float] = {}
    done = asyncio.Event()

    def on_event(event: InformerEvent) -> None:
        name = event.obj.name
        if event.obj.namespace == namespace and name not in ready and succeeded(event.obj):
            ready[name] = time.monotonic()
            if len(ready) == n:
                done.set()

    informer = cache.informer(WORKSPACE, namespace=namespace)
    informer.add_listener(on_event)
    cache.start()
    await cache.wait_for_cache_sync()
    await asyncio.sleep(0.5)
    requests0 = scrape(metrics_port, "rest_client_requests_total")
    conflicts0 = scrape(metrics_port, "rest_client_requests_total", code="409")
    cpu0, rss0 = proc_stats(pid)
    gate = asyncio.Semaphore(50)

    async def create(i: int) -> None:
        name = f"ws-{i:04d}"
        async with gate:
            started[name] = time.monotonic()
            await client.create(workspace(name, namespace))

    t0 = time.monotonic()
    await asyncio.gather(*(create(i) for i in range(n)))
    await asyncio.wait_for(done.wait(), timeout=max(120.0, n * 1.0))
    wall = time.monotonic() - t0
    await asyncio.sleep(3)  # trailing status writes and events
    requests1 = scrape(metrics_port, "rest_client_requests_total")
    conflicts = scrape(metrics_port, "rest_client_requests_total", code="409") - conflicts0
    cpu1, rss1 = proc_stats(pid)
    await asyncio.sleep(5)
    idle = scrape(metrics_port, "rest_client_requests_total") - requests1
    latencies = sorted(ready[k] - started[k] for k in started)

    claims = cache.informer(NODECLAIM)
    claims.start()
    await claims.wait_for_sync()
    gone = asyncio.Event()

    def check_gone(_: InformerEvent | None = None) -> None:
        if not informer.indexer.keys() and not any(
            e.labels and e.labels.get("kaito.sh/workspacenamespace") == namespace
            for e in cache.entries(NODECLAIM)
        ):
            gone.set()

    informer.add_listener(check_gone)
    claims.add_listener(check_gone)
    t1 = time.monotonic()
    await asyncio.gather(*(delete(client, namespace, name, gate) for name in started))
    await asyncio.wait_for(gone.wait(), timeout=max(120.0, n * 1.0))
    deletion = time.monotonic() - t1
    await client.delete(GVK("", "v1", "Namespace"), None, namespace)
    await cache.stop()
    await client.close()
    q = statistics.quantiles(latencies, n=100, method="inclusive") if n > 1 else latencies * 99
    return {
        "n": n,
        "p50": statistics.median(latencies),
        "p99": q[98],
        "max": latencies[-1],
        "wall": wall,
        "requests_per_ws": (requests1 - requests0) / n,
        "idle_requests_5s": idle,
        "conflicts": conflicts,
        "cpu_s": cpu1 - cpu0,
        "rss_start": rss0,
        "rss_end": rss1,
        "delete_s": deletion,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1, 100])
    args = parser.parse_args()
    hc = load_cluster()
    with tempfile.TemporaryDirectory(prefix="kaito-bench-ws-") as tmp:
        state = hc.up(Path(tmp) / "cluster", quiet=True)
        kubeconfig = str(state.kubeconfig)
        hc.kubectl(state, "apply", "--server-side", "-f", str(REPO / "manifests" / "crd"))
        hc.kubectl(state, "wait", "--for=condition=Established", "crd/workspaces.kaito.sh")
        metrics_port, health_port = free_port(), free_port()
        log = (Path(tmp) / "operator.log").open("wb")
        operator = subprocess.Popen(
            [
                sys.executable, "-m", "kaito", f"--kubeconfig={kubeconfig}",
                f"--metrics-port={metrics_port}", f"--health-port={health_port}",
                "--log-level=warning",
            ],
            stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(REPO / "src")),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError):
                    url = f"http://127.0.0.1:{health_port}/readyz"
                    with urllib.request.urlopen(url, timeout=1):
                        break
                if time.monotonic() > deadline or operator.poll() is not None:
                    raise SystemExit("operator did not start; see its log")
                time.sleep(0.2)
            results = [
                asyncio.run(run_one(n, kubeconfig, metrics_port, operator.pid)) for n in args.sizes
            ]
        finally:
            operator.terminate()
            operator.wait(30)
            hc.down(Path(tmp) / "cluster", quiet=True)

    head = (
        f"{'N':>5} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'wall s':>7} {'req/ws':>7} "
        f"{'idle':>5} {'409s':>5} {'CPU s':>6} {'RSS MiB':>13} {'delete s':>8}  "
        "vs upstream (p99, req/ws)"
    )
    print(head)
    for r in results:
        n = int(r["n"])
        base = UPSTREAM.get(n)
        ratio = (
            f"{base[1] / r['p99']:.1f}x faster, {base[2] / r['requests_per_ws']:.1f}x fewer"
            if base
            else "(not measured upstream)"
        )
        print(
            f"{n:>5} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['max']:>7.2f} {r['wall']:>7.2f} "
            f"{r['requests_per_ws']:>7.1f} {r['idle_requests_5s']:>5.0f} {r['conflicts']:>5.0f} "
            f"{r['cpu_s']:>6.2f} "
            f"{r['rss_start']:>6.0f}→{r['rss_end']:<6.0f} {r['delete_s']:>8.2f}  {ratio}"
        )


if __name__ == "__main__":
    main()
