"""Informer-cache benchmark: 10 000 ConfigMaps + 10 000 Pods, figures printed (no asserts).

    python bench/informer.py                       # own cluster under /tmp, removed afterwards
    python bench/informer.py --kubeconfig PATH     # an existing cluster (objects left in place)

Reports list+sync time, client CPU during sync, baseline RSS before any object, RSS per cached
object (after GC), watch event → reconcile start latency p50/p99 (including the PATCH round
trip) and work-queue throughput. The measuring half runs in a fresh interpreter so its RSS
is not polluted by the object-creating half.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
NAMESPACES = 20
LABEL = "kaito-bench=informer"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- populate
def configmap(ns: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"cm-{i}", "namespace": ns,
                     "labels": {"kaito-bench": "informer", "shard": str(i % 10)}},
        "data": {"config.yaml": f"model: phi-3-mini-4k-instruct\nreplica: {i}\n", "id": str(i)},
    }  # fmt: skip


def pod(ns: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"pod-{i}", "namespace": ns,
                     "labels": {"kaito-bench": "informer", "app": f"ws-{i % 100}"}},
        "spec": {
            "schedulerName": "kaito-bench-none",  # nobody schedules them: no status churn
            "containers": [{
                "name": "inference", "image": "example.invalid/vllm:0.1",
                "args": ["--model", "/models/phi", "--port", "5000"],
                "ports": [{"containerPort": 5000}],
                "env": [{"name": "KAITO_MODEL", "value": "phi-3-mini-4k-instruct"}],
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                              "limits": {"nvidia.com/gpu": "1"}},
            }],
        },
    }  # fmt: skip


async def populate(kubeconfig: str, per_kind: int) -> None:
    from kaito.runtime.client import Client  # noqa: PLC0415
    from kaito.runtime.config import load_config  # noqa: PLC0415
    from kaito.runtime.errors import AlreadyExists  # noqa: PLC0415
    from kaito.runtime.gvk import NAMESPACE  # noqa: PLC0415

    async with Client(await load_config(kubeconfig)) as client:
        namespaces = [f"bench-{n}" for n in range(NAMESPACES)]
        for ns in namespaces:
            with contextlib.suppress(AlreadyExists):
                await client.create({"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": ns}})  # fmt: skip
        # pods need the namespace's default ServiceAccount (admission)
        for ns in namespaces:
            while True:
                try:
                    await client.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")
                    break
                except Exception:
                    await asyncio.sleep(0.2)
        del NAMESPACE
        sem = asyncio.Semaphore(48)
        started = time.monotonic()

        async def create(obj: dict[str, Any]) -> None:
            async with sem:
                with contextlib.suppress(AlreadyExists):
                    await client.create(obj)

        objs = [configmap(namespaces[i % NAMESPACES], i) for i in range(per_kind)]
        objs += [pod(namespaces[i % NAMESPACES], i) for i in range(per_kind)]
        await asyncio.gather(*(create(o) for o in objs))
        took = time.monotonic() - started
        print(f"created {len(objs)} objects in {took:.1f}s ({len(objs) / took:.0f}/s)", flush=True)


# --------------------------------------------------------------------------- measure
async def measure(kubeconfig: str, samples: int) -> dict[str, Any]:
    from kaito.runtime import Request, Result  # noqa: PLC0415
    from kaito.runtime.cache import Cache  # noqa: PLC0415
    from kaito.runtime.client import Client  # noqa: PLC0415
    from kaito.runtime.config import load_config  # noqa: PLC0415
    from kaito.runtime.controller import Controller  # noqa: PLC0415
    from kaito.runtime.gvk import CONFIGMAP, POD  # noqa: PLC0415
    from kaito.runtime.metrics import Metrics  # noqa: PLC0415
    from kaito.runtime.workqueue import WorkQueue  # noqa: PLC0415

    out: dict[str, Any] = {}
    metrics = Metrics()
    client = Client(await load_config(kubeconfig), metrics=metrics)
    await client.resource(CONFIGMAP)  # discovery before the baseline: it is not per object
    await client.resource(POD)
    gc.collect()
    out["baseline_rss_mib"] = rss_mib()
    out["python_modules"] = len(sys.modules)

    cache = Cache(client)
    cm_inf = cache.informer(CONFIGMAP)
    pod_inf = cache.informer(POD)
    cpu0, t0 = time.process_time(), time.monotonic()
    cache.start()
    await cache.wait_for_cache_sync(600)
    out["sync_s"] = time.monotonic() - t0
    out["sync_cpu_s"] = time.process_time() - cpu0
    out["objects"] = len(cm_inf.indexer) + len(pod_inf.indexer)
    out["configmaps"], out["pods"] = len(cm_inf.indexer), len(pod_inf.indexer)
    out["rss_after_sync_mib"] = rss_mib()
    gc.collect()
    out["rss_after_gc_mib"] = rss_mib()
    per = (out["rss_after_gc_mib"] - out["baseline_rss_mib"]) * 1024 / out["objects"]
    out["kib_per_object_gc"] = per
    out["kib_per_object"] = (
        (out["rss_after_sync_mib"] - out["baseline_rss_mib"]) * 1024 / out["objects"]
    )
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # cached read cost (typed decode of one pod / list of one namespace's configmaps)
    t = time.perf_counter()
    for i in range(1000):
        cache.get(POD, f"bench-{i % NAMESPACES}", f"pod-{i}")
    out["get_pod_us"] = (time.perf_counter() - t) * 1e6 / 1000
    t = time.perf_counter()
    for _ in range(20):
        cache.list(CONFIGMAP, namespace="bench-3", labels={"shard": "3"})
    out["list_500_cms_ms"] = (time.perf_counter() - t) * 1e3 / 20

    # watch event -> reconcile start, through a real controller and work queue
    sent: dict[str, float] = {}
    lat: list[float] = []
    seen = asyncio.Event()

    initial = len(cm_inf.indexer)
    drained = asyncio.Event()
    reconciles = 0

    async def reconcile(req: Request) -> Result:
        nonlocal reconciles
        reconciles += 1
        if reconciles >= initial:
            drained.set()
        t_sent = sent.pop(req.name, None)
        if t_sent is not None:
            lat.append(time.perf_counter() - t_sent)
            seen.set()
        return Result()

    ctrl = Controller("bench", reconcile, cache, metrics=metrics, workers=5)
    ctrl.watches(CONFIGMAP)
    t_init = time.monotonic()
    await ctrl.start()
    await asyncio.wait_for(drained.wait(), 120)
    out["initial_reconcile_drain_s"] = time.monotonic() - t_init
    out["initial_reconciles_per_s"] = len(cm_inf.indexer) / out["initial_reconcile_drain_s"]
    run = os.getpid()
    rtt: list[float] = []
    for i in range(samples):
        name = f"cm-{i}"
        ns = f"bench-{i % NAMESPACES}"
        seen.clear()
        sent[name] = time.perf_counter()
        tick = f"{run}-{i}"  # always a real change, also when the bench runs again
        t_patch = time.perf_counter()
        await client.patch(CONFIGMAP, ns, name, {"metadata": {"labels": {"tick": tick}}})
        rtt.append(time.perf_counter() - t_patch)
        await asyncio.wait_for(seen.wait(), 10)
    lat.sort()
    out["latency_p50_ms"] = statistics.median(lat) * 1e3
    out["latency_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3
    rtt.sort()
    out["patch_rtt_p50_ms"] = statistics.median(rtt) * 1e3
    out["patch_rtt_p99_ms"] = rtt[min(len(rtt) - 1, int(len(rtt) * 0.99))] * 1e3
    await ctrl.stop()
    await cache.stop()
    await client.close()

    # raw work-queue throughput: 5 workers, 200 000 distinct keys
    q: WorkQueue[int] = WorkQueue("bench", metrics=Metrics())
    n = 200_000
    t = time.perf_counter()
    for i in range(n):
        q.add(i)

    async def worker() -> None:
        while len(q):
            item = await q.get()
            q.done(item)

    await asyncio.gather(*(worker() for _ in range(5)))
    out["workqueue_items_per_s"] = n / (time.perf_counter() - t)
    return out


def table(r: dict[str, Any]) -> str:
    rows = [
        ("objects cached (ConfigMaps + Pods)", f"{r['configmaps']} + {r['pods']}", ""),
        ("list + sync, wall", f"{r['sync_s']:.2f} s", "target <= 3 s; client-go 0.54 s"),
        ("client CPU during sync", f"{r['sync_cpu_s']:.2f} s", "client-go 0.51 s"),
        ("baseline RSS before objects", f"{r['baseline_rss_mib']:.1f} MiB", "target <= 60 MiB"),
        ("RSS after sync (after GC)",
         f"{r['rss_after_sync_mib']:.0f} ({r['rss_after_gc_mib']:.0f}) MiB", "client-go 149 (116)"),
        ("KiB per cached object (after GC)",
         f"{r['kib_per_object']:.2f} ({r['kib_per_object_gc']:.2f})", "target <= 8; client-go 6.5"),
        ("cache.get of one Pod (typed decode)", f"{r['get_pod_us']:.0f} us", ""),
        ("cache.list, 500 ConfigMaps by ns+label", f"{r['list_500_cms_ms']:.2f} ms", ""),
        ("initial list drained by 5 no-op workers",
         f"{r['initial_reconcile_drain_s']:.2f} s ({r['initial_reconciles_per_s']:.0f}/s)", ""),
        ("watch event -> reconcile start p50 / p99",
         f"{r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} ms", "client-go 3.7 / 6.2 ms"),
        ("  of which the PATCH round trip p50 / p99",
         f"{r['patch_rtt_p50_ms']:.1f} / {r['patch_rtt_p99_ms']:.1f} ms", "~3.7 ms"),
        ("workqueue add+get+done throughput",
         f"{r['workqueue_items_per_s']:,.0f} items/s", "5 workers, 200k keys"),
    ]  # fmt: skip
    width = max(len(a) for a, _, _ in rows)
    lines = [f"{'measure':<{width}}  {'kaito.runtime':<22}  reference"]
    lines += [f"{a:<{width}}  {b:<22}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting one")
    parser.add_argument("--objects", type=int, default=10_000, help="per kind (default 10000)")
    parser.add_argument("--samples", type=int, default=300, help="latency samples")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args()
    if args.measure_only:
        print(json.dumps(asyncio.run(measure(args.kubeconfig, args.samples))))
        return 0

    directory: Path | None = None
    kubeconfig = args.kubeconfig
    cluster_mod: Any = None
    if kubeconfig is None:
        spec = importlib.util.spec_from_file_location(
            "kaito_hack_cluster", REPO / "hack/cluster.py"
        )
        assert spec is not None and spec.loader is not None
        cluster_mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = cluster_mod
        spec.loader.exec_module(cluster_mod)
        directory = Path(tempfile.mkdtemp(prefix="kaito-bench-informer-")) / "cluster"
        state = cluster_mod.up(directory, quiet=True)
        kubeconfig = str(state.kubeconfig)
    try:
        asyncio.run(populate(kubeconfig, args.objects))
        proc = subprocess.run(
            [sys.executable, __file__, "--measure-only", "--kubeconfig", kubeconfig,
             "--samples", str(args.samples)],
            capture_output=True, text=True, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )  # fmt: skip
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(result, indent=1) if args.json else table(result))
    finally:
        if directory is not None:
            cluster_mod.down(directory, quiet=True)
            directory.parent.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
