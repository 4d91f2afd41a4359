"""The controller-manager's HPA scales an InferenceSet of real vLLM servers 1 → 2 → 1 on
vllm:num_requests_waiting, through prometheus-adapter and Prometheus, and no request is lost.

Everything is real except where the local machine has no equivalent (see ``stack.py``): the
pods run as processes on the test's process node and requests are routed to Ready pods the way
kube-proxy would (``load.py``).  Slow (two vLLM starts): marked slow, run in CI's e2e stage.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ..controllers.conftest import condition, get_json, wait_until
from .load import ActivatorClient, Load, ServiceRouter
from .stack import AUTOSCALING, Stack, autoscaling_stack, missing_tools

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAME = "tiny"
ANNOTATIONS = AUTOSCALING
START_S = 600  # a vLLM CPU server starts in ~30 s alone, minutes on a busy shared machine
HEAVY, LIGHT = 6, 1  # requests in flight: far above the threshold of 2 waiting, then none waiting


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    why = missing_tools()
    if why:
        pytest.skip(why)
    directory = Path(tmp_path_factory.mktemp("autoscaling"))
    with autoscaling_stack(directory) as running:
        yield running


def status_of_set(stack: Stack, name: str) -> dict[str, Any]:
    iset = stack.get_set(name)
    return {"spec": iset["spec"].get("replicas"), **(iset.get("status") or {}), "obj": iset}


def status_of(stack: Stack) -> dict[str, Any]:
    return status_of_set(stack, NAME)


def test_hpa_scales_real_serving_replicas_up_and_back_without_losing_a_request(
    stack: Stack,
) -> None:
    api, ns = stack.api, stack.namespace
    api.post(
        f"/apis/kaito.sh/v1beta1/namespaces/{ns}/inferencesets",
        stack.inference_set(NAME, ANNOTATIONS),
    )
    wait_until("one replica serving", lambda: status_of(stack).get("readyReplicas") == 1, START_S)

    def metrics_flow() -> bool:
        cond = condition(stack.get_set(NAME), "AutoscalerReady")
        hpa = stack.cluster.get("hpa", NAME, ns) or {}
        return bool(
            cond and cond["status"] == "True" and (hpa.get("status") or {}).get("currentMetrics")
        )

    wait_until("the HPA reads vLLM's metric through the adapter", metrics_flow, 180)
    pod = next(
        iter(
            stack.adapter.pod_metric(
                ns, "vllm:num_requests_waiting", f"inferenceset.kaito.sh/created-by={NAME}"
            )
        )
    )
    assert pod == f"{NAME}-0-0"

    router = ServiceRouter(api, ns, NAME)
    load = Load(router)
    try:
        load.set_concurrency(HEAVY)
        start = time.monotonic()
        wait_until("the HPA asks for 2 replicas", lambda: status_of(stack)["spec"] == 2, 180)
        decided = time.monotonic() - start
        wait_until(
            "2 replicas serving", lambda: status_of(stack).get("readyReplicas") == 2, START_S
        )
        serving = time.monotonic() - start
        wait_until(
            "both replicas answer requests",
            lambda: len({o.endpoint for o in load.outcomes if o.status == 200}) == 2,
            60,
        )
        load.set_concurrency(LIGHT)
        low = time.monotonic()

        def back_to_one() -> bool:
            s = status_of(stack)
            return s["spec"] == 1 and s.get("replicas") == 1 and len(router.endpoints) == 1

        wait_until("the HPA scales back to 1", back_to_one, 240)
        down = time.monotonic() - low
        wait_until(
            "the removed replica's server stopped",
            lambda: sum(p.proc.poll() is None for p in stack.node.history) == 1,
            120,
        )
        time.sleep(2)  # requests keep flowing to the remaining replica
    finally:
        load.stop()
        router.stop()

    summary = load.summary()
    lost = [o for o in load.outcomes if o.lost]
    print(
        f"\nautoscaling 1→2→1: HPA decision after {decided:.1f}s of load, second replica "
        f"serving after {serving:.1f}s, back to 1 after {down:.1f}s of light load; "
        f"requests {summary}"
    )
    assert not lost, f"{len(lost)} requests lost, e.g. {lost[:3]}"
    assert summary.get("200", 0) > 20
    events = get_json(
        stack.cluster, "events", "-n", ns, "--field-selector", "reason=SuccessfulRescale"
    )["items"]
    messages = [e["message"] for e in events]
    assert any("New size: 2" in m and "above target" in m for m in messages), messages
    assert any("New size: 1" in m for m in messages), messages
    ready = [p.ready_after_s for p in stack.node.history if p.ready_after_s is not None]
    print(f"replica start to /health (s): {[round(r, 1) for r in ready]}")
    stack.delete_set(NAME)  # frees its server before the next test starts one


COLD = "cold"
TO_ZERO = {
    **ANNOTATIONS,
    "scaledobject.kaito.sh/min-replicas": "0",
    "scaledobject.kaito.sh/idle-seconds": "15",
}
HELD = 3


def test_an_idle_set_scales_to_zero_and_held_requests_wake_it(stack: Stack) -> None:
    api, ns = stack.api, stack.namespace
    api.post(
        f"/apis/kaito.sh/v1beta1/namespaces/{ns}/inferencesets",
        stack.inference_set(COLD, TO_ZERO),
    )
    svc = wait_until("the set's Service", lambda: stack.cluster.get("service", COLD, ns), 30)
    assert svc["spec"]["type"] == "ExternalName"
    assert svc["spec"]["externalName"] == "kaito-activator.kaito-system.svc.cluster.local"
    # what a client's request carries after DNS sent it to the activator's Service
    activator = ActivatorClient(stack.activator_port, f"{COLD}.{ns}.svc.cluster.local")
    wait_until(
        "one replica serving", lambda: status_of_set(stack, COLD).get("readyReplicas") == 1, START_S
    )
    assert activator.send().status == 200  # warm: forwarded at once

    def parked() -> bool:
        s = status_of_set(stack, COLD)
        mine = [
            p
            for p in stack.node.history
            if p.labels.get("inferenceset.kaito.sh/created-by") == COLD
        ]
        return (
            s["spec"] == 0
            and s.get("replicas") == 0
            and all(p.proc.poll() is not None for p in mine)
        )

    wait_until("idle for 15 s: scaled to zero, its server stopped", parked, 180)
    events = get_json(stack.cluster, "events", "-n", ns, "--field-selector", "reason=ScaledToZero")
    assert events["items"]

    start = time.monotonic()
    with ThreadPoolExecutor(HELD) as pool:
        outcomes = list(pool.map(lambda _: activator.send(), range(HELD)))
    cold_start = time.monotonic() - start
    assert [o.status for o in outcomes] == [200] * HELD, outcomes
    assert status_of_set(stack, COLD)["spec"] == 1
    held = stack.operator.metric("kaito_activator_cold_start_seconds_count", inferenceset=COLD)
    assert held >= 1
    print(f"\ncold start with {HELD} held requests: all answered after {cold_start:.1f}s")
    stack.delete_set(COLD)
