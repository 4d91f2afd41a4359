"""InferenceSet autoscaling and scale-to-zero figures on real vLLM CPU servers.

    .venv/bin/python bench/inferenceset_autoscale.py [--held 4] [--concurrency 6]

Starts the stack of tests/e2e/autoscaling (its own control plane with a 2 s HPA sync, the
operator with its activator, Prometheus, prometheus-adapter, the tiny preset served by vLLM's
CPU build on a process node) and prints:

* scale up: seconds from the start of a load well above the threshold until the HPA asks for a
  second replica, and until that replica serves (the model load dominates);
* scale down: seconds of light load until the set is back at one replica, and requests lost
  (must be 0);
* cold start: a scale-to-zero set parked at zero gets N concurrent requests; the activator
  holds them, wakes the set, and forwards them: seconds until each is answered.

Everything shares the machine's 2 cores: the figures are noisy when other work runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.e2e.autoscaling.load import ActivatorClient, Load, ServiceRouter  # noqa: E402
from tests.e2e.autoscaling.stack import (  # noqa: E402
    AUTOSCALING,
    Stack,
    autoscaling_stack,
    missing_tools,
)

ANNOTATIONS = AUTOSCALING


def wait(what: str, check: Any, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def replicas(stack: Stack, name: str) -> tuple[int, int, int]:
    iset = stack.get_set(name)
    status = iset.get("status") or {}
    return (
        int(iset["spec"].get("replicas", 1)),
        int(status.get("replicas", 0)),
        int(status.get("readyReplicas", 0)),
    )


def create(stack: Stack, name: str, annotations: dict[str, str]) -> float:
    stack.api.post(
        f"/apis/kaito.sh/v1beta1/namespaces/{stack.namespace}/inferencesets",
        stack.inference_set(name, annotations),
    )
    return wait(f"{name} serving", lambda: replicas(stack, name)[2] == 1, 600)


def scale_up_and_down(stack: Stack, concurrency: int) -> None:
    first = create(stack, "bench", ANNOTATIONS)
    print(f"first replica serving after {first:.1f}s (create → Ready)")
    wait("metrics", lambda: (stack.cluster.get("hpa", "bench", stack.namespace) or {}).get(
        "status", {}).get("currentMetrics"), 180)  # fmt: skip
    router = ServiceRouter(stack.api, stack.namespace, "bench")
    load = Load(router)
    try:
        load.set_concurrency(concurrency)
        decided = wait("HPA decision", lambda: replicas(stack, "bench")[0] == 2, 300)
        serving = decided + wait("second replica", lambda: replicas(stack, "bench")[2] == 2, 600)
        load.set_concurrency(1)
        down = wait("back to one", lambda: replicas(stack, "bench")[:2] == (1, 1), 300)
        time.sleep(8)  # the drained replica's last requests
    finally:
        load.stop()
        router.stop()
    lost = sum(o.lost for o in load.outcomes)
    ok = [o.seconds for o in load.outcomes if o.status == 200]
    print(
        f"scale up (load {concurrency} in flight, threshold 2 waiting): HPA decision after "
        f"{decided:.1f}s, second replica serving after {serving:.1f}s"
    )
    print(f"scale down (1 in flight): back to one replica after {down:.1f}s")
    print(
        f"requests: {len(load.outcomes)} sent, {len(ok)} answered 200 (p50 "
        f"{statistics.median(ok):.2f}s), lost {lost}; by status {load.summary()}"
    )
    stack.delete_set("bench")


def cold_start(stack: Stack, held: int) -> None:
    annotations = {
        **ANNOTATIONS,
        "scaledobject.kaito.sh/min-replicas": "0",
        "scaledobject.kaito.sh/idle-seconds": "10",
    }
    create(stack, "cold", annotations)
    parked = wait("scaled to zero", lambda: replicas(stack, "cold")[:2] == (0, 0), 300)
    print(f"scale to zero after {parked:.1f}s idle (idle-seconds 10)")
    time.sleep(3)
    client = ActivatorClient(stack.activator_port, f"cold.{stack.namespace}.svc.cluster.local")
    start = time.monotonic()
    with ThreadPoolExecutor(held) as pool:
        outcomes = list(pool.map(lambda _: client.send(), range(held)))
    total = time.monotonic() - start
    codes = [o.status for o in outcomes]
    times = sorted(o.seconds for o in outcomes)
    print(
        f"cold start: {held} requests held at zero, answered {codes} after "
        f"{times[0]:.1f}-{times[-1]:.1f}s (all in {total:.1f}s)"
    )
    stack.delete_set("cold")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held", type=int, default=4, help="requests sent to a set at zero")
    parser.add_argument("--concurrency", type=int, default=6, help="requests in flight at peak")
    args = parser.parse_args()
    why = missing_tools()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="kaito-bench-autoscale-") as tmp:
        started = time.monotonic()
        with autoscaling_stack(Path(tmp)) as stack:
            print(f"stack up in {time.monotonic() - started:.1f}s")
            scale_up_and_down(stack, args.concurrency)
            cold_start(stack, args.held)
    return 0


if __name__ == "__main__":
    sys.exit(main())
