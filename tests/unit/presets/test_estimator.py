"""The node estimator against upstream Kaito's formula and figures, computed here independently."""

from __future__ import annotations

import itertools
import math

import pytest

from kaito.presets import (
    FitError,
    estimate,
    estimate_byo,
    get_preset,
    get_sku,
    list_presets,
    list_skus,
    sku_from_node_labels,
)

GIB = 2**30

# Upstream's parameter sizes: weights (GiB, catalog modelFileSize) and KV-cache bytes per token
# (kaito.md §4.2, v0.12, all 60 curated models; falcon from the v0.10 hand-written presets, with
# the KV size of its real attention shape, and the tiny test model from its LlamaConfig in float32).
UPSTREAM_SIZES: dict[str, tuple[float, int]] = {
    "phi-4": (27.31, 204800),
    "phi-4-mini-instruct": (7.15, 131072),
    "deepseek-r1-distill-llama-8b": (14.96, 131072),
    "deepseek-r1-distill-qwen-14b": (27.51, 196608),
    "phi-3-mini-4k-instruct": (7.12, 393216),
    "phi-3-mini-128k-instruct": (7.12, 393216),
    "phi-3-medium-4k-instruct": (26.00, 204800),
    "phi-3-medium-128k-instruct": (26.00, 204800),
    "phi-3.5-mini-instruct": (7.12, 393216),
    "qwen2.5-coder-7b-instruct": (14.19, 57344),
    "qwen2.5-coder-32b-instruct": (61.03, 262144),
    "gpt-oss-20b": (25.63, 49152),
    "gpt-oss-120b": (121.54, 73728),
    "llama-3.1-8b-instruct": (14.96, 131072),
    "llama-3.3-70b-instruct": (131.42, 327680),
    "mistral-7b": (13.50, 131072),
    "mistral-7b-instruct": (13.50, 131072),
    "ministral-3-3b-instruct": (4.35, 106496),
    "ministral-3-8b-instruct": (9.70, 139264),
    "ministral-3-14b-instruct": (14.65, 163840),
    "gemma-3-4b-instruct": (8.01, 139264),
    "gemma-3-27b-instruct": (51.10, 507904),
    "deepseek-r1-0528": (641.30, 70272),
    "deepseek-v3-0324": (641.30, 70272),
    "mistral-large-3-675b-instruct": (634.70, 70272),
    "nvidia-nemotron-3-super-120b-a12b-bf16": (230.25, 90112),
    "nemotron-cascade-2-30b-a3b": (58.82, 53248),
    "nvidia-nemotron-3-nano-30b-a3b-bf16": (58.82, 53248),
    "nvidia-nemotron-nano-12b-v2-vl-bf16": (24.55, 253952),
    "nvidia-nemotron-nano-9b-v2": (16.56, 229376),
    "nvidia-nemotron-3-nano-4b-bf16": (7.40, 172032),
    "qwen3-8b-awq": (5.68, 147456),
    "gemma-4-31b-it": (58.25, 983040),
    "gemma-4-26b-a4b-it": (48.07, 245760),
    "gemma-4-e4b-it": (14.89, 86016),
    "gemma-4-e2b-it": (9.54, 35840),
    "mistral-small-4-119b-2603": (112.63, 23040),
    "mistral-small-4-119b-2603-nvfp4": (65.95, 23040),
    "qwen3.5-2b": (4.24, 49152),
    "qwen3.5-4b": (8.68, 131072),
    "qwen3.5-9b": (17.98, 131072),
    "qwen3.5-122b-a10b-gptq-int4": (73.47, 98304),
    "qwen3.5-122b-a10b": (232.99, 98304),
    "qwen3.6-35b-a3b-fp8": (34.90, 81920),
    "qwen3.6-35b-a3b": (66.97, 81920),
    "qwen3.6-27b": (51.75, 262144),
    "qwen3.5-397b-a17b-gptq-int4": (219.56, 122880),
    "kimi-k2.5": (554.32, 70272),
    "kimi-k2.6": (554.32, 70272),
    "minimax-m2.7": (214.34, 253952),
    "mistral-medium-3.5-128b": (124.43, 360448),
    "deepseek-v4-flash-0731": (155.43, 88064),
    "deepseek-v4-pro": (805.34, 124928),
    "gemma-4-12b-it": (22.28, 393216),
    "glm-5.2-fp8": (703.75, 89856),
    "kimi-k2.7-code": (554.32, 70272),
    "nvidia-nemotron-3-ultra-550b-a55b-nvfp4": (328.13, 110592),
    "deepseek-v3.2": (642.14, 70272),
    "granite-4.1-8b": (16.38, 163840),
    "qwen3.8-27b": (51.75, 262144),
    "falcon-7b": (13.44, 8192),
    "falcon-7b-instruct": (13.44, 8192),
    "falcon-40b": (77.9, 122880),
    "falcon-40b-instruct": (77.9, 122880),
    "tiny-llama-test": (2230784 / GIB, 2 * 2 * 32 * 2 * 4),
}

GPU_SKUS = [s for s in list_skus() if not s.cpu_only]


def expected_nodes(
    weights_gib: float, bpt: int, per_gpu_gib: float, gpus: int, ctx: int
) -> int | None:
    """Upstream's estimator, written out again: None means 'GPU too small'."""
    avail = per_gpu_gib * 0.84
    reserve = 2.3 + ctx * bpt / GIB / gpus
    if avail <= reserve:
        return None
    min_gpus = int(weights_gib * 1.02 / ((avail - reserve) / 1.05)) + 1
    return math.ceil(min_gpus / gpus)


def test_catalog_covers_the_sizes_table() -> None:
    assert {p.name for p in list_presets()} == set(UPSTREAM_SIZES)


@pytest.mark.parametrize("name", sorted(UPSTREAM_SIZES))
def test_catalog_sizes_match_upstream(name: str) -> None:
    preset = get_preset(name)
    assert preset is not None
    weights, bpt = UPSTREAM_SIZES[name]
    assert preset.param_bytes == pytest.approx(weights * GIB, abs=1)
    assert preset.kv_bytes_per_token == bpt


@pytest.mark.parametrize(
    ("name", "sku_name"),
    list(itertools.product(sorted(UPSTREAM_SIZES), [s.name for s in GPU_SKUS])),
)
def test_node_count_every_preset_every_gpu_sku(name: str, sku_name: str) -> None:
    preset, sku = get_preset(name), get_sku(sku_name)
    assert preset is not None and sku is not None
    weights, bpt = UPSTREAM_SIZES[name]
    ctx = min(2048, preset.context_limit)
    expected = expected_nodes(weights, bpt, sku.gpu_memory_gib, sku.gpu_count, ctx)
    if preset.quantization and float(sku.compute_capability) < 8.0:
        expected = None
    if expected is None:
        with pytest.raises(FitError, match=r"^resource\.instanceType: "):
            estimate(preset, sku, max_model_len=ctx)
        return
    result = estimate(preset, sku, max_model_len=ctx)
    assert result.node_count == expected
    assert result.gpus_per_node == sku.gpu_count
    assert result.total_gpus == expected * sku.gpu_count
    assert result.pipeline_parallel_size == expected
    assert result.tensor_parallel_size * result.data_parallel_size == sku.gpu_count
    assert math.ceil(result.min_gpus / sku.gpu_count) == expected
    # The default (no max_model_len) sizes at the same 2048-token context.
    assert estimate(preset, sku).node_count == expected


# Upstream's own replay (kaito.md §4.2): nodes and parallelism on five representative SKUs,
# for every model on its curated list.
UPSTREAM_COLUMNS = [
    "Standard_NV36ads_A10_v5",
    "Standard_NC24ads_A100_v4",
    "Standard_NC96ads_A100_v4",
    "Standard_ND96isr_H100_v5",
    "Standard_ND96isr_H200_v5",
]
UPSTREAM_TABLE = {
    "phi-4": "2 TP1xPP2|1 TP1|1 DP4|1 DP8|1 DP8",
    "phi-4-mini-instruct": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "deepseek-r1-distill-llama-8b": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "deepseek-r1-distill-qwen-14b": "2 TP1xPP2|1 TP1|1 DP4|1 DP8|1 DP8",
    "phi-3-mini-4k-instruct": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "phi-3-mini-128k-instruct": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "phi-3-medium-4k-instruct": "2 TP1xPP2|1 TP1|1 DP4|1 DP8|1 DP8",
    "phi-3-medium-128k-instruct": "2 TP1xPP2|1 TP1|1 DP4|1 DP8|1 DP8",
    "phi-3.5-mini-instruct": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "qwen2.5-coder-7b-instruct": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "qwen2.5-coder-32b-instruct": "4 TP1xPP4|2 TP1xPP2|1 TP4|1 TP8|1 DP8",
    "gpt-oss-20b": "2 TP1xPP2|1 TP1|1 DP4|1 DP8|1 DP8",
    "gpt-oss-120b": "8 TP1xPP8|3 TP1xPP3|1 TP4|1 TP8|1 TP8",
    "llama-3.1-8b-instruct": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "llama-3.3-70b-instruct": "9 TP1xPP9|3 TP1xPP3|1 TP4|1 TP8|1 TP8",
    "mistral-7b": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "mistral-7b-instruct": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "ministral-3-3b-instruct": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "ministral-3-8b-instruct": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "ministral-3-14b-instruct": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "gemma-3-4b-instruct": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "gemma-3-27b-instruct": "4 TP1xPP4|1 TP1|1 TP4|1 TP8|1 DP8",
    "deepseek-r1-0528": "39 TP1xPP39|11 TP1xPP11|3 TP4xPP3|2 TP8xPP2|1 TP8",
    "deepseek-v3-0324": "39 TP1xPP39|11 TP1xPP11|3 TP4xPP3|2 TP8xPP2|1 TP8",
    "mistral-large-3-675b-instruct": "39 TP1xPP39|11 TP1xPP11|3 TP4xPP3|2 TP8xPP2|1 TP8",
    "nvidia-nemotron-3-super-120b-a12b-bf16": "14 TP1xPP14|4 TP1xPP4|1 TP4|1 TP8|1 TP8",
    "nemotron-cascade-2-30b-a3b": "4 TP1xPP4|1 TP1|1 TP4|1 TP8|1 DP8",
    "nvidia-nemotron-3-nano-30b-a3b-bf16": "4 TP1xPP4|1 TP1|1 TP4|1 TP8|1 DP8",
    "nvidia-nemotron-nano-12b-v2-vl-bf16": "2 TP1xPP2|1 TP1|1 DP4|1 DP8|1 DP8",
    "nvidia-nemotron-nano-9b-v2": "2 TP1xPP2|1 TP1|1 DP4|1 DP8|1 DP8",
    "nvidia-nemotron-3-nano-4b-bf16": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "qwen3-8b-awq": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "gemma-4-31b-it": "4 TP1xPP4|1 TP1|1 TP4|1 TP8|1 DP8",
    "gemma-4-26b-a4b-it": "3 TP1xPP3|1 TP1|1 TP4|1 TP8|1 DP8",
    "gemma-4-e4b-it": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "gemma-4-e2b-it": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "mistral-small-4-119b-2603": "7 TP1xPP7|2 TP1xPP2|1 TP4|1 TP8|1 TP8",
    "mistral-small-4-119b-2603-nvfp4": "4 TP1xPP4|2 TP1xPP2|1 TP4|1 TP8|1 DP8",
    "qwen3.5-2b": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "qwen3.5-4b": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "qwen3.5-9b": "2 TP1xPP2|1 TP1|1 DP4|1 DP8|1 DP8",
    "qwen3.5-122b-a10b-gptq-int4": "5 TP1xPP5|2 TP1xPP2|1 TP4|1 TP8|1 TP8",
    "qwen3.5-122b-a10b": "15 TP1xPP15|4 TP1xPP4|1 TP4|1 TP8|1 TP8",
    "qwen3.6-35b-a3b-fp8": "3 TP1xPP3|1 TP1|1 DP4|1 DP8|1 DP8",
    "qwen3.6-35b-a3b": "5 TP1xPP5|2 TP1xPP2|1 TP4|1 TP8|1 DP8",
    "qwen3.6-27b": "4 TP1xPP4|1 TP1|1 TP4|1 TP8|1 DP8",
    "qwen3.5-397b-a17b-gptq-int4": "14 TP1xPP14|4 TP1xPP4|1 TP4|1 TP8|1 TP8",
    "kimi-k2.5": "34 TP1xPP34|10 TP1xPP10|3 TP4xPP3|2 TP8xPP2|1 TP8",
    "kimi-k2.6": "34 TP1xPP34|10 TP1xPP10|3 TP4xPP3|2 TP8xPP2|1 TP8",
    "minimax-m2.7": "14 TP1xPP14|4 TP1xPP4|1 TP4|1 TP8|1 TP8",
    "mistral-medium-3.5-128b": "8 TP1xPP8|3 TP1xPP3|1 TP4|1 TP8|1 TP8",
    "deepseek-v4-flash-0731": "10 TP1xPP10|3 TP1xPP3|1 TP4|1 TP8|1 TP8",
    "deepseek-v4-pro": "49 TP1xPP49|14 TP1xPP14|4 TP4xPP4|2 TP8xPP2|1 TP8",
    "gemma-4-12b-it": "2 TP1xPP2|1 TP1|1 DP4|1 DP8|1 DP8",
    "glm-5.2-fp8": "43 TP1xPP43|12 TP1xPP12|3 TP4xPP3|2 TP8xPP2|1 TP8",
    "kimi-k2.7-code": "34 TP1xPP34|10 TP1xPP10|3 TP4xPP3|2 TP8xPP2|1 TP8",
    "nvidia-nemotron-3-ultra-550b-a55b-nvfp4": "20 TP1xPP20|6 TP1xPP6|2 TP4xPP2|1 TP8|1 TP8",
    "deepseek-v3.2": "39 TP1xPP39|11 TP1xPP11|3 TP4xPP3|2 TP8xPP2|1 TP8",
    "granite-4.1-8b": "1 TP1|1 TP1|1 DP4|1 DP8|1 DP8",
    "qwen3.8-27b": "4 TP1xPP4|1 TP1|1 TP4|1 TP8|1 DP8",
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_TABLE))
def test_matches_upstream_replay(name: str) -> None:
    preset = get_preset(name)
    assert preset is not None
    got = []
    for sku_name in UPSTREAM_COLUMNS:
        sku = get_sku(sku_name)
        assert sku is not None
        e = estimate(preset, sku)
        if e.data_parallel_size > 1:
            layout = f"DP{e.data_parallel_size}"
        elif e.pipeline_parallel_size > 1:
            layout = f"TP{e.tensor_parallel_size}xPP{e.pipeline_parallel_size}"
        else:
            layout = f"TP{e.tensor_parallel_size}"
        got.append(f"{e.node_count} {layout}")
    assert "|".join(got) == UPSTREAM_TABLE[name]


def test_seed_manifest_fits_one_v100() -> None:
    preset, sku = get_preset("phi-3-mini-4k-instruct"), get_sku("Standard_NC6s_v3")
    assert preset is not None and sku is not None
    e = estimate(preset, sku)
    assert (e.node_count, e.total_gpus, e.max_model_len) == (1, 1, 4096)


def test_context_fills_what_the_gpu_holds() -> None:
    preset, sku = get_preset("phi-3-mini-128k-instruct"), get_sku("Standard_NC6s_v3")
    assert preset is not None and sku is not None
    free = (16 * 0.84 - 2.3) * GIB - 1.05 * 1.02 * preset.param_bytes
    longest = int(free // 393216)
    assert estimate(preset, sku).max_model_len == longest - longest % 1024 == 9216


def test_too_small_gpu_names_field_and_what_fits() -> None:
    preset, sku = get_preset("phi-3-mini-128k-instruct"), get_sku("Standard_NC6s_v3")
    assert preset is not None and sku is not None
    with pytest.raises(FitError) as info:
        estimate(preset, sku, max_model_len=131072)
    err = info.value
    assert err.field == "resource.instanceType"
    assert "too small" in str(err) and "16 GiB per GPU" in str(err)
    suggested = str(err).split("fit on one node: ")[1].split(", ")
    for name in suggested:
        fits = get_sku(name)
        assert fits is not None
        assert estimate(preset, fits, max_model_len=131072).node_count == 1


def test_quantized_model_needs_ampere() -> None:
    preset, sku = get_preset("gpt-oss-20b"), get_sku("Standard_NC6s_v3")
    assert preset is not None and sku is not None
    with pytest.raises(FitError, match=r"compute capability 8\.0"):
        estimate(preset, sku)


def test_context_beyond_model_limit_is_rejected() -> None:
    preset, sku = get_preset("phi-3-mini-4k-instruct"), get_sku("Standard_NC24ads_A100_v4")
    assert preset is not None and sku is not None
    with pytest.raises(FitError, match=r"^inference\.config .*at most 4096"):
        estimate(preset, sku, max_model_len=8192)


def test_requested_count_is_raised_or_honoured() -> None:
    preset, sku = get_preset("phi-4"), get_sku("Standard_NV36ads_A10_v5")
    assert preset is not None and sku is not None
    raised = estimate(preset, sku, requested_count=1)
    assert raised.node_count == 2 and "raised to 2" in raised.notes[0]
    more = estimate(preset, sku, requested_count=3)
    assert (more.node_count, more.pipeline_parallel_size) == (3, 3)


def test_cpu_sku_serves_small_models_without_gpus() -> None:
    preset, sku = get_preset("tiny-llama-test"), get_sku("Standard_D4s_v5")
    assert preset is not None and sku is not None
    e = estimate(preset, sku)
    assert (e.node_count, e.gpus_per_node, e.total_gpus, e.min_gpus) == (1, 0, 0, 0)
    assert e.max_model_len == 512 and e.cpu_kv_cache_gib == 1


def test_cpu_sku_too_small_suggests_a_bigger_one() -> None:
    preset, sku = get_preset("phi-4"), get_sku("Standard_D4s_v5")
    assert preset is not None and sku is not None
    with pytest.raises(FitError, match=r"^resource\.instanceType: .*Standard_D32s_v5"):
        estimate(preset, sku)
    bigger = get_sku("Standard_D32s_v5")
    assert bigger is not None and estimate(preset, bigger).total_gpus == 0


def test_quantized_model_cannot_run_on_cpu() -> None:
    preset, sku = get_preset("gpt-oss-20b"), get_sku("Standard_D64s_v5")
    assert preset is not None and sku is not None
    with pytest.raises(FitError, match="no GPU"):
        estimate(preset, sku)


def test_byo_sizing_from_node_labels() -> None:
    labels = {"nvidia.com/gpu.count": "1", "nvidia.com/gpu.memory": "24576"}
    sku = sku_from_node_labels(labels)
    assert sku is not None and (sku.gpu_count, sku.gpu_memory_gib) == (1, 24)
    preset = get_preset("phi-4")
    a10 = get_sku("Standard_NV36ads_A10_v5")
    assert preset is not None and a10 is not None
    byo = estimate_byo(preset, 1, 24)
    assert byo.node_count == estimate(preset, a10).node_count == 2
    with pytest.raises(FitError, match=r"^resource\.labelSelector: .*needs 2 nodes.*1 match"):
        estimate_byo(preset, 1, 24, available_nodes=1)
    with pytest.raises(FitError, match=r"^resource\.labelSelector: .*no GPUs"):
        estimate_byo(preset, 0, 0)


def test_node_labels_round_mib_to_gib_and_reject_missing() -> None:
    sku = sku_from_node_labels(
        {
            "nvidia.com/gpu.count": "8",
            "nvidia.com/gpu.memory": "81559",
            "nvidia.com/cuda.compute.major": "7",
            "nvidia.com/cuda.compute.minor": "0",
        }
    )
    assert sku is not None and sku.gpu_memory_gib == 80 and not sku.supports_bf16
    assert sku_from_node_labels({"nvidia.com/gpu.count": "1"}) is None
    assert sku_from_node_labels({"nvidia.com/gpu.count": "x", "nvidia.com/gpu.memory": "1"}) is None
