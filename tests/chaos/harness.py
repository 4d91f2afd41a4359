"""What every chaos trial needs: a cluster, operators to kill, and the invariants to check.

Used by the bounded suite (tests/chaos) and by the full run (bench/chaos); each trial is a
plain function of a :class:`Trial` (its seed, its random generator, its log), so a failing
trial is rerun from the seed it printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.e2e.conftest import REPO, Cluster
from tests.e2e.controllers.conftest import Operator
from tests.e2e.tcp_proxy import TcpProxy

T = TypeVar("T")
Obj = dict[str, Any]

PROGRESS = frozenset(
    {
        "workspacePending",
        "WorkspaceInferenceStatusPending",
        "NodeClaimNotReady",
        "NodeNotReady",
        "WorkspaceTuningJobStatusPending",
        "Launching",
        "AwaitingLaunch",
        "AwaitingNode",
        "AwaitingRegistration",
        "Creating",
        "Recreating",
        "Throttled",
        "OperationInProgress",
        "AzureServerError",
        "AzureUnreachable",
    }
)
TRACEBACK = re.compile(r"^Traceback \(most recent call last\)", re.MULTILINE)


@dataclass
class Trial:
    """One reproducible trial: ``seed`` drives every random choice; ``say`` records the plot."""

    name: str
    seed: int
    rng: random.Random = field(init=False)
    story: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.say(f"seed {self.seed}")

    def say(self, what: str) -> None:
        line = f"[{self.name} +{time.monotonic() - self.started:6.1f}s] {what}"
        self.story.append(line)
        print(line, flush=True)


# ---------------------------------------------------------------------------- objects


def seed_workspace(name: str, example: str = "workspace-phi-3-mini.yaml") -> Obj:
    doc: Obj = yaml.safe_load((REPO / "examples" / example).read_text())
    doc["metadata"] = {"name": name}
    return doc


def get_list(cluster: Cluster, kind: str, *args: str) -> list[Obj]:
    proc = cluster.kubectl("get", kind, *args, "-o", "json", timeout=120)
    items: list[Obj] = json.loads(proc.stdout)["items"]
    return items


def condition(obj: Obj, type_: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def final_state(ws: Obj) -> str | None:
    """ "Succeeded", "Failed: <reason>", or None while the Workspace is on its way."""
    succeeded = condition(ws, "WorkspaceSucceeded")
    if succeeded is not None and succeeded.get("status") == "True":
        return "Succeeded"
    started = condition(ws, "JobStarted")  # a tuning Job on KWOK runs for ever
    if started is not None and started.get("status") == "True":
        return "Succeeded"
    for cond in (ws.get("status") or {}).get("conditions") or ():
        if cond.get("status") == "False" and cond.get("reason") not in PROGRESS:
            return f"Failed: {cond.get('reason')}"
    return None


def wait_final(
    cluster: Cluster, namespace: str, names: Iterable[str], timeout: float, trial: Trial
) -> dict[str, str]:
    """Wait until every named Workspace is final; fails naming the ones that are not."""
    wanted = set(names)
    deadline = time.monotonic() + timeout
    states: dict[str, str | None] = {}
    while True:
        items = {w["metadata"]["name"]: w for w in get_list(cluster, "workspaces", "-n", namespace)}
        states = {n: (final_state(items[n]) if n in items else "missing") for n in wanted}
        if all(states.values()):
            trial.say(f"all {len(wanted)} Workspaces final: {summary(states)}")
            return {k: str(v) for k, v in states.items()}
        if time.monotonic() > deadline:
            stuck = {n: brief(items.get(n)) for n, s in states.items() if not s}
            raise AssertionError(f"{trial.name} (seed {trial.seed}): not final: {stuck}")
        time.sleep(1.0)


def brief(ws: Obj | None) -> list[str]:
    if ws is None:
        return ["missing"]
    return [
        f"{c.get('type')}={c.get('status')}/{c.get('reason')}"
        for c in (ws.get("status") or {}).get("conditions") or ()
    ]


def summary(states: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for state in states.values():
        counts[str(state)] = counts.get(str(state), 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def wait_gone(cluster: Cluster, namespace: str, timeout: float, trial: Trial) -> None:
    deadline = time.monotonic() + timeout
    while get_list(cluster, "workspaces", "-n", namespace):
        if time.monotonic() > deadline:
            left = [w["metadata"]["name"] for w in get_list(cluster, "workspaces", "-n", namespace)]
            raise AssertionError(f"{trial.name} (seed {trial.seed}): not deleted: {left}")
        time.sleep(1.0)
    trial.say("every Workspace is gone")


def claims_of(cluster: Cluster, namespace: str) -> list[Obj]:
    return get_list(cluster, "nodeclaims", "-l", f"kaito.sh/workspacenamespace={namespace}")


def kaito_nodes(cluster: Cluster, namespace: str) -> list[Obj]:
    return get_list(cluster, "nodes", "-l", f"kaito.sh/workspacenamespace={namespace}")


def check_claims_and_nodes(cluster: Cluster, namespace: str, trial: Trial) -> tuple[int, int]:
    """One claim per wanted node of each Workspace and one node per claim: no duplicate,
    no orphan. Returns (duplicates, leaks) for the figures; asserts both are 0."""
    workspaces = {
        w["metadata"]["name"]: w for w in get_list(cluster, "workspaces", "-n", namespace)
    }
    claims = claims_of(cluster, namespace)
    nodes = kaito_nodes(cluster, namespace)
    per_ws: dict[str, int] = {}
    for claim in claims:
        owner = claim["metadata"]["labels"].get("kaito.sh/workspace", "")
        per_ws[owner] = per_ws.get(owner, 0) + 1
    duplicates = sum(
        max(0, n - int((workspaces[w].get("status") or {}).get("targetNodeCount") or 1))
        for w, n in per_ws.items()
        if w in workspaces
    )
    orphan_claims = [
        c["metadata"]["name"]
        for c in claims
        if c["metadata"]["labels"].get("kaito.sh/workspace") not in workspaces
        and not c["metadata"].get("deletionTimestamp")
    ]
    claim_names = {c["metadata"]["name"] for c in claims}
    orphan_nodes = [
        n["metadata"]["name"]
        for n in nodes
        if n["metadata"]["labels"].get("kaito.sh/nodeclaim", n["metadata"]["name"])
        not in claim_names
    ]
    trial.say(
        f"{len(claims)} claims, {len(nodes)} nodes for {len(workspaces)} Workspaces: "
        f"{duplicates} duplicate(s), {len(orphan_claims)} orphan claim(s), "
        f"{len(orphan_nodes)} orphan node(s)"
    )
    assert duplicates == 0, f"{trial.name} (seed {trial.seed}): duplicate claims {per_ws}"
    assert not orphan_claims and not orphan_nodes, (
        f"{trial.name} (seed {trial.seed}): leaked claims {orphan_claims}, nodes {orphan_nodes}"
    )
    return duplicates, len(orphan_claims) + len(orphan_nodes)


def wait_no_leaks(cluster: Cluster, namespace: str, timeout: float, trial: Trial) -> int:
    """After a mass delete: every claim and node of the namespace's Workspaces goes."""
    deadline = time.monotonic() + timeout
    while True:
        claims, nodes = claims_of(cluster, namespace), kaito_nodes(cluster, namespace)
        if not claims and not nodes:
            trial.say("0 claims and 0 nodes left")
            return 0
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{trial.name} (seed {trial.seed}): leaked "
                f"{[c['metadata']['name'] for c in claims]} / "
                f"{[n['metadata']['name'] for n in nodes]}"
            )
        time.sleep(1.0)


def tracebacks(*operators: Operator) -> list[str]:
    """Tracebacks in the operators' logs (each one a bug: errors are logged in one line)."""
    found = []
    for op in operators:
        text = op.log_text()
        for match in TRACEBACK.finditer(text):
            found.append(text[max(0, match.start() - 300) : match.start() + 1500])
    return found


def apply_all(cluster: Cluster, namespace: str, docs: list[Obj]) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", stdin=json.dumps({"kind": "List", "apiVersion": "v1",
                                                               "items": docs}),
    )  # fmt: skip


# ---------------------------------------------------------------------------- background loop


class LoopThread:
    """An asyncio loop in a thread, for the async helpers (TCP proxy, fake ARM admin)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@contextlib.contextmanager
def proxied_kubeconfig(
    cluster: Cluster, directory: Path
) -> Iterator[tuple[Path, TcpProxy, LoopThread]]:
    """A kubeconfig whose server is a TCP proxy in front of the apiserver (to cut watches)."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    port = int(server.rsplit(":", 1)[1])
    loop = LoopThread()
    proxy = TcpProxy(port)
    loop.run(proxy.__aenter__())
    config["clusters"][0]["cluster"]["server"] = proxy.url
    path = directory / "kubeconfig-proxied"
    path.write_text(yaml.safe_dump(config))
    try:
        yield path, proxy, loop
    finally:
        loop.run(proxy.__aexit__())
        loop.close()


def in_thread(loop: LoopThread, fn: Callable[[], None]) -> None:
    async def call() -> None:
        fn()

    loop.run(call())


# ---------------------------------------------------------------------------- audit log


def audit_events(path: Path) -> list[Obj]:
    events = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return events


def audit_time(event: Obj) -> dt.datetime:
    return dt.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))


@contextlib.contextmanager
def webhook(cluster: Cluster, namespace: str, cert_dir: Path) -> Iterator[int]:
    """The admission webhook as a process, registered for ``namespace`` only."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "kaito.webhook", "serve", "--port", "0",
            "--cert-dir", str(cert_dir), "--kubeconfig", str(cluster.kubeconfig),
            "--register", "--namespace", namespace,
        ],
        stdout=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the webhook exited before it was ready"
        probe = seed_workspace("probe")
        probe["resource"]["instanceType"] = "Standard_Probe"
        deadline = time.monotonic() + 30
        while True:
            out = cluster.kubectl(
                "create", "-n", namespace, "--dry-run=server", "-f", "-",
                stdin=json.dumps(probe), check=False,
            )  # fmt: skip
            if "unknown instance type" in out.stderr:
                break
            assert time.monotonic() < deadline, "the apiserver never called the webhook"
            time.sleep(0.3)
        yield int(json.loads(line)["port"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            cluster.kubectl(
                "delete", kind, "-l", "app.kubernetes.io/part-of=kaito-py", "--ignore-not-found",
                check=False,
            )  # fmt: skip
