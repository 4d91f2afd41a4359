"""N Workspaces to WorkspaceSucceeded: the cluster's floor, kaito-py and upstream, one run.

Starts its own cluster (hack/cluster, profile `stock` unless told otherwise, in a temporary
directory) and, for each N, runs in turn on that one cluster:

- **floor**: the objects our operator makes for N Workspaces (a KWOK GPU node, the
  ControllerRevision, both Services and the StatefulSet of each), copied from what the
  operator made for one Workspace and created directly, with no controller running; each
  copy is timed from its first create until its pod is Ready.  This is what the cluster
  itself needs for the work, and the baseline every ratio divides by.
- **kaito-py**: N copies of upstream's phi-3 example Workspace through our operator (its
  KWOK backend provisions the nodes), each timed from its create to WorkspaceSucceeded.
- **upstream**, when KAITO_UPSTREAM_BIN names a build of upstream Kaito's workspace
  controller (hack/build-upstream.sh): the same N Workspaces, upstream's CRDs, and a
  stand-in provider (bench/nodeclaim_standin.py) fulfilling its NodeClaims with KWOK nodes.

Each controller runs alone, started for its phase with its own client certificate; the API
server's audit log counts its requests (split into its own and the node provider's: node
create/delete, NodeClaim status and finalizer), failing ones (409, 404), GETs and requests
at idle.  Also: CPU and RSS of the controller process, the time to delete every Workspace
until Workspaces, NodeClaims and Nodes are gone, and failed requests during the delete; and
per stage (claim, node, StatefulSet, pod, their Ready) p50/p99 seconds after each start, so a
gap to the floor can be placed.
Everything of a phase is deleted before the next one starts; the cluster goes at the end.

Usage: .venv/bin/python bench/workspaces.py [--profile stock|tuned] [--json FILE] [N ...]
       .venv/bin/python bench/workspaces.py --readme FILE.json ...   (rewrite README's table)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ws_report  # noqa: E402
from audit_log import AuditLog, apiserver_args, policy, tally  # noqa: E402
from kaito.api import constants as C  # noqa: E402
from kaito.controllers.common import CONTROLLER_REVISION, NODECLAIM, WORKSPACE  # noqa: E402
from kaito.runtime.cache import Cache  # noqa: E402
from kaito.runtime.client import Client  # noqa: E402
from kaito.runtime.config import load_config  # noqa: E402
from kaito.runtime.errors import AlreadyExists, NotFound  # noqa: E402
from kaito.runtime.gvk import GVK, NODE, POD, SERVICE, STATEFULSET  # noqa: E402
from kaito.runtime.informer import InformerEvent  # noqa: E402
from ws_support import (  # noqa: E402
    WS_LABEL,
    WS_NS_LABEL,
    Controller,
    Stages,
    client_kubeconfig,
    floor_copies,
    free_port,
    load_hack,
    strip_template,
    workspace,
)

NAMESPACE = GVK("", "v1", "Namespace")
USERS = {"kaito-py": "kaito-bench-ours", "upstream": "kaito-bench-upstream"}
PROVIDER_USER = "kaito-bench-provider"
IN_FLIGHT = 50  # creates and deletes in flight at once, in every phase
SETTLE_S = 3.0  # trailing status writes and events still count to the rollout
IDLE_S = 10.0
TEMPLATE = "kaitotmpl"  # the Workspace whose objects the floor copies


def rollout_timeout(n: int) -> float:
    return max(180.0, 1.2 * n)


def ready_condition(obj: Any, kind: str) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind:
            return bool(cond.get("status") == "True")
    return False


class Bench:
    """One cluster, its clients and the phases run on it."""

    def __init__(self, hc: Any, state: Any, tmp: Path, audit: AuditLog, operator_src: Path) -> None:
        self.operator_src = operator_src  # the kaito-py tree whose operator is measured
        self.operator_args: list[str] = []
        self.hc = hc
        self.state = state
        self.tmp = tmp
        self.audit = audit
        self.client: Client
        self.cache: Cache
        self.templates: list[dict[str, Any]] = []

    def kubeconfig(self, user: str) -> str:
        return client_kubeconfig(self.state, user, self.tmp / f"{user}.kubeconfig")

    async def open(self) -> None:
        self.client = Client(await load_config(str(self.state.kubeconfig)))
        self.cache = Cache(self.client)
        self.cache.start()

    async def close(self) -> None:
        await self.cache.stop()
        await self.client.close()

    async def namespace(self, name: str) -> None:
        await self.client.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )

    def apply_crds(self, *paths: Path) -> None:
        for path in paths:
            self.hc.kubectl(
                self.state, "apply", "--server-side", "--force-conflicts", "-f", str(path)
            )
        self.hc.kubectl(self.state, "wait", "--for=condition=Established", "crd", "--all")

    # ------------------------------------------------------------- controllers
    def ours(self) -> Controller:
        metrics, health = free_port(), free_port()
        return Controller(
            "kaito-py",
            [sys.executable, "-m", "kaito", f"--kubeconfig={self.kubeconfig(USERS['kaito-py'])}",
             f"--metrics-port={metrics}", f"--health-port={health}", *self.operator_args],
            env={"PYTHONPATH": str(self.operator_src)},
            log=self.tmp / "kaito-py.log",
            ready_url=f"http://127.0.0.1:{health}/readyz",
            metrics_url=f"http://127.0.0.1:{metrics}/metrics",
        )  # fmt: skip

    def provider(self) -> Controller:
        metrics, health = free_port(), free_port()
        return Controller(
            "provider",
            [sys.executable, str(REPO / "bench" / "nodeclaim_standin.py"),
             f"--kubeconfig={self.kubeconfig(PROVIDER_USER)}",
             f"--metrics-port={metrics}", f"--health-port={health}"],
            env={"KAITO_SRC": str(self.operator_src)},
            log=self.tmp / "provider.log",
            ready_url=f"http://127.0.0.1:{health}/readyz",
            metrics_url=f"http://127.0.0.1:{metrics}/metrics",
        )  # fmt: skip

    def upstream(self, binary: str) -> Controller:
        metrics, health = free_port(), free_port()
        return Controller(
            "upstream",
            [binary, "--webhook=false", "--leader-elect=false",
             f"--metrics-bind-address=127.0.0.1:{metrics}",
             f"--health-probe-bind-address=127.0.0.1:{health}"],
            env={"KUBECONFIG": self.kubeconfig(USERS["upstream"]), "CLOUD_PROVIDER": "azure"},
            log=self.tmp / "upstream.log",
            ready_url=f"http://127.0.0.1:{health}/readyz",
            metrics_url=f"http://127.0.0.1:{metrics}/metrics",
            ready_log_line="Starting workers",  # its probe answers before the caches sync
        )  # fmt: skip

    # ------------------------------------------------------------- the template
    async def capture_templates(self) -> None:
        """Run one Workspace through our operator and keep its objects for the floor."""
        ns = "bench-template"
        await self.namespace(ns)
        ctrl = self.ours()
        await ctrl.start()
        try:
            informer = self.cache.informer(WORKSPACE, namespace=ns)
            await informer.wait_for_sync()
            await self.client.create(workspace(TEMPLATE, ns))
            deadline = time.monotonic() + 120
            while True:
                obj = self.cache.get(WORKSPACE, ns, TEMPLATE)
                if obj is not None and ready_condition(obj, "WorkspaceSucceeded"):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the template Workspace did not succeed; see {ctrl.log}")
                await asyncio.sleep(0.2)
            found: list[dict[str, Any]] = []
            for gvk, namespace, selector in (
                (NODE, None, f"{WS_LABEL}={TEMPLATE}"),
                (CONTROLLER_REVISION, ns, f"{C.LABEL_REVISION_WORKSPACE_NAME}={TEMPLATE}"),
                (SERVICE, ns, f"{WS_LABEL}={TEMPLATE}"),
                (STATEFULSET, ns, f"{WS_LABEL}={TEMPLATE}"),
            ):
                items, _ = await self.client.list_raw(gvk, namespace, label_selector=selector)
                found += [{"apiVersion": gvk.api_version, "kind": gvk.kind, **i} for i in items]
            kinds = sorted(o["kind"] for o in found)
            if kinds != ["ControllerRevision", "Node", "Service", "Service", "StatefulSet"]:
                raise SystemExit(f"unexpected objects for the template Workspace: {kinds}")
            self.templates = [strip_template(o) for o in found]
            await self._delete_workspaces(ns, [TEMPLATE], ctrl, limit_s=120)
        finally:
            ctrl.stop()
        await self.cleanup(ns)

    # ------------------------------------------------------------- phases
    async def floor(self, n: int, ns: str) -> dict[str, Any]:
        copies = floor_copies(self.templates, TEMPLATE, "bench-template", ns, n)
        await self.namespace(ns)
        cache = Cache(self.client)
        stages = Stages(cache, ns)
        timing = _Timing(n)

        def on_pod(event: InformerEvent) -> None:
            name = (event.obj.labels or {}).get(WS_LABEL)
            if name and ready_condition(event.obj, "Ready"):
                timing.ready(name)

        cache.informer(POD, namespace=ns).add_listener(on_pod)
        cache.start()
        await cache.wait_for_cache_sync()
        load0 = os.getloadavg()[0]
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def make(name: str, objects: list[dict[str, Any]]) -> None:
            for i, obj in enumerate(objects):
                async with gate:
                    if i == 0:
                        timing.start(name)
                    # the client retries a create the server timed out on (5xx); the first
                    # attempt may have made it, and this phase made every name it creates
                    with contextlib.suppress(AlreadyExists):
                        await self.client.create(obj)

        t0 = time.monotonic()
        await asyncio.gather(*(make(name, objs) for name, objs in copies.items()))
        await timing.wait(rollout_timeout(n))
        # the StatefulSets' readyReplicas (what an operator waits for) trail the pods
        for _ in range(300):  # 60 s at most
            if stages.all_reached("StatefulSet Ready", timing.readied):
                break
            await asyncio.sleep(0.2)
        result = timing.result("floor", n, t0) | {
            "load": [load0, os.getloadavg()[0]],
            "stages": stages.summary(timing.started),
        }
        await cache.stop()
        await self.cleanup(ns)
        return result

    async def workspaces(
        self, who: str, n: int, ns: str, ctrl: Controller, provider: Controller | None
    ) -> dict[str, Any]:
        user = USERS[who]
        await self.namespace(ns)
        informer = self.cache.informer(WORKSPACE, namespace=ns)
        timing = _Timing(n)

        def on_ws(event: InformerEvent) -> None:
            if ready_condition(event.obj, "WorkspaceSucceeded"):
                timing.ready(event.obj.name)

        informer.add_listener(on_ws)
        await informer.wait_for_sync()
        cache = Cache(self.client)
        stages = Stages(cache, ns)
        cache.start()
        await cache.wait_for_cache_sync()
        for proc in (provider, ctrl):
            if proc is not None:
                await proc.start()
        try:
            await asyncio.sleep(1.0)  # let start-up requests finish before the window opens
            cpu0, rss0 = ctrl.stats()
            errors0 = ctrl.reconcile_errors()
            load0 = os.getloadavg()[0]
            gate = asyncio.Semaphore(IN_FLIGHT)
            names = [f"ws-{i:04d}" for i in range(n)]

            async def create(name: str) -> None:
                async with gate:
                    timing.start(name)
                    with contextlib.suppress(AlreadyExists):  # a retried create, as above
                        await self.client.create(workspace(name, ns))

            t0, wall0 = time.monotonic(), time.time()
            await asyncio.gather(*(create(name) for name in names))
            await timing.wait(rollout_timeout(n))
            await asyncio.sleep(SETTLE_S)
            wall1 = time.time()
            cpu1, rss1 = ctrl.stats()
            load1 = os.getloadavg()[0]
            await asyncio.sleep(IDLE_S)
            users = [user] if provider is None else [user, PROVIDER_USER]
            providers = None if provider is None else [PROVIDER_USER]
            rollout = tally(self.audit.between(users, wall0, wall1), providers)
            idle = tally(self.audit.between([user], wall1, wall1 + IDLE_S))
            result = timing.result(who, n, t0)
            result["stages"] = stages.summary(timing.started)
            result["stages"]["Succeeded"] = [
                ws_report.percentile(result["latencies"], 50) if result["latencies"] else 0.0,
                ws_report.percentile(result["latencies"], 99) if result["latencies"] else 0.0,
            ]
            await cache.stop()
            delete_wall = time.time()
            delete_s = await self._delete_workspaces(ns, names, ctrl, rollout_timeout(n))
            deleted = tally(self.audit.between([user], delete_wall, time.time()))
            result |= {
                "load": [load0, load1],
                "own_requests": rollout.own,
                "provider_requests": rollout.provider,
                "conflicts": rollout.conflicts,
                "not_found": rollout.not_found,
                "other_errors": rollout.other_errors,
                "gets": rollout.gets,
                "requests_by_kind": rollout.top(12),
                "idle_requests": idle.own + idle.provider,
                "cpu_s": cpu1 - cpu0,
                "rss_start": rss0,
                "rss_end": rss1,
                "rss_peak": ctrl.peak_rss(),
                "delete_s": delete_s,
                "delete_failed_requests": deleted.failed,
                "delete_failures_by_kind": ", ".join(
                    k for k, _ in deleted.by_kind.most_common() if k.split()[-1].isdigit()
                ),
                "delete_reconcile_errors": _delta(errors0, ctrl.reconcile_errors()),
            }
        finally:
            for proc in (ctrl, provider):
                if proc is not None:
                    proc.stop()
        await self.cleanup(ns)
        return result

    async def _delete_workspaces(
        self, ns: str, names: list[str], ctrl: Controller, limit_s: float
    ) -> float | None:
        """Delete the Workspaces; seconds until they, their NodeClaims and Nodes are gone."""
        selector = f"{WS_NS_LABEL}={ns}"
        informers = [
            self.cache.informer(WORKSPACE, namespace=ns),
            self.cache.informer(NODECLAIM, label_selector=selector),
            self.cache.informer(NODE, label_selector=selector),
        ]
        for inf in informers:
            await inf.wait_for_sync()
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def delete(name: str) -> None:
            async with gate:
                with contextlib.suppress(NotFound):
                    await self.client.delete(WORKSPACE, ns, name)

        t0 = time.monotonic()
        await asyncio.gather(*(delete(name) for name in names))
        while any(inf.indexer.keys() for inf in informers):
            if time.monotonic() - t0 > limit_s or not ctrl.alive():
                return None
            await asyncio.sleep(0.05)
        return time.monotonic() - t0

    async def cleanup(self, ns: str, limit_s: float = 600.0) -> None:
        """Delete the namespace and the phase's nodes; wait until both are gone."""
        with contextlib.suppress(NotFound):
            await self.client.delete(NAMESPACE, None, ns)
        await self.client.request(
            "DELETE", "/api/v1/nodes", query={"labelSelector": f"{WS_NS_LABEL}={ns}"}
        )
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            nodes, _ = await self.client.list_raw(NODE, None, label_selector=f"{WS_NS_LABEL}={ns}")
            try:
                await self.client.get(NAMESPACE, None, ns)
            except NotFound:
                if not nodes:
                    return
            await asyncio.sleep(1.0)
        print(f"warning: namespace {ns} or its nodes still there after {limit_s:.0f}s")


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


class _Timing:
    """Start and Ready moments per object; wakes the waiter when all N are Ready."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.started: dict[str, float] = {}
        self.readied: dict[str, float] = {}
        self.done = asyncio.Event()

    def start(self, name: str) -> None:
        self.started.setdefault(name, time.monotonic())

    def ready(self, name: str) -> None:
        if name in self.started and name not in self.readied:
            self.readied[name] = time.monotonic()
            if len(self.readied) == self.n:
                self.done.set()

    async def wait(self, limit_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), limit_s)

    def result(self, who: str, n: int, t0: float) -> dict[str, Any]:
        latencies = sorted(self.readied[k] - self.started[k] for k in self.readied)
        return {
            "who": who,
            "n": n,
            "ready": len(latencies),
            "latencies": latencies,
            "wall": (max(self.readied.values()) - t0) if self.readied else None,
        }


async def run(args: argparse.Namespace, hc: Any, tmp: Path) -> list[dict[str, Any]]:
    users = [*USERS.values(), PROVIDER_USER]
    if args.audit_cluster:  # also the cluster's own components (all the admin user)
        users.append("kaito-admin")
    policy_file, log_file = tmp / "audit-policy.yaml", tmp / "audit.log"
    policy_file.write_text(policy(users))
    # the audit log here is the benchmark's own (its users only); hack/cluster's would add a
    # second --audit-log-path and the API server would keep only one of them
    os.environ.pop("KAITO_CLUSTER_AUDIT", None)
    state = hc.up(
        tmp / "cluster",
        quiet=True,
        profile=args.profile,
        extra_args={"kube-apiserver": apiserver_args(policy_file, log_file)},
    )
    bench = Bench(hc, state, tmp, AuditLog(log_file), args.operator_src.resolve())
    bench.operator_args = list(args.operator_arg)
    ours_crds = args.operator_src.resolve().parent / "manifests" / "crd"
    upstream_bin = os.environ.get("KAITO_UPSTREAM_BIN") or None
    upstream_crds = Path(upstream_bin).parent / "crds" if upstream_bin else None
    if upstream_crds is not None and not upstream_crds.is_dir():
        raise SystemExit(f"{upstream_crds} missing: build with hack/build-upstream.sh")
    results: list[dict[str, Any]] = []
    await bench.open()
    try:
        bench.apply_crds(ours_crds)
        await bench.capture_templates()
        for round_ in range(args.runs):
            for n in args.sizes:
                tag = f"{n}-{round_}-{int(time.time())}"
                phases: list[dict[str, Any]] = []
                print(f"N={n}: floor …", file=sys.stderr, flush=True)
                phases.append(await bench.floor(n, f"floor-{tag}"))
                print(f"N={n}: kaito-py …", file=sys.stderr, flush=True)
                bench.apply_crds(ours_crds)
                phases.append(
                    await bench.workspaces("kaito-py", n, f"ours-{tag}", bench.ours(), None)
                )
                if upstream_bin and upstream_crds:
                    print(f"N={n}: upstream …", file=sys.stderr, flush=True)
                    bench.apply_crds(upstream_crds)
                    phases.append(
                        await bench.workspaces(
                            "upstream", n, f"up-{tag}", bench.upstream(upstream_bin),
                            bench.provider(),
                        )
                    )  # fmt: skip
                for p in phases:
                    p["round"] = round_
                results += phases
                print(ws_report.text_table(phases), flush=True)
    finally:
        await bench.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1, 100])
    parser.add_argument("--profile", choices=("stock", "tuned"), default="stock")
    parser.add_argument("--runs", type=int, default=1, help="repeat every N this many times")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--readme", type=Path, nargs="+", metavar="JSON",
        help="rewrite README.md's Workspaces table from these results files and exit",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the logs directory")
    parser.add_argument(
        "--audit-cluster", action="store_true",
        help="audit the controller-manager's, scheduler's and KWOK's requests too (diagnosis)",
    )  # fmt: skip
    parser.add_argument(
        "--operator-arg", action="append", default=[], metavar="ARG",
        help="an extra command-line argument for our operator (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--operator-src", type=Path, default=REPO / "src",
        help="the src/ of the kaito-py tree to measure (default: this checkout's)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.readme:
        ws_report.update_readme(REPO / "README.md", args.readme)
        return
    hc = load_hack()
    started = dt.datetime.now(dt.UTC)
    tmp = Path(tempfile.mkdtemp(prefix="kaito-bench-ws-"))
    try:
        results = asyncio.run(run(args, hc, tmp))
    finally:
        hc.down(tmp / "cluster", quiet=True, keep_logs=args.keep)
        if not args.keep:
            import shutil  # noqa: PLC0415

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}", file=sys.stderr)
    doc = {
        "profile": args.profile,
        "started": started.isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "upstream": os.environ.get("KAITO_UPSTREAM_BIN") is not None,
        "operator_args": list(args.operator_arg),
        "results": results,
    }
    print()
    print(ws_report.text_table(results))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
