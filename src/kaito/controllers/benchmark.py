"""The post-load benchmark: its probe's settings, and its result read into the status.

As upstream runs it, the benchmark is the inference container's startup probe (``python3 -m
serving.benchmark``): once the server is healthy it puts load on it for a short while and
writes ``KAITO_BENCHMARK_RESULT <time> {json}`` to the container's log. Once the leader pod
(``<ws>-0``) is Ready the controller reads the tail of that log, once per pod, and records
the rate as ``status.performance.metrics.peakTokensPerMinute`` with the condition
``BenchmarkCompleted``. The annotation ``kaito.sh/disable-benchmark: "true"`` turns it off.

Unlike upstream the Workspace does not wait for the result to be Ready: the startup probe
already holds the pod back until the benchmark has run, and a log that cannot be read
(no kubelet behind a KWOK node, no RBAC for pods/log) says so in ``BenchmarkCompleted``
instead of keeping a serving model out of service.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from kaito.api import WorkspaceBase
from kaito.api import constants as C
from kaito.api.constants import ConditionType, Reason
from kaito.controllers import diagnosis
from kaito.controllers.common import Facts
from kaito.presets.plan import Plan
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.errors import ApiError
from kaito.runtime.gvk import POD
from kaito.runtime.objects import to_dict

log = logging.getLogger("kaito.controllers.benchmark")

RESULT_MARK = "KAITO_BENCHMARK_RESULT"
CONFIG_MARK = "KAITO_BENCHMARK_CONFIG"
METRIC = "peakTokensPerMinute"
TAIL_LINES = 500
LIMIT_BYTES = 1 << 20
# (seconds, concurrent clients, prompt tokens, generated tokens): shorter than upstream's
# 60 s of 2048/256-token requests, so a model starts serving sooner; CPU sizes get less
GPU_LOAD = (30, 16, 1024, 128)
CPU_LOAD = (10, 2, 64, 16)


def enabled(ws: WorkspaceBase, plan: Plan | None = None) -> bool:
    """Upstream's rule: on unless the annotation says "true"; vLLM presets only.

    With ``plan``: only a model served by one pod. Upstream runs it on the leader of a
    multi-node group alone; until the group has leader and worker roles (a worker serves no
    /health), a multi-node StatefulSet keeps the plain /health startup probe.
    """
    annotations = ws.metadata.annotations or {}
    if annotations.get(C.ANNOTATION_DISABLE_BENCHMARK, "").lower() == "true":
        return False
    runtime = annotations.get(C.ANNOTATION_RUNTIME, "vllm").lower()
    if runtime != "vllm" or ws.inference is None or ws.inference.preset is None:
        return False
    return plan is None or plan.estimate is None or plan.estimate.node_count == 1


def probe_args(plan: Plan) -> list[str]:
    """The benchmark's flags for this plan's model and instance type."""
    assert plan.preset is not None and plan.sku is not None
    seconds, clients, prompt, output = CPU_LOAD if plan.sku.cpu_only else GPU_LOAD
    context = plan.preset.context_limit
    prompt = max(1, min(prompt, context // 2))
    output = max(1, min(output, context // 4))
    return [
        "--duration-s", str(seconds), "--max-concurrency", str(clients),
        "--input-tokens", str(prompt), "--output-tokens", str(output),
    ]  # fmt: skip


def parse(text: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The last result line (and the config line before it) of a log; None without one."""
    config: dict[str, Any] = {}
    found: tuple[dict[str, Any], dict[str, Any]] | None = None
    for line in text.splitlines():
        mark, _, rest = line.strip().partition(" ")
        if mark not in (CONFIG_MARK, RESULT_MARK):
            continue
        try:
            data = json.loads(rest.partition(" ")[2])
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        if mark == CONFIG_MARK:
            config = data
        else:
            found = (config, data)
    return found


def performance(
    config: Mapping[str, Any], result: Mapping[str, Any], pod_uid: str
) -> dict[str, Any]:
    """``status.performance`` in upstream's shape (its config keys, plus the pod measured)."""
    settings = {
        "engine": "vllm",
        "durationSec": config.get("duration_sec"),
        "inputTokens": config.get("input_tokens"),
        "outputTokens": config.get("output_tokens"),
        "maxConcurrency": config.get("max_concurrency"),
        "ttftAvgMs": result.get("ttft_avg_ms"),
        "tpotAvgMs": result.get("tpot_avg_ms"),
        "podUID": pod_uid,
    }
    return {
        "metrics": {
            METRIC: {
                "description": "stress/high-concurrency",
                "value": _text(result.get("vllm_total_tpm")),
                "unit": "tokens/min",
                "config": {k: _text(v) for k, v in settings.items() if v is not None},
            }
        }
    }


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Outcome:
    """What one pod's log said: the condition, and the performance when it held a result."""

    ok: bool
    reason: str
    message: str
    performance: dict[str, Any] | None = None

    def apply(self, facts: Facts) -> None:
        facts.set(ConditionType.BENCHMARK_COMPLETED, self.ok, self.reason, self.message)
        if self.performance is not None:
            facts.performance = self.performance


class Benchmarks:
    """Reads a Workspace's benchmark result once its leader pod is Ready.

    The log is read once per leader pod; what it said is kept and given to every later
    reconcile of that pod, so a status write that fails or is overtaken does not lose it.
    """

    def __init__(self, client: Client, cache: Cache) -> None:
        self.client = client
        self.cache = cache
        self._read: dict[str, tuple[str, Outcome]] = {}  # Workspace uid -> (pod uid, outcome)

    def forget(self, uid: str) -> None:
        self._read.pop(uid, None)

    async def record(self, ws: WorkspaceBase, plan: Plan, facts: Facts) -> None:
        """Fill ``facts`` with the result of the Ready leader pod, when not yet recorded."""
        if not enabled(ws, plan):
            return
        found = self.cache.get(POD, ws.namespace, f"{ws.name}-0")
        if found is None:
            return
        pod = to_dict(found)
        uid = str(pod["metadata"].get("uid", ""))
        if not diagnosis.is_true(pod, "Ready"):
            return
        read = self._read.get(ws.metadata.uid or "")
        if read is not None and read[0] == uid:
            read[1].apply(facts)
            return
        if _recorded_for(ws, uid):
            return
        outcome = await self._outcome(ws, pod["metadata"]["name"], uid)
        self._read[ws.metadata.uid or ""] = (uid, outcome)
        outcome.apply(facts)

    async def _outcome(self, ws: WorkspaceBase, name: str, uid: str) -> Outcome:
        try:
            text = await self._log(ws, name)
        except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
            why = getattr(exc, "message", "") or str(exc) or type(exc).__name__
            return Outcome(
                False,
                Reason.BENCHMARK_RESULT_UNAVAILABLE,
                f"cannot read the log of pod {name}: {why.splitlines()[0][:300]}",
            )
        parsed = parse(text)
        if parsed is None:
            return Outcome(
                False,
                Reason.BENCHMARK_RESULT_UNAVAILABLE,
                f"no {RESULT_MARK} line in the last {TAIL_LINES} lines of pod {name}'s log",
            )
        config, result = parsed
        try:
            rate = float(result.get("vllm_total_tpm", -1))
        except (TypeError, ValueError):
            rate = -1.0
        if rate <= 0:
            why = result.get("last_error") or "no request succeeded"
            return Outcome(
                False,
                Reason.BENCHMARK_FAILED,
                f"the benchmark in pod {name} measured nothing: {why}",
            )
        return Outcome(
            True,
            Reason.BENCHMARK_COMPLETED,
            f"{rate:g} tokens/min with {config.get('max_concurrency', '?')} concurrent "
            f"requests (pod {name})",
            performance(config, result, uid),
        )

    async def _log(self, ws: WorkspaceBase, pod: str) -> str:
        path = f"/api/v1/namespaces/{ws.namespace}/pods/{pod}/log"
        query = {"container": ws.name, "tailLines": TAIL_LINES, "limitBytes": LIMIT_BYTES}
        async with self.client.stream(path, query, read_timeout=30) as resp:
            return (await resp.read()).decode(errors="replace")


def _recorded_for(ws: WorkspaceBase, pod_uid: str) -> bool:
    """This pod's result is already in the status (an operator restarted since)."""
    perf = ws.status.performance if ws.status else None
    if perf is None:
        return False
    dumped = perf.model_dump(mode="json", by_alias=True, exclude_none=True)
    metric = (dumped.get("metrics") or {}).get(METRIC) or {}
    return bool((metric.get("config") or {}).get("podUID") == pod_uid)
