"""The real node's figures: images, node start, and `kubectl apply` to the first /chat answer.

Prints figures (no asserts), measured on this machine in one run:
- each image's size and what its last build and push took (hack/images records them);
- the time `hack/cluster add-node --real` takes, and the RSS of kubelet, containerd and
  kube-proxy idle and while a Workspace serves;
- cold (the serving image not yet in the node's store) and warm (already there) time from
  applying the tiny preset's Workspace to its first /chat answer through the Service, split
  into scheduling, image pull, init containers (weights fetch), model load (container start to
  /health answering) and readiness (until the kubelet's probe marks the pod Ready).

Needs root and what hack/setup installs for a real node; uses a cluster of its own and the
machine's one real node. Usage: ``.venv/bin/python bench/real_node.py``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NODE = "bench-gpu"
LABELS = {"apps": "bench"}


def load_hack(name: str) -> ModuleType:
    sys.path.insert(0, str(REPO / "hack"))
    spec = importlib.util.spec_from_file_location(f"hack_{name}", REPO / "hack" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cluster_mod = load_hack("cluster")
images = cluster_mod.images
realnode = cluster_mod.realnode


def ts(value: str | None) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() if value else 0.0


class Bench:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.state = cluster_mod.up(directory / "c", quiet=True)
        self.kubeconfig = str(self.state.kubeconfig)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return str(cluster_mod.kubectl(self.state, *args, stdin=stdin))

    def get(self, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json"))
        return out

    def node_rss(self) -> dict[str, float]:
        nodes = realnode.nodes_of(self.state.path)
        return {
            name: cluster_mod.rss_mib(comp.pid)
            for name, comp in nodes[0].components.items()
            if name in ("kubelet", "containerd", "kube-proxy")
        }


def pulled_seconds(events: list[dict[str, Any]]) -> float | None:
    """The kubelet's own pull figure: 'Successfully pulled image "X" in 1m2.5s (...)'."""
    for ev in events:
        m = re.search(r'Successfully pulled image ".*serving.*" in ([0-9hms.]+)', ev["message"])
        if m:
            total = 0.0
            for amount, unit in re.findall(r"([0-9.]+)(h|ms|m|s)", m.group(1)):
                total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
            return total
    return None


def first_chat(bench: Bench, name: str, operator_log: Path) -> dict[str, float | None]:
    """Apply the tiny Workspace; time every stage up to the first /chat answer."""
    applied = time.time()
    bench.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": name, "namespace": "default"},
        "resource": {"instanceType": "Standard_NC6s_v3",
                     "labelSelector": {"matchLabels": LABELS}},
        "inference": {"preset": {"name": "tiny-llama-test"}},
    }))  # fmt: skip
    pod_ip, healthy = None, None
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        try:
            pod = bench.get("pod", f"{name}-0", "-n", "default")
        except cluster_mod.ClusterError:
            time.sleep(0.5)
            continue
        pod_ip = pod["status"].get("podIP")
        running = any((c.get("state") or {}).get("running")
                      for c in pod["status"].get("containerStatuses") or [])  # fmt: skip
        if healthy is None and pod_ip and running:
            try:
                with urllib.request.urlopen(f"http://{pod_ip}:5000/health", timeout=1) as r:
                    if r.status == 200:
                        healthy = time.time()
            except OSError:
                pass
        ready = next((c for c in pod["status"].get("conditions") or [] if c["type"] == "Ready"),
                     {})  # fmt: skip
        if ready.get("status") == "True":
            break
        time.sleep(0.25)
    else:
        raise SystemExit(f"pod never became Ready; operator log: {operator_log}")
    svc = bench.get("service", name, "-n", "default")
    url = f"http://{svc['spec']['clusterIP']}/chat"
    body = json.dumps({"prompt": "hello", "generate_kwargs": {"max_new_tokens": 8}}).encode()
    answered = None
    while answered is None and time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, body, {"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                json.loads(r.read())
                answered = time.time()
        except OSError:
            time.sleep(0.25)
    events = bench.get("events", "-n", "default", "--field-selector",
                       f"involvedObject.name={name}-0")["items"]  # fmt: skip
    status = pod["status"]
    inits = status.get("initContainerStatuses") or []
    main = (status.get("containerStatuses") or [{}])[0]
    scheduled = next(c for c in status["conditions"] if c["type"] == "PodScheduled")
    init_start = min(ts(c["state"]["terminated"]["startedAt"]) for c in inits)
    init_end = max(ts(c["state"]["terminated"]["finishedAt"]) for c in inits)
    started = ts(main["state"]["running"]["startedAt"])
    return {
        "apply → pod scheduled": ts(scheduled["lastTransitionTime"]) - applied,
        "image pull (kubelet)": pulled_seconds(events),
        "init containers": init_end - init_start,
        "model load": (healthy - started) if healthy else None,
        "readiness": ts(ready["lastTransitionTime"]) - healthy if healthy else None,
        "apply → first /chat": (answered - applied) if answered else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/real_node.py needs root (a real node)")
    print("images (hack/images, last build and push on this machine):")
    for name, fig in images.figures().items():
        print(f"  {name:<9} {fig.get('size_mib', '?'):>6} MiB  build {fig.get('build_s', '?')} s"
              f"  push {fig.get('push_s', '?')} s  (tag {fig.get('tag')})")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="kaito-bench-node-") as tmp:
        bench = Bench(Path(tmp))
        try:
            t0 = time.monotonic()
            cluster_mod.add_node(bench.state.path, NODE, "Standard_NC6s_v3", LABELS, 2, True,
                                 real=True)  # fmt: skip
            print(f"\nreal node up (add-node --real): {time.monotonic() - t0:.1f} s")
            print("idle RSS MiB:", {k: round(v, 1) for k, v in bench.node_rss().items()})
            serving = images.push("serving", realnode.REGISTRY)
            tiny = subprocess.run([str(REPO / "hack" / "tiny-model")], capture_output=True,
                                  text=True, check=True).stdout.split()[-1]  # fmt: skip
            subprocess.run([str(REPO / "hack" / "push-model"), tiny,
                            f"{realnode.REGISTRY}/kaito-tiny-llama-test:0.1.0", "--plain-http"],
                           check=True, capture_output=True)  # fmt: skip
            crictl = [str(Path(realnode.nodes_of(bench.state.path)[0].components["containerd"]
                               .argv[0]).parent / "crictl"), "--runtime-endpoint",
                      f"unix://{realnode.nodes_of(bench.state.path)[0].socket}"]  # fmt: skip
            subprocess.run([*crictl, "rmi", serving], capture_output=True, check=False)  # cold
            bench.kubectl("apply", "--server-side", "-f", str(REPO / "manifests" / "crd"))
            bench.kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh")
            log = Path(tmp) / "operator.log"
            operator = subprocess.Popen(
                [sys.executable, "-m", "kaito", f"--kubeconfig={bench.kubeconfig}",
                 "--metrics-port=0", "--health-port=0", f"--serving-image={serving}",
                 f"--plain-http-registries={realnode.REGISTRY}"],
                env={**os.environ, "PYTHONPATH": str(REPO / "src"),
                     "PRESET_REGISTRY_NAME": realnode.REGISTRY},
                stdout=log.open("wb"), stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                runs = {"cold": first_chat(bench, "cold", log)}
                print("serving RSS MiB:", {k: round(v, 1) for k, v in bench.node_rss().items()})
                bench.kubectl("delete", "workspace", "cold", "-n", "default", "--timeout=300s")
                runs["warm"] = first_chat(bench, "warm", log)
                bench.kubectl("delete", "workspace", "warm", "-n", "default", "--timeout=300s")
            finally:
                operator.terminate()
                operator.wait(30)
            print("\nfrom `kubectl apply` to the first /chat answer (s):")
            print(f"  {'stage':<24} {'cold':>8} {'warm':>8}")
            for stage in runs["cold"]:
                row = [runs[r][stage] for r in ("cold", "warm")]
                cells = [f"{v:8.1f}" if v is not None else f"{'-':>8}" for v in row]
                print(f"  {stage:<24} {cells[0]} {cells[1]}")
            print(f"\nload average during the run: {os.getloadavg()[0]:.1f} (2 cores)")
        finally:
            cluster_mod.down(bench.state.path, quiet=True)


if __name__ == "__main__":
    main()
