"""The post-load benchmark: when it runs, its probe, and its log line read into status."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from kaito.api import WorkspaceBase, parse_workspace
from kaito.api.constants import ConditionType
from kaito.controllers import benchmark
from kaito.controllers import objects as o
from kaito.controllers.common import Facts
from kaito.presets.plan import Plan, plan_workspace
from kaito.runtime.errors import ApiError

CONFIG = '{"duration_sec": 30, "input_tokens": 1024, "output_tokens": 128, "max_concurrency": 16}'
RESULT = '{"vllm_total_tpm": 52000.5, "ttft_avg_ms": 81.2, "tpot_avg_ms": 9.5}'


def workspace(
    annotations: dict[str, str] | None = None,
    instance_type: str = "Standard_NC6s_v3",
    status: dict[str, Any] | None = None,
) -> tuple[WorkspaceBase, Plan]:
    doc: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "ns", "uid": "ws-uid"},
        "resource": {"instanceType": instance_type, "labelSelector": {}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    if annotations:
        doc["metadata"]["annotations"] = annotations
    if status:
        doc["status"] = status
    return cast(WorkspaceBase, parse_workspace(doc)), plan_workspace(doc)


def test_on_by_default_for_vllm_presets_off_by_the_annotation_or_another_runtime() -> None:
    ws, plan = workspace()
    assert benchmark.enabled(ws, plan)
    off, _ = workspace({"kaito.sh/disable-benchmark": "True"})
    assert not benchmark.enabled(off, plan)
    tfs, _ = workspace({"kaito.sh/runtime": "transformers"})
    assert not benchmark.enabled(tfs, plan)
    still_on, _ = workspace({"kaito.sh/disable-benchmark": "false"})
    assert benchmark.enabled(still_on, plan)


def test_a_multi_node_model_keeps_the_plain_health_startup_probe() -> None:
    ws, plan = workspace()
    assert plan.estimate is not None
    several = plan.model_copy(
        update={"estimate": plan.estimate.model_copy(update={"node_count": 2})}
    )
    assert not benchmark.enabled(ws, several)


def test_the_probe_load_fits_the_model_and_the_size() -> None:
    _, gpu = workspace()
    args = benchmark.probe_args(gpu)
    assert args[args.index("--duration-s") + 1] == "30"
    assert args[args.index("--input-tokens") + 1] == "1024"  # phi-3-mini-4k: 4096 context
    _, cpu = workspace(instance_type="Standard_D16s_v5")
    args = benchmark.probe_args(cpu)
    assert args[args.index("--duration-s") + 1] == "10"
    assert args[args.index("--max-concurrency") + 1] == "2"


def test_the_probe_replaces_the_health_startup_probe() -> None:
    owner = o.Owner(name="ws", namespace="ns", uid="u", api_version="kaito.sh/v1beta1")
    work = o.InferenceWorkload(
        owner=owner, replicas=1, image="img", command=["python3"], args=[], env={},
        gpus_per_node=1, gpu_resource="nvidia.com/gpu", revision="1",
        node_selector_labels={}, weights_bytes=8 << 30,
        benchmark_args=["--duration-s", "30", "--max-concurrency", "16"],
    )  # fmt: skip
    probe = o.statefulset(work)["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    command = probe["exec"]["command"]
    assert command[:3] == ["python3", "-m", "serving.benchmark"]
    assert command[command.index("--port") + 1] == "5000"
    assert probe["timeoutSeconds"] == 150 and probe["failureThreshold"] >= 180
    plain = o.statefulset(dataclasses.replace(work, benchmark_args=None))
    startup = plain["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"


def test_parse_takes_the_last_result_and_the_config_before_it() -> None:
    text = "\n".join(
        [
            "INFO starting",
            f"KAITO_BENCHMARK_CONFIG 1 {CONFIG}",
            'KAITO_BENCHMARK_RESULT 2 {"vllm_total_tpm": 1}',
            "KAITO_BENCHMARK_RESULT 3 not json",
            f"KAITO_BENCHMARK_RESULT 4 {RESULT}",
            "INFO GET /health 200",
        ]
    )
    found = benchmark.parse(text)
    assert found is not None
    config, result = found
    assert config["max_concurrency"] == 16 and result["vllm_total_tpm"] == 52000.5
    assert benchmark.parse("INFO nothing here\nKAITO_BENCHMARK_RESULT 1 [1]") is None


def test_performance_has_upstreams_shape() -> None:
    config, result = benchmark.parse(f"KAITO_BENCHMARK_CONFIG 1 {CONFIG}\n"
                                     f"KAITO_BENCHMARK_RESULT 2 {RESULT}")  # fmt: skip
    perf = benchmark.performance(config, result, "pod-uid")
    metric = perf["metrics"]["peakTokensPerMinute"]
    assert metric["value"] == "52000.5" and metric["unit"] == "tokens/min"
    assert metric["description"] == "stress/high-concurrency"
    assert metric["config"] == {
        "engine": "vllm", "durationSec": "30", "inputTokens": "1024", "outputTokens": "128",
        "maxConcurrency": "16", "ttftAvgMs": "81.2", "tpotAvgMs": "9.5", "podUID": "pod-uid",
    }  # fmt: skip
    # the API's own model takes it as it is
    ws, _ = workspace(status={"performance": perf})
    assert ws.status is not None and ws.status.performance is not None


class Cache:
    def __init__(self, pod: dict[str, Any] | None) -> None:
        self.pod = pod

    def get(self, *_: Any) -> dict[str, Any] | None:
        return self.pod


class Response:
    def __init__(self, body: str) -> None:
        self.body = body

    async def read(self) -> bytes:
        return self.body.encode()


class Client:
    def __init__(self, body: str | Exception) -> None:
        self.body = body
        self.reads = 0

    @contextlib.asynccontextmanager
    async def stream(self, path: str, query: dict[str, Any], **_: Any) -> AsyncIterator[Response]:
        self.reads += 1
        assert path == "/api/v1/namespaces/ns/pods/ws-0/log" and query["container"] == "ws"
        if isinstance(self.body, Exception):
            raise self.body
        yield Response(self.body)


def ready_pod(uid: str = "pod-1") -> dict[str, Any]:
    return {
        "metadata": {"name": "ws-0", "namespace": "ns", "uid": uid},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


async def record(client: Client, pod: dict[str, Any] | None, **kw: Any) -> tuple[Facts, Any]:
    bench = benchmark.Benchmarks(cast(Any, client), cast(Any, Cache(pod)))
    ws, plan = workspace(**kw)
    facts = Facts()
    await bench.record(ws, plan, facts)
    return facts, bench


async def test_the_result_line_becomes_status_performance_read_once_per_pod() -> None:
    client = Client(f"KAITO_BENCHMARK_CONFIG 1 {CONFIG}\nKAITO_BENCHMARK_RESULT 2 {RESULT}\n")
    facts, bench = await record(client, ready_pod())
    status, reason, message = facts.conditions[ConditionType.BENCHMARK_COMPLETED]
    assert (status, reason) == ("True", "BenchmarkCompleted")
    assert "52000.5 tokens/min with 16 concurrent requests" in message
    assert facts.performance is not None
    again = Facts()
    ws, plan = workspace()
    await bench.record(ws, plan, again)  # the same pod: its log is not read twice, but what
    assert client.reads == 1  # it said is given again (a failed status write loses nothing)
    assert again.conditions == facts.conditions and again.performance == facts.performance
    # an operator restarted: the status already holds this pod's result
    recorded, _ = await record(client, ready_pod(), status={"performance": facts.performance})
    assert client.reads == 1 and not recorded.conditions


@pytest.mark.parametrize(
    ("body", "reason", "words"),
    [
        ("INFO only\n", "BenchmarkResultUnavailable", "no KAITO_BENCHMARK_RESULT line"),
        (
            'KAITO_BENCHMARK_RESULT 1 {"vllm_total_tpm": -1, "last_error": "HTTP 500"}',
            "BenchmarkFailed",
            "measured nothing: HTTP 500",
        ),
        (
            ApiError(403, "Forbidden", 'pods "ws-0" is forbidden: cannot get pods/log'),
            "BenchmarkResultUnavailable",
            "cannot read the log of pod ws-0: pods",
        ),
    ],
)
async def test_no_result_says_why(body: str | Exception, reason: str, words: str) -> None:
    facts, _ = await record(Client(body), ready_pod())
    status, got, message = facts.conditions[ConditionType.BENCHMARK_COMPLETED]
    assert (status, got) == ("False", reason) and words in message, message
    assert facts.performance is None


async def test_nothing_is_read_before_the_pod_is_ready_or_when_disabled() -> None:
    client = Client(f"KAITO_BENCHMARK_RESULT 2 {RESULT}")
    pending = ready_pod()
    pending["status"]["conditions"][0]["status"] = "False"
    facts, _ = await record(client, pending)
    facts_off, _ = await record(
        client, ready_pod(), annotations={"kaito.sh/disable-benchmark": "true"}
    )
    missing, _ = await record(client, None)
    assert client.reads == 0
    assert not (facts.conditions or facts_off.conditions or missing.conditions)
