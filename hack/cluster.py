"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and KWOK, all on 127.0.0.1, started as plain processes.

Used by ``hack/cluster`` (the command), by the e2e fixtures and by the benchmarks.
Standard library only, so it runs before the project's virtual environment exists.
Every process we start is recorded in ``state.json`` in the cluster directory and
only those PIDs are ever signalled.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, stdlib only
import images
import realnode
from pki import PKIError, make_cluster_pki, write_kubeconfig
from procs import (
    Component,
    log_tail,
    pid_alive,
    rss_mib,
    spawn,
    stop_component,
)

REPO = Path(__file__).resolve().parent.parent
K8S_VERSION = os.environ.get("K8S_VERSION", "1.36.4")
ETCD_VERSION = os.environ.get("ETCD_VERSION", "3.6.14")
KWOK_VERSION = os.environ.get("KWOK_VERSION", "0.8.0")
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
KWOK_NODE_LABEL = ("type", "kwok")  # kaito.provisioner.kwok_node.KWOK_MANAGED_LABEL
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.96.0.0/16"
# `tuned` (the default, the test cluster): the API server without in-flight limits or
# priority and fairness, controller-manager and scheduler clients at 500 qps, so tests are
# bounded by the operator rather than by the cluster's rate limits.  `stock`: the API
# server's, controller-manager's and scheduler's own defaults, what a user's cluster runs
# (400/200 in-flight requests, priority and fairness on, controller-manager clients at
# 20 qps, scheduler at 50); benchmarks quote it.
PROFILES = ("tuned", "stock")


class ClusterError(RuntimeError):
    """A failure the user can act on; printed without a traceback."""


def default_dir() -> Path:
    return Path(os.environ.get("KAITO_CLUSTER_DIR", REPO / ".cluster" / "default"))


def cache_root() -> Path:
    base = os.environ.get("KAITO_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "kaito-py"


def bin_dir() -> Path:
    key = f"k8s{K8S_VERSION}-etcd{ETCD_VERSION}-kwok{KWOK_VERSION}"
    return cache_root() / key / "bin"


def ensure_binaries() -> Path:
    """Build (first time) or reuse the cached binaries; returns their directory."""
    binaries = bin_dir()
    needed = [*COMPONENTS, "kubectl"]
    if all((binaries / b).is_file() for b in needed):
        return binaries
    env = dict(os.environ, K8S_VERSION=K8S_VERSION, ETCD_VERSION=ETCD_VERSION)
    env["KWOK_VERSION"] = KWOK_VERSION
    proc = subprocess.run(
        [str(REPO / "hack" / "build-binaries.sh")], env=env, stdout=subprocess.PIPE, check=False
    )
    if proc.returncode != 0:
        raise ClusterError("building the control-plane binaries failed (see the output above)")
    return Path(proc.stdout.decode().strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------------- state


@dataclass
class ClusterState:
    directory: str
    ports: dict[str, int] = field(default_factory=dict)
    components: dict[str, Component] = field(default_factory=dict)
    profile: str = "tuned"
    # extra command-line arguments per component, kept so a restart starts it the same way
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    audit: bool = False  # the apiserver writes an audit log of every write (logs/audit.log)

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def kubeconfig(self) -> Path:
        return self.path / "kubeconfig"

    def save(self) -> None:
        data = asdict(self)
        tmp = self.path / "state.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path / "state.json")

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        try:
            data = json.loads((directory / "state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        comps = {k: Component(**v) for k, v in data.get("components", {}).items()}
        return cls(
            directory=data["directory"],
            ports=data.get("ports", {}),
            components=comps,
            profile=data.get("profile", "tuned"),
            extra_args=data.get("extra_args", {}),
            audit=bool(data.get("audit")),
        )

    @property
    def audit_log(self) -> Path:
        return self.path / "logs" / "audit.log"


def _ssl_context(state: ClusterState, client_cert: bool) -> ssl.SSLContext:
    pki = state.path / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if client_cert:
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def probe(state: ClusterState, url: str) -> bool:
    if url.startswith("https://127.0.0.1:" + str(state.ports.get("kube-apiserver", -1))):
        ctx: ssl.SSLContext | None = _ssl_context(state, client_cert=True)
    elif url.startswith("https"):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # KCM/scheduler serve self-signed certs on loopback
    else:
        ctx = None
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def wait_healthy(state: ClusterState, comp: Component, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(comp):
            raise ClusterError(
                f"{comp.name} exited during start-up; "
                f"last lines of {comp.log}:\n{log_tail(comp.log)}"
            )
        if probe(state, comp.health_url):
            return
        time.sleep(0.1)
    raise ClusterError(
        f"{comp.name} not healthy at {comp.health_url} after {timeout:.0f}s; "
        f"last lines of {comp.log}:\n{log_tail(comp.log)}"
    )


# ---------------------------------------------------------------------- commands


def kwok_config(path: Path) -> None:
    """KWOK needs its stages; take them from the kwok module in the Go module cache.

    Defaults of a KwokConfiguration read from a file are not applied, so the options
    that matter (parallelism, the fake pod CIDR) are spelled out.
    """
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@v{KWOK_VERSION}"],
        capture_output=True,
        check=False,
        env=dict(os.environ, GOFLAGS="-mod=mod"),
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        raise ClusterError(f"cannot locate kwok stages: {proc.stderr.decode().strip()}")
    src = Path(json.loads(proc.stdout)["Dir"]) / "kustomize" / "stage"
    docs = [
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\n"
        "options:\n  nodeLeaseDurationSeconds: 40\n  nodeLeaseParallelism: 4\n"
        "  podPlayStageParallelism: 4\n  nodePlayStageParallelism: 4\n"
        "  podsOnNodeSyncParallelism: 1\n  cidr: 10.244.0.0/16\n"
        "  nodeStatusUpdateFrequencyMilliseconds: 10000\n  heartbeatFactor: 5\n"
        "  enablePodsOnNodeSyncListPager: true\n"
    ]
    docs += [(src / stage).read_text() for stage in KWOK_STAGES]
    path.write_text("\n---\n".join(docs))


def component_argv(name: str, state: ClusterState, binaries: Path) -> tuple[list[str], str]:
    """The command line and health URL of one component."""
    d, p = state.path, state.ports
    pki, kubeconfig = d / "pki", str(state.kubeconfig)
    loop = "127.0.0.1"
    extra = os.environ.get(f"KAITO_{name.upper().replace('-', '_')}_EXTRA_ARGS", "").split()
    extra = [*state.extra_args.get(name, ()), *extra]
    tuned = state.profile == "tuned"
    if name == "etcd":
        argv = [
            str(binaries / "etcd"), "--name=kaito", f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls=http://{loop}:{p['etcd']}",
            f"--advertise-client-urls=http://{loop}:{p['etcd']}",
            f"--listen-peer-urls=http://{loop}:{p['etcd-peer']}",
            f"--initial-advertise-peer-urls=http://{loop}:{p['etcd-peer']}",
            f"--initial-cluster=kaito=http://{loop}:{p['etcd-peer']}",
            "--unsafe-no-fsync", "--quota-backend-bytes=8589934592", "--logger=zap",
            "--log-level=warn",
        ]  # fmt: skip
        health = f"http://{loop}:{p['etcd']}/health"
    elif name == "kube-apiserver":
        argv = [
            str(binaries / "kube-apiserver"), f"--etcd-servers=http://{loop}:{p['etcd']}",
            f"--bind-address={loop}", f"--advertise-address={loop}",
            f"--secure-port={p['kube-apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            # logs, exec and port-forward on a real node (the kubelet checks this client cert)
            f"--kubelet-client-certificate={pki / 'admin.crt'}",
            f"--kubelet-client-key={pki / 'admin.key'}",
            "--kubelet-preferred-address-types=InternalIP",  # never resolve node names
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
        ]  # fmt: skip
        if tuned:
            argv += [
                "--max-requests-inflight=0", "--max-mutating-requests-inflight=0",
                "--enable-priority-and-fairness=false",
            ]  # fmt: skip
        if state.audit:
            argv += audit_args(state)
        health = f"https://{loop}:{p['kube-apiserver']}/readyz"
    elif name == "kube-controller-manager":
        argv = [
            str(binaries / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
            "--leader-elect=false", f"--bind-address={loop}",
            f"--secure-port={p['kube-controller-manager']}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            "--use-service-account-credentials=false",
            "--node-monitor-period=5s", "--node-monitor-grace-period=40s",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ]  # fmt: skip
        if tuned:
            argv += ["--kube-api-qps=500", "--kube-api-burst=1000"]
        health = f"https://{loop}:{p['kube-controller-manager']}/healthz"
    elif name == "kube-scheduler":
        sched_cfg = d / "scheduler.yaml"
        rate = "  qps: 500\n  burst: 1000\n" if tuned else ""
        sched_cfg.write_text(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
            f"clientConnection:\n  kubeconfig: {kubeconfig}\n{rate}"
            "leaderElection:\n  leaderElect: false\n"
        )
        argv = [
            str(binaries / "kube-scheduler"), f"--config={sched_cfg}",
            f"--bind-address={loop}", f"--secure-port={p['kube-scheduler']}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
        ]  # fmt: skip
        health = f"https://{loop}:{p['kube-scheduler']}/healthz"
    elif name == "kwok":
        argv = [
            str(binaries / "kwok"), f"--kubeconfig={kubeconfig}", f"--config={d / 'kwok.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL[0]}={KWOK_NODE_LABEL[1]}",
            f"--node-ip={loop}", "--node-lease-duration-seconds=40",
            f"--server-address={loop}:{p['kwok']}",
        ]  # fmt: skip
        health = f"http://{loop}:{p['kwok']}/healthz"
    else:
        raise ClusterError(f"unknown component {name!r}; one of {', '.join(COMPONENTS)}")
    return argv + extra, health


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # who wrote what, when: every write, at Metadata level (no bodies); reads are not logged
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
"""


def audit_args(state: ClusterState) -> list[str]:
    """apiserver flags for a JSON-lines audit log of every write (tests read it)."""
    policy = state.path / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={state.audit_log}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",  # an event is on disk before the response is sent
        "--audit-log-maxsize=0",
    ]


def start_component(state: ClusterState, name: str, binaries: Path) -> Component:
    argv, health = component_argv(name, state, binaries)
    log = state.path / "logs" / f"{name}.log"
    comp = spawn(name, argv, log, health, cwd=state.path)
    state.components[name] = comp
    state.save()
    return comp


def healthy(state: ClusterState) -> list[str]:
    """Names of components that are dead or failing their health check."""
    bad = []
    for name in COMPONENTS:
        comp = state.components.get(name)
        if comp is None or not pid_alive(comp) or not probe(state, comp.health_url):
            bad.append(name)
    return bad


def kubectl(state: ClusterState, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [str(bin_dir() / "kubectl"), f"--kubeconfig={state.kubeconfig}", *args],
        input=stdin.encode() if stdin is not None else None,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.decode().strip()}")
    return proc.stdout.decode()


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")


def up(
    directory: Path,
    quiet: bool = False,
    *,
    profile: str = "tuned",
    audit: bool = False,
    extra_args: Mapping[str, Sequence[str]] | None = None,
) -> ClusterState:
    """Start the cluster, or return the running one (idempotent).

    `profile` is one of PROFILES; `extra_args` adds command-line arguments per component
    (e.g. an audit log of its own for the API server).  ``audit`` (or
    ``KAITO_CLUSTER_AUDIT=1``) makes the apiserver log every write to ``logs/audit.log`` as
    JSON lines: user, user agent, verb, object and time.
    """
    if profile not in PROFILES:
        raise ClusterError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
    audit = audit or os.environ.get("KAITO_CLUSTER_AUDIT") == "1"
    directory = directory.resolve()
    existing = ClusterState.load(directory)
    if existing is not None and existing.profile != profile:
        raise ClusterError(
            f"the cluster in {directory} runs the {existing.profile!r} profile; "
            f"`hack/cluster down` it first to start it as {profile!r}"
        )
    if existing is not None:
        bad = healthy(existing)
        if not bad:
            if not quiet:
                print(f"cluster already up in {directory}")
            return existing
        if not quiet:
            print(f"cluster in {directory} is broken ({', '.join(bad)}); restarting it")
        down(directory, quiet=True)

    binaries = ensure_binaries()
    t0 = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "logs").mkdir(exist_ok=True)
    try:
        make_cluster_pki(directory / "pki")
    except PKIError as exc:
        raise ClusterError(str(exc)) from None
    ports = {name: free_port() for name in (*COMPONENTS, "etcd-peer")}
    state = ClusterState(
        directory=str(directory),
        ports=ports,
        profile=profile,
        audit=audit,
        extra_args={k: list(v) for k, v in (extra_args or {}).items()},
    )
    write_kubeconfig(state.kubeconfig, directory / "pki", ports["kube-apiserver"])
    kwok_config(directory / "kwok.yaml")
    state.save()
    try:
        for group, timeout in (
            (("etcd",), 30.0),
            (("kube-apiserver",), 90.0),
            (("kube-controller-manager", "kube-scheduler"), 60.0),
            (("kwok",), 30.0),
        ):
            started = [start_component(state, name, binaries) for name in group]
            for comp in started:
                wait_healthy(state, comp, timeout)
        wait_for(
            "the default ServiceAccount",
            lambda: _quiet_ok(lambda: kubectl(state, "-n", "default", "get", "sa", "default")),
            60,
        )
    except ClusterError:
        down(directory, quiet=True, keep_logs=True)
        raise
    if not quiet:
        print(f"cluster up in {time.monotonic() - t0:.1f}s ({directory}, profile {profile})")
        print(env_text(state))
    return state


def _quiet_ok(fn: Callable[[], object]) -> bool:
    try:
        fn()
    except ClusterError:
        return False
    return True


def down(directory: Path, quiet: bool = False, keep_logs: bool = False) -> None:
    directory = directory.resolve()
    state = ClusterState.load(directory)
    if state is None:
        if not quiet:
            print(f"no cluster in {directory}")
        return
    for node in reversed(realnode.nodes_of(directory)):  # the owner of the machine last
        cleaned = realnode.teardown(node)
        if not quiet:
            print(f"real node {node.name} stopped" + (f": {'; '.join(cleaned)}" if cleaned else ""))
    for name in reversed(COMPONENTS):
        comp = state.components.get(name)
        if comp is not None:
            stop_component(comp)
    if keep_logs:
        (directory / "state.json").unlink(missing_ok=True)
        shutil.rmtree(directory / "etcd", ignore_errors=True)
    else:
        shutil.rmtree(directory, ignore_errors=True)
    if not quiet:
        print(f"cluster in {directory} stopped and removed")


def restart(directory: Path, name: str) -> None:
    """Stop and start one component on the same port (tests use it to cut watches)."""
    state = _require(directory)
    comp = state.components.get(name)
    if comp is None:
        raise ClusterError(f"unknown component {name!r}; one of {', '.join(COMPONENTS)}")
    stop_component(comp)
    new = start_component(state, name, bin_dir())
    wait_healthy(state, new, 90)


def remove_node(directory: Path, node_name: str) -> None:
    """Stop one real node, clean what is its own and delete its Node object.

    The machine's first real node (the owner of the bridge, registry, DNS and kube-proxy)
    goes only after the others; `down` removes them all.
    """
    state = _require(directory)
    node = next((n for n in realnode.nodes_of(state.path) if n.name == node_name), None)
    if node is None:
        raise ClusterError(f"no real node {node_name!r} in {directory}")
    others = realnode.others_running(node) if node.owner else []
    if others:
        raise ClusterError(
            f"{node_name} runs the machine-wide pieces the other real nodes use "
            f"({', '.join(others)}); remove them first, or `hack/cluster down` everything"
        )
    cleaned = realnode.teardown(node)
    shutil.rmtree(node.path, ignore_errors=True)
    kubectl(state, "delete", "node", node_name, "--ignore-not-found", "--wait=false")
    print(f"real node {node_name} stopped" + (f": {'; '.join(cleaned)}" if cleaned else ""))


def restart_node(directory: Path, node_name: str, component: str) -> None:
    state = _require(directory)
    node = next((n for n in realnode.nodes_of(state.path) if n.name == node_name), None)
    if node is None:
        raise ClusterError(f"no real node {node_name!r} in {directory}")
    try:
        realnode.restart_component(
            node, component, lambda *a, stdin=None: kubectl(state, *a, stdin=stdin)
        )
    except realnode.NodeError as exc:
        raise ClusterError(str(exc)) from None


def stop(directory: Path, name: str) -> None:
    state = _require(directory)
    comp = state.components.get(name)
    if comp is None:
        raise ClusterError(f"unknown component {name!r}; one of {', '.join(COMPONENTS)}")
    stop_component(comp)


def _require(directory: Path) -> ClusterState:
    state = ClusterState.load(directory.resolve())
    if state is None:
        raise ClusterError(f"no cluster in {directory}; run `hack/cluster up` first")
    return state


def status(directory: Path) -> int:
    state = ClusterState.load(directory.resolve())
    if state is None:
        print(f"no cluster in {directory}")
        return 1
    print(f"{'profile':<24} {state.profile}")
    rc = 0
    for name in COMPONENTS:
        comp = state.components.get(name)
        if comp is None:
            print(f"{name:<24} not started")
            rc = 1
            continue
        alive = pid_alive(comp)
        ok = alive and probe(state, comp.health_url)
        rss = rss_mib(comp.pid) if alive else 0.0
        word = "healthy" if ok else ("unhealthy" if alive else "DEAD")
        print(f"{name:<24} pid {comp.pid:<8} {word:<10} rss {rss:7.1f} MiB  {comp.health_url}")
        if not ok:
            rc = 1
            print("    last lines of " + comp.log + ":")
            print("    " + log_tail(comp.log, 10).replace("\n", "\n    "))
    for node in realnode.nodes_of(state.path):
        lines, node_ok = realnode.status_lines(node)
        print("\n".join(lines))
        rc = rc if node_ok else 1
    return rc


def env_text(state: ClusterState) -> str:
    return (
        f"export KUBECONFIG={state.kubeconfig}\n"
        f"export PATH={bin_dir()}:$PATH\n"
        f"# etcd: http://127.0.0.1:{state.ports['etcd']}"
    )


# ----------------------------------------------------------------------- nodes

# Used only when kaito.presets is not importable (e.g. before `pip install -e .`).
_FALLBACK_SKUS: dict[str, tuple[int, int, int]] = {
    # name: (GPUs, vCPU, memory GiB)
    "Standard_NC6s_v3": (1, 6, 112),
    "Standard_NC12s_v3": (2, 12, 224),
    "Standard_NC24s_v3": (4, 24, 448),
    "Standard_NC24ads_A100_v4": (1, 24, 220),
}


def sku_shape(instance_type: str) -> tuple[int, int, int]:
    """(gpus, vcpu, memory GiB) of an instance type, from the presets SKU table."""
    sys.path.insert(0, str(REPO / "src"))
    try:
        from kaito.presets.skus import (  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
            get_sku,
        )
    except ImportError:
        if instance_type in _FALLBACK_SKUS:
            return _FALLBACK_SKUS[instance_type]
        raise ClusterError(
            f"unknown instance type {instance_type!r} and kaito.presets is not installed"
        ) from None
    sku = get_sku(instance_type)
    if sku is None:
        raise ClusterError(f"unknown instance type {instance_type!r}; see `kaito skus`")
    return int(sku.gpu_count), int(sku.vcpu), int(sku.memory_gib)


def fake_node(  # noqa: PLR0917
    name: str,
    instance_type: str,
    gpus: int,
    cpu: int,
    memory_gib: int,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A KWOK-managed Node shaped like an AKS GPU node (shared with the KWOK backend)."""
    sys.path.insert(0, str(REPO / "src"))
    from kaito.provisioner.kwok_node import fake_gpu_node  # noqa: PLC0415

    return fake_gpu_node(
        name, instance_type, gpus=gpus, cpu=cpu, memory_gib=memory_gib, labels=labels
    )


def add_node(  # noqa: PLR0917
    directory: Path,
    name: str,
    instance_type: str,
    labels: dict[str, str],
    gpus: int | None,
    wait: bool,
    real: bool = False,
) -> None:
    state = _require(directory)
    sku_gpus, cpu, mem = sku_shape(instance_type)
    if real:
        node_gpus = sku_gpus if gpus is None else gpus
        try:
            started = realnode.add(
                state, name, instance_type=instance_type, labels=labels, gpus=node_gpus,
                kubectl=lambda *a, stdin=None: kubectl(state, *a, stdin=stdin),
                kubectl_path=bin_dir() / "kubectl",
                pause_image=lambda registry: images.push("pause", registry),
            )  # fmt: skip
        except (realnode.NodeError, images.ImageError, PKIError) as exc:
            raise ClusterError(str(exc)) from None
        print(f"node/{name} (real: kubelet + containerd, {instance_type}, {node_gpus} GPU "
              f"advertised, pods {started.pod_cidr}, registry {realnode.REGISTRY})")  # fmt: skip
        return
    node = fake_node(name, instance_type, sku_gpus if gpus is None else gpus, cpu, mem, labels)
    kubectl(state, "create", "-f", "-", stdin=json.dumps(node))
    if wait:
        kubectl(state, "wait", "--for=condition=Ready", f"node/{name}", "--timeout=60s")
    gpu_count = node["status"]["capacity"].get("nvidia.com/gpu", 0)
    print(f"node/{name} ({instance_type}, {gpu_count} GPU)")


# ------------------------------------------------------------------------- main


def _labels(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise ClusterError(f"--label {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/cluster",
        description="Local Kubernetes control plane (etcd, apiserver, controller-manager, "
        "scheduler, KWOK) on 127.0.0.1, built from the Go module proxy and cached.",
    )
    parser.add_argument(
        "--dir", type=Path, default=default_dir(),
        help="cluster state directory (default: $KAITO_CLUSTER_DIR or .cluster/default)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build or reuse the cached binaries, print their directory")
    upp = sub.add_parser("up", help="start the cluster (idempotent)")
    upp.add_argument(
        "--profile", choices=PROFILES, default="tuned",
        help="tuned (default): no API server in-flight limits or priority and fairness, "
        "controller-manager and scheduler at 500 qps; stock: the components' own defaults, "
        "as in a user's cluster",
    )  # fmt: skip
    upp.add_argument(
        "--audit", action="store_true", help="log every write to logs/audit.log (JSON lines)"
    )
    sub.add_parser("down", help="stop our processes and remove the state")
    sub.add_parser("status", help="show each component; exit 1 if any is unhealthy")
    sub.add_parser("env", help="print shell exports for KUBECONFIG and PATH")
    rs = sub.add_parser("restart", help="restart one component on the same port")
    rs.add_argument("component", choices=COMPONENTS)
    rm = sub.add_parser("remove-node", help="stop one real node and delete its Node")
    rm.add_argument("node")
    rn = sub.add_parser("restart-node", help="restart one process of a real node")
    rn.add_argument("node")
    rn.add_argument("component", choices=realnode.COMPONENT_ORDER)
    st = sub.add_parser("stop", help="stop one component (testing failure handling)")
    st.add_argument("component", choices=COMPONENTS)
    an = sub.add_parser("add-node", help="create a fake GPU node managed by KWOK")
    an.add_argument("name")
    an.add_argument("--instance-type", default="Standard_NC6s_v3")
    an.add_argument("--label", action="append", default=[], help="extra KEY=VALUE label")
    an.add_argument("--gpus", type=int, default=None, help="override the SKU's GPU count")
    an.add_argument("--no-wait", action="store_true", help="do not wait for the node to be Ready")
    an.add_argument(
        "--real", action="store_true",
        help="a real node on this machine: kubelet and containerd run its pods (root; up to "
        f"{realnode.MAX_NODES} per machine, all of one cluster)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            print(ensure_binaries())
        elif args.cmd == "up":
            up(args.dir, profile=args.profile, audit=args.audit)
        elif args.cmd == "down":
            down(args.dir)
        elif args.cmd == "status":
            return status(args.dir)
        elif args.cmd == "env":
            print(env_text(_require(args.dir)))
        elif args.cmd == "restart":
            restart(args.dir, args.component)
        elif args.cmd == "remove-node":
            remove_node(args.dir, args.node)
        elif args.cmd == "restart-node":
            restart_node(args.dir, args.node, args.component)
        elif args.cmd == "stop":
            stop(args.dir, args.component)
        elif args.cmd == "add-node":
            add_node(
                args.dir, args.name, args.instance_type, _labels(args.label), args.gpus,
                not args.no_wait, real=args.real,
            )  # fmt: skip
    except ClusterError as exc:
        print(f"hack/cluster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
