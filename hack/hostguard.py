"""What a real node changes on this machine, recorded before and put back after.

A kubelet, containerd, kube-proxy and the CNI plugins change machine-wide state: iptables
and nftables rules, sysctls, network links and routes, mounts, cgroups, files under /run and
/var. The real node (hack/realnode.py) records every one of them *before* it starts anything
(`HostRecord`), and `restore` puts back exactly what was recorded. `snapshot` gives a
comparable picture of the same state, so a test can prove that `hack/cluster down` left
nothing behind.

Standard library only; needs root (it is only used for a real node, which needs root).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Kernel settings that the node needs (forwarding, bridged traffic through iptables) or that
# kubelet and kube-proxy set on their own at start-up.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)
# Directories some component may create outside our own trees.
WATCHED_PATHS = ("/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/log/pods",
                 "/run/netns", "/var/run/netns", "/etc/cni", "/opt/cni",
                 "/usr/libexec/kubernetes", "/var/lib/kubelet", "/run/runc")  # fmt: skip
# Kernel file systems a node's components mount on demand (cadvisor reads tracing data).
KERNEL_FS_MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug", "/sys/fs/bpf")
# Programs only a real node runs (test registries and forwarders run elsewhere too).
NODE_EXECUTABLES = frozenset(
    {"kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "runc", "pause", "coredns"}
)


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def write_sysctl(name: str, value: str) -> None:
    _sysctl_path(name).write_text(value + "\n")


def _run(*argv: str, stdin: str | None = None) -> str:
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else ""


def nft_tables() -> list[str]:
    """`family name` of every nftables table (iptables-nft keeps its tables there too)."""
    out = _run("nft", "list", "tables")
    return sorted(line.removeprefix("table ").strip() for line in out.splitlines() if line)


def _normalized_ruleset(text: str) -> list[str]:
    """A ruleset dump without comments or packet counters, for comparison."""
    lines = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        # ":CHAIN POLICY [pkts:bytes]" loses its counters
        lines.append(line.split(" [", 1)[0] if line.startswith(":") else line)
    return lines


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup v1 hierarchy (cpu, memory, ..., name=systemd)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup":
            found.append(Path(parts[1]))
    return sorted(found)


def mountpoints() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(line.split()[4].replace("\\040", " "))
    return points


@dataclass
class HostRecord:
    """Machine-wide state as it was before the real node started (kept in its state dir)."""

    sysctls: dict[str, str] = field(default_factory=dict)
    nft_tables: list[str] = field(default_factory=list)
    iptables: str = ""
    ip6tables: str = ""
    links: list[str] = field(default_factory=list)
    paths: dict[str, bool] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)

    @classmethod
    def take(cls) -> HostRecord:
        return cls(
            sysctls=read_sysctls(),
            nft_tables=nft_tables(),
            iptables=_run("iptables-save"),
            ip6tables=_run("ip6tables-save"),
            links=link_names(),
            paths={p: os.path.lexists(p) for p in WATCHED_PATHS},
            mounts=mountpoints(),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> HostRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None


def link_names() -> list[str]:
    out = _run("ip", "-o", "link", "show")
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line)


def restore(record: HostRecord, log: list[str]) -> None:
    """Put the firewall, links, sysctls and watched paths back as `record` found them.

    Tables that did not exist before are deleted; the ones that did are restored from their
    dump (iptables-restore replaces exactly the tables it is given). Every action is
    appended to `log`.
    """
    for table in nft_tables():
        if table not in record.nft_tables:
            _run("nft", "delete", "table", *table.split())
            log.append(f"deleted nft table {table}")
    dumps = (("iptables-restore", record.iptables), ("ip6tables-restore", record.ip6tables))
    for cmd, dump in dumps:
        if dump.strip():
            _run(cmd, stdin=dump)
            log.append(f"{cmd}: tables restored")
    for name, value in record.sysctls.items():
        with contextlib.suppress(OSError):
            if _sysctl_path(name).read_text().strip() != value:
                write_sysctl(name, value)
                log.append(f"sysctl {name}={value}")
    for path, existed in record.paths.items():
        # a component created it while the nodes ran (kubelet's device-plugin socket lives at
        # a fixed path, whatever its --root-dir); the owner restores last, so it is ours
        if not existed and os.path.lexists(path):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            log.append(f"removed {path}")
    for point in mountpoints():
        if point not in record.mounts and point.startswith(KERNEL_FS_MOUNTS):
            subprocess.run(["umount", point], capture_output=True, check=False)
            log.append(f"unmounted {point}")


def snapshot() -> dict[str, Any]:
    """A comparable picture of the machine-wide state a node could leave behind."""
    procs = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe")).removesuffix(" (deleted)")
            if exe in NODE_EXECUTABLES:
                procs.append(f"{exe}:{pid}")
    cgroups = []
    for hierarchy in cgroup_hierarchies():
        with contextlib.suppress(OSError):
            cgroups += [f"{hierarchy.name}/{p.name}" for p in hierarchy.iterdir() if p.is_dir()]
    routes = _run("ip", "route", "show", "table", "all")
    return {
        "sysctls": read_sysctls(),
        "nft_tables": nft_tables(),
        "iptables": _normalized_ruleset(_run("iptables-save")),
        "ip6tables": _normalized_ruleset(_run("ip6tables-save")),
        "links": link_names(),
        "routes": sorted(routes.splitlines()),
        "netns": sorted(_run("ip", "netns", "list").splitlines()),
        "mounts": sorted(mountpoints()),
        "cgroups": sorted(cgroups),
        "paths": {p: os.path.lexists(p) for p in WATCHED_PATHS},
        "processes": sorted(procs),
    }
