"""Real nodes beside the KWOK nodes: containerd, runc, kubelet and kube-proxy run real pods.

``hack/cluster add-node NAME --real`` turns this machine into one more node of the local
cluster, and again for a second (up to ``MAX_NODES``): a Workspace that needs two GPU nodes
runs its two pods on two real nodes. Pods get a network namespace each on the bridge
``kaito0`` (CNI bridge plugin, host-local addresses from the node's own slice of
``NODE_CIDR``, which is also its ``spec.podCIDR``); every node's address is the bridge's
(``GATEWAY``), where the machine also serves the cluster's image registry, a forwarder to the
API server (the API server itself stays on 127.0.0.1) and the cluster DNS (CoreDNS reading
the API; each kubelet's ``clusterDNS``), so pods reach all three. kube-proxy programs the
Service addresses, so a ClusterIP answers from the host and from pods. Each node advertises
``nvidia.com/gpu`` through a status patch (the documented way to advertise an extended
resource without a device plugin), so the operator's GPU pods schedule there and run vLLM's
CPU build.

Invariants:
- The first real node (slot 0) owns everything machine-wide: the bridge, the registry, the
  API forwarder, CoreDNS and the one kube-proxy (it programs the host's iptables for every
  node). It is recorded in ``LOCK_DIR/owner`` (the name a single-node version used too, so
  either refuses the other); a real node of another cluster is refused, and the owner goes
  last (``down`` stops nodes from the highest slot down).
- Each node has its own containerd (root, state, socket: two kubelets on one containerd
  would remove each other's pods), its own kubelet (port ``KUBELET_PORT + slot``, root dir,
  pod logs, ``cgroupRoot`` ``/<CGROUP_PARENT>/<node>``) and its own address slice; slot
  ``n`` is recorded in ``LOCK_DIR/slot-<n>``. Stopping a node other than the owner touches
  nothing of the other nodes.
- Everything machine-wide is recorded before the owner starts anything (hack/hostguard.py)
  and put back when the owner stops; only the PIDs recorded here are signalled, and only the
  containers of our own containerds are stopped.
- Kubelet, containerd and CNI keep their files under the node's directory (image stores in
  the cache, one per slot); cgroups under ``/<CGROUP_PARENT>`` in each hierarchy.
- Nothing listens beyond 127.0.0.1 and ``GATEWAY``; CoreDNS answers only the cluster's
  zones (nothing is forwarded off the machine).

Standard library only, like hack/cluster.py; needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import images
from hostguard import HostRecord, cgroup_hierarchies, mountpoints, restore, write_sysctl
from pki import CLIENT_EXT, issue, server_ext, write_kubeconfig
from procs import Component, log_tail, pid_alive, rss_mib, spawn, stop_component

REPO = Path(__file__).resolve().parent.parent
NODE_CIDR = os.environ.get("KAITO_NODE_CIDR", "10.250.0.0/24")
GATEWAY = NODE_CIDR.rsplit(".", 1)[0] + ".1"  # the bridge's (and the node's) address
BRIDGE = "kaito0"
CNI_NETWORK = "kaito"
REGISTRY_PORT = 5000
REGISTRY = f"{GATEWAY}:{REGISTRY_PORT}"
KUBELET_PORT = 10250  # the first node's; node n listens on KUBELET_PORT + n
MAX_NODES = 4  # NODE_CIDR in four slices, one per node's pods
DNS_PORT = 53
CLUSTER_DOMAIN = "cluster.local"
# CoreDNS's user (its client certificate) and ClusterRole; no "kaito" in it: the chart's
# uninstall test counts the cluster-wide objects named so as the release's
DNS_USER = "hack-cluster:coredns"
KWOK_FAKE_CIDR = "10.244.0.0/16"  # KWOK's made-up pod addresses: never routed anywhere
CGROUP_PARENT = "kaito"
LOCK_DIR = Path("/run/kaito-real-node")
CNI_BIN = Path(os.environ.get("KAITO_CNI_BIN", "/usr/lib/cni"))
COMPONENT_ORDER = ("registry", "api-forward", "coredns", "containerd", "kubelet", "kube-proxy")
CONTAINER_LOGS = Path("/var/log/containers")  # kubelet's fixed symlink directory
GPU_RESOURCE = "nvidia.com/gpu"


class NodeError(RuntimeError):
    """A failure the user can act on; printed without a traceback."""


class ClusterLike(Protocol):
    """What the node needs of hack/cluster's state."""

    @property
    def path(self) -> Path: ...
    @property
    def kubeconfig(self) -> Path: ...

    ports: dict[str, int]


Kubectl = Callable[..., str]


@dataclass
class RealNode:
    """A real node's record, in ``<cluster>/nodes/<name>/node.json``."""

    name: str
    directory: str
    gpus: int
    components: dict[str, Component] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    slot: int = 0  # 0: the owner of the machine-wide pieces; see the module's invariants

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def socket(self) -> Path:
        return self.path / "run" / "containerd.sock"

    @property
    def owner(self) -> bool:
        return self.slot == 0

    @property
    def kubelet_port(self) -> int:
        return KUBELET_PORT + self.slot

    @property
    def cgroup_root(self) -> str:
        return f"/{CGROUP_PARENT}/{self.name}"

    @property
    def pod_cidr(self) -> str:
        return str(pod_slice(self.slot))

    @property
    def containerd_root(self) -> Path:
        return containerd_root(self.slot)

    def save(self) -> None:
        tmp = self.path / "node.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.path / "node.json")

    @classmethod
    def load(cls, directory: Path) -> RealNode | None:
        try:
            data = json.loads((directory / "node.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        comps = {k: Component(**v) for k, v in data.pop("components", {}).items()}
        return cls(components=comps, **data)


def nodes_of(cluster_dir: Path) -> list[RealNode]:
    """The cluster's real nodes, owner first."""
    found = []
    for path in sorted((cluster_dir / "nodes").glob("*/node.json")):
        node = RealNode.load(path.parent)
        if node is not None:
            found.append(node)
    return sorted(found, key=lambda n: n.slot)


def pod_slice(slot: int) -> ipaddress.IPv4Network:
    """Node `slot`'s share of the bridge's subnet: its pods' addresses and its podCIDR."""
    network = ipaddress.IPv4Network(NODE_CIDR)
    return list(network.subnets(prefixlen_diff=(MAX_NODES - 1).bit_length()))[slot]


def pod_range(slot: int) -> dict[str, str]:
    """host-local's range for node `slot`: the whole bridge subnet, its own slice of it."""
    hosts = list(pod_slice(slot).hosts())
    first = next(h for h in hosts if str(h) != GATEWAY)
    return {"subnet": NODE_CIDR, "gateway": GATEWAY, "rangeStart": str(first),
            "rangeEnd": str(hosts[-1])}  # fmt: skip


# ------------------------------------------------------------------------- binaries


def cache_root() -> Path:
    base = os.environ.get("KAITO_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kaito-py"


def ensure_node_binaries() -> Path:
    """kubelet, kube-proxy, containerd (+ shim, ctr) and crictl, built once and cached."""
    proc = subprocess.run(
        [str(REPO / "hack" / "build-node.sh")], stdout=subprocess.PIPE, check=False
    )
    if proc.returncode != 0:
        raise NodeError("building the node binaries failed (see the output above)")
    return Path(proc.stdout.decode().strip().splitlines()[-1])


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise NodeError("a real node needs root (kubelet, containerd and iptables do)")
    missing = [
        tool
        for tool in ("runc", "iptables", "ip6tables", "nft", "ip", "socat", "docker-registry")
        if shutil.which(tool) is None
    ]
    missing += [f"{CNI_BIN}/{p}" for p in ("bridge", "host-local", "loopback")
                if not (CNI_BIN / p).exists()]  # fmt: skip
    if missing:
        raise NodeError(
            "missing for a real node: " + ", ".join(missing) + " (hack/setup --real-node "
            "installs the Debian packages runc, containernetworking-plugins, socat, iptables)"
        )
    if not cgroup_hierarchies():
        raise NodeError("no cgroup v1 hierarchy is mounted under /sys/fs/cgroup")


# ------------------------------------------------------------------------ machine lock


def _slot_file(slot: int) -> Path:
    return LOCK_DIR / ("owner" if slot == 0 else f"slot-{slot}")


def _holder(slot: int) -> RealNode | None:
    """The node recorded on `slot`, if its record still exists."""
    try:
        return RealNode.load(Path(_slot_file(slot).read_text().strip()))
    except FileNotFoundError:
        return None


def _running(node: RealNode) -> bool:
    return any(pid_alive(c) for c in node.components.values())


def _claim_slot(node_dir: Path) -> int:
    """Record a new node of `node_dir`'s cluster on a free slot and return the slot.

    Slot 0 (the owner) when the machine has no running real node; otherwise the next free
    slot, provided the owner belongs to the same cluster (the registry, the API forwarder and
    CoreDNS serve that cluster). Nodes whose processes are all gone are cleaned up first.
    Serialized by an exclusive lock on ``LOCK_DIR``.
    """
    cluster_dir = node_dir.parent.parent
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_DIR, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        owner = _holder(0)
        if owner is not None and not _running(owner):
            # the machine's owner is gone but its changes may not be: clean every node
            for slot in reversed(range(MAX_NODES)):
                stale = _holder(slot)
                if stale is not None:
                    teardown(stale)
            owner = None
        if owner is not None and owner.path.parent.parent != cluster_dir:
            raise NodeError(
                f"this machine already runs a real node of another cluster ({owner.path}); "
                f"stop it first with `hack/cluster --dir {owner.path.parent.parent} down`"
            )
        slot = 0 if owner is None else _free_slot()
        LOCK_DIR.mkdir(parents=True, exist_ok=True)  # a stale owner's teardown removed it
        _slot_file(slot).write_text(str(node_dir) + "\n")
        return slot
    finally:
        os.close(fd)


def _free_slot() -> int:
    for slot in range(1, MAX_NODES):
        holder = _holder(slot)
        if holder is None:
            return slot
        if not _running(holder):
            teardown(holder)
            return slot
    raise NodeError(
        f"this machine already runs {MAX_NODES} real nodes (the most {NODE_CIDR} is split "
        "into); stop one first"
    )


def _release_slot(node: RealNode) -> None:
    path = _slot_file(node.slot)
    with contextlib.suppress(FileNotFoundError):
        if Path(path.read_text().strip()) == node.path:
            path.unlink()
    with contextlib.suppress(OSError):
        LOCK_DIR.rmdir()  # only once no node is recorded


# ------------------------------------------------------------------------------ configs


def _run(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _node_pki(cluster: ClusterLike, node: RealNode) -> None:
    pki = cluster.path / "pki"
    issue(pki, f"node-{node.name}", f"/O=system:nodes/CN=system:node:{node.name}", CLIENT_EXT)
    issue(pki, f"kubelet-serving-{node.name}", f"/CN={node.name}",
          server_ext([node.name], [GATEWAY]))  # fmt: skip
    api = cluster.ports["kube-apiserver"]
    write_kubeconfig(node.path / "kubelet.kubeconfig", pki, api, f"node-{node.name}",
                     f"system:node:{node.name}")  # fmt: skip
    if node.owner:
        issue(pki, "kube-proxy", "/CN=system:kube-proxy", CLIENT_EXT)
        write_kubeconfig(node.path / "kube-proxy.kubeconfig", pki, api, "kube-proxy",
                         "system:kube-proxy")  # fmt: skip
        issue(pki, "cluster-dns", f"/CN={DNS_USER}", CLIENT_EXT)
        write_kubeconfig(node.path / "coredns.kubeconfig", pki, api, "cluster-dns", DNS_USER)


def _write_configs(cluster: ClusterLike, node: RealNode, pause_image: str) -> None:
    d = node.path
    for sub in ("run", "containerd", "cni/net.d", "cni/ipam", "certs.d", "kubelet",
                "pod-logs", "volume-plugins"):  # fmt: skip
        (d / sub).mkdir(parents=True, exist_ok=True)
    state = d / "run" / "containerd-state"
    (d / "containerd.toml").write_text(
        f"""version = 3
root = "{node.containerd_root}"
state = "{state}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{node.socket}"

[ttrpc]
  address = "{node.socket}.ttrpc"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause_image}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{d / "certs.d"}"

[plugins."io.containerd.cri.v1.runtime"]
  netns_mounts_under_state_dir = true
  # CAP_SYS_RESOURCE is not ours here: a sandbox may not lower its OOM score below ours
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN}"]
    conf_dir = "{d / "cni" / "net.d"}"
    max_conf_num = 1
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{shutil.which("runc")}"
        Root = "{state / "runc"}"
        SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""
    )
    hosts = d / "certs.d" / REGISTRY
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text(
        f'server = "http://{REGISTRY}"\n\n[host."http://{REGISTRY}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    conflist = {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(d / "cni" / "ipam"),
                    "ranges": [[pod_range(node.slot)]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }
    (d / "cni" / "net.d" / "10-kaito.conflist").write_text(json.dumps(conflist, indent=2))
    pki = cluster.path / "pki"
    (d / "kubelet.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "failCgroupV1": False,  # these machines have cgroup v1 only
                "cgroupDriver": "cgroupfs",
                "cgroupRoot": node.cgroup_root,
                "containerRuntimeEndpoint": f"unix://{node.socket}",
                "address": GATEWAY,
                "port": node.kubelet_port,
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": node.ports["kubelet-healthz"],
                "tlsCertFile": str(pki / f"kubelet-serving-{node.name}.crt"),
                "tlsPrivateKeyFile": str(pki / f"kubelet-serving-{node.name}.key"),
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": True},
                    "x509": {"clientCAFile": str(pki / "ca.crt")},
                },
                "authorization": {"mode": "Webhook"},
                "failSwapOn": False,
                "protectKernelDefaults": False,
                "volumePluginDir": str(d / "volume-plugins"),
                "podLogsDir": str(d / "pod-logs"),
                # pods ask CoreDNS on the bridge; the host's resolver stays out of them
                "resolvConf": "",
                "clusterDNS": [GATEWAY],
                "clusterDomain": CLUSTER_DOMAIN,
                "serializeImagePulls": False,
                "registerNode": True,
                "syncFrequency": "10s",
                "nodeStatusUpdateFrequency": "10s",
                # a test machine's disk and memory are shared: evict only at the very end,
                # and never collect the images the tests pushed
                "evictionHard": {
                    "memory.available": "100Mi",
                    "nodefs.available": "1%",
                    "imagefs.available": "1%",
                    "nodefs.inodesFree": "1%",
                },
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "shutdownGracePeriod": "0s",
            },
            indent=2,
        )
    )
    if node.owner:
        _write_machine_configs(node)


def _write_machine_configs(node: RealNode) -> None:
    """kube-proxy's and CoreDNS's configuration, the owner's only."""
    d = node.path
    (d / "Corefile").write_text(
        f"""{CLUSTER_DOMAIN}:{DNS_PORT} in-addr.arpa:{DNS_PORT} {{
    bind {GATEWAY}
    errors
    log
    health 127.0.0.1:{node.ports["coredns-health"]}
    ready 127.0.0.1:{node.ports["coredns-ready"]}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {d / "coredns.kubeconfig"}
        pods insecure
        ttl 5
    }}
}}
"""
    )
    (d / "kube-proxy.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "clientConnection": {"kubeconfig": str(d / "kube-proxy.kubeconfig")},
                "hostnameOverride": node.name,
                "mode": "iptables",
                "clusterCIDR": NODE_CIDR,
                "healthzBindAddress": f"127.0.0.1:{node.ports['kube-proxy-healthz']}",
                "metricsBindAddress": f"127.0.0.1:{node.ports['kube-proxy-metrics']}",
                "nodePortAddresses": [f"{GATEWAY}/32"],  # never open ports on eth0
                # leave the machine's conntrack table and timeouts as they are
                "conntrack": {
                    "maxPerCore": 0,
                    "min": 0,
                    "tcpEstablishedTimeout": "0s",
                    "tcpCloseWaitTimeout": "0s",
                },
                "iptables": {"localhostNodePorts": False},
            },
            indent=2,
        )
    )


def containerd_root(slot: int) -> Path:
    """Image content and snapshots outlive a node: a new node does not pull 6 GB again.

    One store per slot (a containerd locks its root); the first node's keeps its old name.
    """
    return cache_root() / ("containerd-root" if slot == 0 else f"containerd-root-{slot}")


# ---------------------------------------------------------------------------- network


def _setup_network(log: list[str]) -> None:
    write_sysctl("net.ipv4.ip_forward", "1")
    with contextlib.suppress(OSError):
        write_sysctl("net.bridge.bridge-nf-call-iptables", "1")
    if BRIDGE not in _run("ip", "-o", "link", "show"):
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        log.append(f"created bridge {BRIDGE}")
    prefix = NODE_CIDR.rsplit("/", 1)[1]
    if f"{GATEWAY}/" not in _run("ip", "-o", "addr", "show", "dev", BRIDGE):
        _run("ip", "addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    _run("ip", "route", "replace", "blackhole", KWOK_FAKE_CIDR)


def _teardown_network(log: list[str]) -> None:
    links = _run("ip", "-o", "link", "show", "master", BRIDGE, check=False)
    for line in links.splitlines():
        veth = line.split(":")[1].strip().split("@")[0]
        _run("ip", "link", "delete", veth, check=False)
        log.append(f"deleted leftover link {veth}")
    if _run("ip", "-o", "link", "show", BRIDGE, check=False):
        _run("ip", "link", "delete", BRIDGE, check=False)
        log.append(f"deleted bridge {BRIDGE}")
    if KWOK_FAKE_CIDR in _run("ip", "route", "show", "type", "blackhole", check=False):
        _run("ip", "route", "delete", "blackhole", KWOK_FAKE_CIDR, check=False)


def _api_endpoints(kubectl: Kubectl, api_port: int) -> None:
    """Pods reach the API server at the ``kubernetes`` Service through our forwarder.

    The API server runs with ``--endpoint-reconciler-type=none`` (its own address is
    loopback, which Endpoints refuse), so nobody else writes this slice.
    """
    kubectl(
        "apply", "-f", "-",
        stdin=json.dumps({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "hack-cluster.kaito.sh",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [GATEWAY], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
        }),
    )  # fmt: skip


# ---------------------------------------------------------------------------- cgroups


def _make_cgroup_root(node: RealNode) -> None:
    """kubelet refuses a cgroupRoot that does not exist; cpuset needs its CPUs and nodes."""
    for hierarchy in cgroup_hierarchies():
        parent = hierarchy
        for part in node.cgroup_root.strip("/").split("/"):
            path = parent / part
            path.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (path / knob).exists() and not (path / knob).read_text().strip():
                    (path / knob).write_text((parent / knob).read_text())
            parent = path


def _remove_cgroups(relative: str, log: list[str]) -> None:
    """Remove the cgroup `relative` (and everything below it) in each hierarchy."""
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / relative
        if not root.is_dir():
            continue
        for path in sorted((p for p in root.rglob("*") if p.is_dir()),
                           key=lambda p: -len(p.parts)):  # fmt: skip
            with contextlib.suppress(OSError):
                path.rmdir()
        try:
            root.rmdir()
        except OSError as exc:
            log.append(f"cgroup {root} not removed: {exc}")


# ----------------------------------------------------------------------------- start


def _wait(what: str, check: Callable[[], bool], timeout: float, comp: Component | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if comp is not None and not pid_alive(comp):
            raise NodeError(f"{comp.name} exited; last lines of {comp.log}:\n{log_tail(comp.log)}")
        if check():
            return
        time.sleep(0.2)
    tail = f"; last lines of {comp.log}:\n{log_tail(comp.log)}" if comp else ""
    raise NodeError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def registry_storage() -> Path:
    """The node's image registry keeps its blobs across clusters (pushes are then no-ops)."""
    return cache_root() / "node-registry"


def _start(node: RealNode, name: str, argv: list[str], health: str) -> Component:
    comp = spawn(name, argv, node.path / "logs" / f"{name}.log", health, cwd=node.path)
    node.components[name] = comp
    node.save()
    return comp


def add(
    cluster: ClusterLike,
    name: str,
    *,
    instance_type: str,
    labels: dict[str, str],
    gpus: int,
    kubectl: Kubectl,
    kubectl_path: Path,
    pause_image: Callable[[str], str],
) -> RealNode:
    """Start a real node called `name`; returns once it is Ready with its GPUs advertised.

    The machine's first real node also starts what is machine-wide (see the module's
    invariants); a later one of the same cluster joins it. `pause_image(registry)` pushes the
    sandbox image to the node's registry and returns its reference. On any failure
    everything this call started is torn down again.
    """
    check_prerequisites()
    binaries = ensure_node_binaries()
    node_dir = (cluster.path / "nodes" / name).resolve()
    if (node_dir / "node.json").exists():
        raise NodeError(f"node {name} already exists in {cluster.path}")
    node_dir.mkdir(parents=True)
    (node_dir / "logs").mkdir()
    if len(str(node_dir / "run" / "containerd.sock.ttrpc")) > 100:
        raise NodeError(f"{node_dir} is too deep for a unix socket path; use a shorter --dir")
    try:
        slot = _claim_slot(node_dir)
    except BaseException:
        shutil.rmtree(node_dir, ignore_errors=True)
        raise
    node = RealNode(name=name, directory=str(node_dir), gpus=gpus, slot=slot)
    node.ports = {"kubelet-healthz": _free_port()}
    if node.owner:
        node.ports |= {p: _free_port() for p in ("kube-proxy-healthz", "kube-proxy-metrics",
                                                 "coredns-health", "coredns-ready")}  # fmt: skip
        HostRecord.take().save(node_dir / "host-record.json")
    node.save()
    log: list[str] = []
    try:
        _make_cgroup_root(node)
        _node_pki(cluster, node)
        if node.owner:
            _start_machine_wide(cluster, node, kubectl)
        pause = pause_image(REGISTRY)
        _write_configs(cluster, node, pause)
        if node.owner:
            _start_dns(node, binaries, kubectl)
        ctrd = _start(node, "containerd",
                      [str(binaries / "containerd"), "--config", str(node_dir / "containerd.toml")],
                      "")  # fmt: skip
        crictl = [str(binaries / "crictl"), "--runtime-endpoint", f"unix://{node.socket}"]

        def runtime_ready() -> bool:
            proc = subprocess.run([*crictl, "info"], capture_output=True, check=False)
            return proc.returncode == 0

        _wait("containerd's CRI", runtime_ready, 60, ctrd)
        _prune_runtime_images(crictl, log)
        _run(*crictl, "pull", pause)  # fail early and clearly when the sandbox image is missing
        kubelet_labels = {
            "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": instance_type,
            "kaito.sh/real-node": "true",
            **labels,
        }
        kubelet = _start(node, "kubelet", [
            str(binaries / "kubelet"), f"--config={node_dir / 'kubelet.yaml'}",
            f"--kubeconfig={node_dir / 'kubelet.kubeconfig'}", f"--root-dir={node_dir / 'kubelet'}",
            f"--cert-dir={node_dir / 'kubelet' / 'pki'}", f"--hostname-override={name}",
            f"--node-ip={GATEWAY}",
            "--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(kubelet_labels.items())),
            "--v=1",
        ], f"http://127.0.0.1:{node.ports['kubelet-healthz']}/healthz")  # fmt: skip
        _wait("kubelet's health", lambda: _http_ok(kubelet.health_url), 90, kubelet)
        if node.owner:
            proxy = _start(node, "kube-proxy", [
                str(binaries / "kube-proxy"), f"--config={node_dir / 'kube-proxy.yaml'}",
            ], f"http://127.0.0.1:{node.ports['kube-proxy-healthz']}/healthz")  # fmt: skip
            _wait("kube-proxy's health", lambda: _http_ok(proxy.health_url), 60, proxy)

        def node_ready() -> bool:
            out = subprocess.run(
                [str(kubectl_path), f"--kubeconfig={cluster.kubeconfig}", "get", "node", name,
                 "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            return out.stdout.strip() == "True"

        _wait(f"node {name} Ready", node_ready, 120, kubelet)
        _set_pod_cidr(kubectl, node)
        advertise_gpus(kubectl, name, gpus)
    except BaseException:
        teardown(node)
        raise
    return node


def _start_machine_wide(cluster: ClusterLike, node: RealNode, kubectl: Kubectl) -> None:
    """The owner's bridge, registry and API forwarder (CoreDNS and kube-proxy come later)."""
    log: list[str] = []
    _setup_network(log)
    storage = registry_storage()
    storage.mkdir(parents=True, exist_ok=True)
    (node.path / "registry.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {REGISTRY}\n"
    )
    _prune_registry(node.path / "registry.yml", storage, log)
    reg = _start(node, "registry",
                 [shutil.which("docker-registry") or "docker-registry", "serve",
                  str(node.path / "registry.yml")],
                 f"http://{REGISTRY}/v2/")  # fmt: skip
    _wait("the node's registry", lambda: _http_ok(reg.health_url), 30, reg)
    api_port = cluster.ports["kube-apiserver"]
    _start(node, "api-forward",
           [shutil.which("socat") or "socat",
            f"TCP-LISTEN:{api_port},bind={GATEWAY},fork,reuseaddr",
            f"TCP:127.0.0.1:{api_port}"], "")  # fmt: skip
    _api_endpoints(kubectl, api_port)


def _start_dns(node: RealNode, binaries: Path, kubectl: Kubectl) -> None:
    """CoreDNS on the bridge address, serving the cluster's zones from the API.

    Its client certificate's user may read what the kubernetes plugin watches, nothing more.
    Ready once the plugin has listed Services and EndpointSlices (the ready plugin).
    """
    rules = [
        {"apiGroups": [""], "resources": ["services", "namespaces", "pods"],
         "verbs": ["list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["list", "watch"]},
    ]  # fmt: skip
    role = DNS_USER
    kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": role}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": role},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": role},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                           "name": DNS_USER}]},
        ],
    }))  # fmt: skip
    dns = _start(node, "coredns",
                 [str(binaries / "coredns"), "-conf", str(node.path / "Corefile")],
                 f"http://127.0.0.1:{node.ports['coredns-ready']}/ready")  # fmt: skip
    _wait("CoreDNS ready", lambda: _http_ok(dns.health_url), 60, dns)


def _set_pod_cidr(kubectl: Kubectl, node: RealNode) -> None:
    """The Node's podCIDR names the slice its pods get addresses from (set once, if unset)."""
    have = kubectl("get", "node", node.name, "-o", "jsonpath={.spec.podCIDR}").strip()
    if not have:
        patch = {"spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]}}
        kubectl("patch", "node", node.name, "--type=merge", "-p", json.dumps(patch))


def _prune_registry(config: Path, storage: Path, log: list[str]) -> None:
    """Untag our images' older builds in the node's registry and collect their blobs.

    The registry's storage outlives clusters (a new node then pulls nothing it has); without
    this every serving change would leave another 6 GB behind. Runs while no registry serves.
    """
    current = images.current_tags()
    untagged = False
    for repo, keep in current.items():
        tags = storage / "docker" / "registry" / "v2" / "repositories" / repo / "_manifests"
        for tag_dir in (tags / "tags").glob("*") if (tags / "tags").is_dir() else ():
            if tag_dir.name != keep:
                shutil.rmtree(tag_dir, ignore_errors=True)
                untagged = True
    if untagged:
        subprocess.run(
            ["docker-registry", "garbage-collect", "--delete-untagged", str(config)],
            capture_output=True, check=False,
        )  # fmt: skip
        log.append("collected older image builds in the node's registry")


def _prune_runtime_images(crictl: list[str], log: list[str]) -> None:
    """Remove older builds of our images from containerd's store (a fresh node runs nothing)."""
    current = {f"{REGISTRY}/{repo}:{tag}" for repo, tag in images.current_tags().items()}
    listing = _run(*crictl, "images", "-o", "json", check=False)
    try:
        found = json.loads(listing or "{}").get("images") or []
    except json.JSONDecodeError:
        return
    for image in found:
        refs = image.get("repoTags") or []
        ours = [r for r in refs if r.startswith(f"{REGISTRY}/{images.PREFIX}/")]
        if ours and not set(ours) & current:
            _run(*crictl, "rmi", image["id"], check=False)
            log.append(f"removed {', '.join(ours)} from the node's image store")


def advertise_gpus(kubectl: Kubectl, name: str, gpus: int) -> None:
    """PATCH the node's status capacity; the kubelet then copies it into allocatable."""
    if gpus <= 0:
        return
    patch = json.dumps({"status": {"capacity": {GPU_RESOURCE: str(gpus)}}})
    kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", patch)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = kubectl("get", "node", name, "-o",
                      "jsonpath={.status.allocatable.nvidia\\.com/gpu}").strip()  # fmt: skip
        if got == str(gpus):
            return
        time.sleep(0.5)
    raise NodeError(f"node {name} never showed {gpus} allocatable {GPU_RESOURCE}")


# ------------------------------------------------------------------------------- down


def teardown(node: RealNode) -> list[str]:
    """Stop the node and clean what is its own; returns what it had to clean.

    The owner also stops what is machine-wide and puts the machine back as it was, so it
    goes after every other node (``hack/cluster down`` orders them; `others_running`
    refuses otherwise).
    """
    log: list[str] = []
    comps = node.components
    binaries = Path(comps["containerd"].argv[0]).parent if "containerd" in comps else None
    if "kubelet" in comps:
        stop_component(comps["kubelet"], timeout=20)
    if binaries is not None and "containerd" in comps and pid_alive(comps["containerd"]):
        _remove_all_pods(binaries, node, log)
    if "kube-proxy" in comps:
        stop_component(comps["kube-proxy"])
    if "containerd" in comps:
        stop_component(comps["containerd"], timeout=20)
    _kill_our_shims(node, log)
    for name in ("coredns", "api-forward", "registry"):
        if name in comps:
            stop_component(comps[name])
    _unmount_under([node.path, node.containerd_root], log)
    _remove_cgroups(node.cgroup_root.strip("/"), log)
    _remove_container_log_links(node, log)
    if node.owner:
        _remove_cgroups(CGROUP_PARENT, log)
        _teardown_network(log)
        record = HostRecord.load(node.path / "host-record.json")
        if record is not None:
            restore(record, log)
    _release_slot(node)
    return log


def others_running(node: RealNode) -> list[str]:
    """The other real nodes of this machine still running (an owner must go after them)."""
    others = (_holder(slot) for slot in range(MAX_NODES) if slot != node.slot)
    return [o.name for o in others if o is not None and _running(o)]


def _remove_all_pods(binaries: Path, node: RealNode, log: list[str]) -> None:
    """Stop and remove every pod sandbox (CNI DEL runs, netns and veths go)."""
    crictl = [str(binaries / "crictl"), "--runtime-endpoint", f"unix://{node.socket}",
              "--timeout", "30s"]  # fmt: skip
    pods = _run(*crictl, "pods", "-q", check=False).split()
    for pod in pods:
        _run(*crictl, "stopp", pod, check=False)
        _run(*crictl, "rmp", "-f", pod, check=False)
    if pods:
        log.append(f"removed {len(pods)} pod sandbox(es)")


def _kill_our_shims(node: RealNode, log: list[str]) -> None:
    """Shims outlive containerd by design; ours name our containerd's socket."""
    needle = str(node.socket).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and needle in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
            log.append(f"killed leftover shim {pid}")


def _unmount_under(roots: list[Path], log: list[str]) -> None:
    prefixes = [str(r.resolve()) + "/" for r in roots]
    for point in sorted(mountpoints(), key=lambda p: -p.count("/")):
        if any(point.startswith(p) for p in prefixes):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
            log.append(f"unmounted {point}")


def _remove_container_log_links(node: RealNode, log: list[str]) -> None:
    if not CONTAINER_LOGS.is_dir():
        return
    ours = str(node.path / "pod-logs")
    for link in CONTAINER_LOGS.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(ours):
                link.unlink()
                log.append(f"removed {link}")


def status_lines(node: RealNode) -> tuple[list[str], bool]:
    """One line per process of the node, and whether all of them run."""
    lines, ok = [], True
    for name in COMPONENT_ORDER:
        comp = node.components.get(name)
        if comp is None:
            continue
        alive = pid_alive(comp)
        ok = ok and alive
        rss = rss_mib(comp.pid) if alive else 0.0
        word = "running" if alive else "DEAD"
        label = f"{node.name}/{name}"
        lines.append(f"{label:<24} pid {comp.pid:<8} {word:<10} rss {rss:7.1f} MiB")
    return lines, ok


def restart_component(node: RealNode, name: str, kubectl: Kubectl) -> None:
    """Stop and start one of the node's processes with the same command line.

    After a kubelet restart the GPU capacity is advertised again: on re-registration the
    kubelet may reset extended resources that no device plugin backs.
    """
    comp = node.components.get(name)
    if comp is None:
        raise NodeError(f"node {node.name} has no {name}; one of {', '.join(node.components)}")
    stop_component(comp, timeout=20)
    new = _start(node, name, comp.argv, comp.health_url)
    if new.health_url:
        _wait(f"{name}'s health", lambda: _http_ok(new.health_url), 90, new)
    if name == "kubelet":
        advertise_gpus(kubectl, node.name, node.gpus)
