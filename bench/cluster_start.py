"""How long the local control plane takes to build and start, and what it costs in memory.

Prints figures (no asserts): the cold build time when the binary cache was empty, the
warm `up` time, the time until a KWOK GPU node is Ready, and each component's RSS.
Usage: ``.venv/bin/python bench/cluster_start.py [--runs 3]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def load_cluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hack_cluster", REPO / "hack" / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="warm starts to time")
    args = parser.parse_args()
    hc = load_cluster()

    cold = None
    if not (hc.bin_dir() / "kube-apiserver").exists():
        t0 = time.monotonic()
        hc.ensure_binaries()
        cold = time.monotonic() - t0

    ups: list[float] = []
    readies: list[float] = []
    rss: dict[str, list[float]] = {}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="kaito-bench-") as tmp:
            directory = Path(tmp) / "cluster"
            t0 = time.monotonic()
            state = hc.up(directory, quiet=True)
            ups.append(time.monotonic() - t0)
            try:
                gpus, cpu, mem = hc.sku_shape("Standard_NC6s_v3")
                node = hc.fake_node(f"bench-gpu-{run}", "Standard_NC6s_v3", gpus, cpu, mem)
                hc.kubectl(state, "create", "-f", "-", stdin=json.dumps(node))
                hc.kubectl(
                    state, "wait", "--for=condition=Ready", f"node/bench-gpu-{run}", "--timeout=60s"
                )
                readies.append(time.monotonic() - t0)
                time.sleep(2)  # let the components settle before reading memory
                for name, comp in state.components.items():
                    rss.setdefault(name, []).append(rss_mib(comp.pid))
            finally:
                hc.down(directory, quiet=True)

    versions = f"k8s {hc.K8S_VERSION}, etcd {hc.ETCD_VERSION}, kwok {hc.KWOK_VERSION}"
    print(f"local control plane ({versions})")
    print(f"{'figure':<40}{'value':>12}")
    if cold is not None:
        print(f"{'cold build (s)':<40}{cold:>12.1f}")
    else:
        print(f"{'cold build (s)':<40}{'cached':>12}")
    label = f"warm up, median of {len(ups)} (s)"
    print(f"{label:<40}{statistics.median(ups):>12.2f}")
    print(f"{'up → GPU node Ready, median (s)':<40}{statistics.median(readies):>12.2f}")
    for name, values in rss.items():
        print(f"{'RSS ' + name + ' (MiB)':<40}{statistics.median(values):>12.1f}")
    print(f"{'RSS total (MiB)':<40}{sum(statistics.median(v) for v in rss.values()):>12.1f}")


if __name__ == "__main__":
    main()
