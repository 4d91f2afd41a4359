"""How many nodes and GPUs a preset needs on an instance type, and how vLLM spreads over them.

The GPU count follows upstream Kaito's vLLM estimator exactly, so a Workspace sizes the same here
as there: 84 % of each GPU is usable, 2.3 GiB of it is a fixed reserve plus one context's KV cache
split over the node's GPUs, 5 % of the rest is overhead, and the weights (+2 %) fill what remains.
Upstream then lets vLLM pick the context length at start-up; we compute it here instead, so the plan
the CLI prints is the command that really runs. CPU instance types (vLLM's CPU build) are sized
from RAM.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from kaito.presets.catalog import DTYPE_BYTES, GIB, Preset
from kaito.presets.errors import FitError
from kaito.presets.skus import Sku, byo_sku, list_skus

GPU_MEMORY_UTILIZATION = 0.84
FIXED_RESERVE_GIB = 2.3
OVERHEAD_FACTOR = 0.05
WEIGHTS_SLACK = 1.02
SIZING_CONTEXT = 2048
CONTEXT_ROUNDING = 1024

# vLLM's CPU build: weights and KV cache in float32, room for a few concurrent sequences, and RAM
# kept back for the kubelet, the OS and the Python runtime.
CPU_DTYPE_BYTES = 4
CPU_CONCURRENT_SEQUENCES = 4
CPU_RUNTIME_RESERVE_GIB = 4.0
CPU_USABLE_MEMORY_FRACTION = 0.8

INSTANCE_TYPE_FIELD = "resource.instanceType"
LABEL_SELECTOR_FIELD = "resource.labelSelector"
MAX_MODEL_LEN_FIELD = "inference.config (vllm.max-model-len)"


class Estimate(BaseModel):
    """The sizing decision: nodes, GPUs and the vLLM parallel layout and context length."""

    model_config = ConfigDict(frozen=True)

    node_count: int = Field(ge=1)
    gpus_per_node: int = Field(ge=0)
    min_gpus: int = Field(ge=0, description="GPUs the weights and one context need")
    total_gpus: int = Field(ge=0, description="GPUs requested: node_count x gpus_per_node")
    tensor_parallel_size: int = Field(ge=1)
    pipeline_parallel_size: int = Field(ge=1)
    data_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int = Field(ge=1)
    cpu_kv_cache_gib: int = Field(default=0, ge=0, description="VLLM_CPU_KVCACHE_SPACE on CPU")
    notes: tuple[str, ...] = ()

    @property
    def cpu_only(self) -> bool:
        return self.gpus_per_node == 0


def min_gpus_needed(
    weights_bytes: int,
    context_kv_bytes: int,
    gpu_memory_gib: float,
    gpus_per_node: int,
) -> int | None:
    """Upstream's GPU count for a model; None when one GPU cannot even hold the reserve.

    `context_kv_bytes` is the KV cache of one sizing-context sequence (upstream: context x
    bytes per token; a sliding-window layer stops at its window).
    """
    available = gpu_memory_gib * GIB * GPU_MEMORY_UTILIZATION
    reserve = FIXED_RESERVE_GIB * GIB + context_kv_bytes / gpus_per_node
    if available <= reserve:
        return None
    per_gpu = (available - reserve) / (1 + OVERHEAD_FACTOR)
    return int(weights_bytes * WEIGHTS_SLACK / per_gpu) + 1


def _largest_context(preset: Preset, gpu_memory_gib: float, gpus_per_replica: int) -> int:
    """The longest single sequence whose KV cache fits next to the weights on one model replica."""
    usable = (gpu_memory_gib * GPU_MEMORY_UTILIZATION - FIXED_RESERVE_GIB) * GIB * gpus_per_replica
    free = usable - (1 + OVERHEAD_FACTOR) * preset.param_bytes * WEIGHTS_SLACK
    return max(0, preset.tokens_within(free))


def _check_context(preset: Preset, max_model_len: int | None) -> int:
    if max_model_len is None:
        return min(SIZING_CONTEXT, preset.context_limit)
    if max_model_len < 1:
        raise FitError(MAX_MODEL_LEN_FIELD, f"max-model-len must be positive, got {max_model_len}")
    if max_model_len > preset.context_limit:
        raise FitError(
            MAX_MODEL_LEN_FIELD,
            f"max-model-len {max_model_len} exceeds {preset.name}'s context limit "
            f"{preset.context_limit}; use at most {preset.context_limit}",
        )
    return max_model_len


def _gpu_suggestions(preset: Preset, context: int, limit: int = 3) -> str:
    """Names of the smallest GPU instance types that hold the model on one node."""
    fitting = []
    for sku in list_skus():
        if sku.cpu_only or (preset.quantization and not sku.supports_bf16):
            continue
        need = min_gpus_needed(
            preset.param_bytes, preset.kv_cache_bytes(context), sku.gpu_memory_gib, sku.gpu_count
        )
        if need is not None and need <= sku.gpu_count:
            fitting.append(sku.name)
    if not fitting:
        return "no single-node instance type holds it; choose a size with more GPU memory"
    return "instance types that fit on one node: " + ", ".join(fitting[:limit])


def estimate(
    preset: Preset,
    sku: Sku,
    *,
    max_model_len: int | None = None,
    requested_count: int | None = None,
) -> Estimate:
    """Size `preset` on instance type `sku`; FitError names the field to change and what fits."""
    if sku.cpu_only:
        return _estimate_cpu(
            preset, sku, max_model_len=max_model_len, requested_count=requested_count
        )
    return _estimate_gpu(
        preset,
        sku,
        INSTANCE_TYPE_FIELD,
        max_model_len=max_model_len,
        requested_count=requested_count,
    )


def estimate_byo(
    preset: Preset,
    gpu_count_per_node: int,
    gpu_memory_gib: float,
    *,
    max_model_len: int | None = None,
    requested_count: int | None = None,
    compute_capability: str = "8.0",
    available_nodes: int | None = None,
) -> Estimate:
    """Size `preset` on bring-your-own nodes described by their `nvidia.com/gpu.*` labels."""
    if gpu_count_per_node < 1 or gpu_memory_gib <= 0:
        raise FitError(
            LABEL_SELECTOR_FIELD,
            "the selected nodes report no GPUs (labels nvidia.com/gpu.count and "
            "nvidia.com/gpu.memory); "
            "install the NVIDIA GPU Feature Discovery or select GPU nodes",
        )
    sku = byo_sku(gpu_count_per_node, gpu_memory_gib, compute_capability=compute_capability)
    result = _estimate_gpu(
        preset,
        sku,
        LABEL_SELECTOR_FIELD,
        max_model_len=max_model_len,
        requested_count=requested_count,
    )
    if available_nodes is not None and result.node_count > available_nodes:
        raise FitError(
            LABEL_SELECTOR_FIELD,
            f"{preset.name} needs {result.node_count} nodes of {gpu_count_per_node}x"
            f"{gpu_memory_gib:g} GiB GPUs but {available_nodes} match; label more nodes",
        )
    return result


def _estimate_gpu(
    preset: Preset,
    sku: Sku,
    field: str,
    *,
    max_model_len: int | None,
    requested_count: int | None,
) -> Estimate:
    context = _check_context(preset, max_model_len)
    where = sku.name if field == INSTANCE_TYPE_FIELD else "the selected nodes"
    if preset.quantization and not sku.supports_bf16:
        raise FitError(
            field,
            f"{preset.name} is {preset.quantization}-quantized and needs compute capability 8.0 or "
            f"newer; {where} has {sku.gpu_model} ({sku.compute_capability}); "
            + _gpu_suggestions(preset, context),
        )
    gpus_per_node = sku.gpu_count
    min_gpus = min_gpus_needed(
        preset.param_bytes, preset.kv_cache_bytes(context), sku.gpu_memory_gib, gpus_per_node
    )
    if min_gpus is None:
        raise FitError(
            field,
            f"GPU memory of {where} ({sku.gpu_memory_gib:g} GiB per GPU) is too small for "
            f"{preset.name} with a {context}-token context; " + _gpu_suggestions(preset, context),
        )
    nodes = math.ceil(min_gpus / gpus_per_node)
    notes: list[str] = []
    if requested_count is not None and requested_count != nodes:
        if requested_count < nodes:
            notes.append(
                f"resource.count {requested_count} raised to {nodes}: {preset.name} needs "
                f"{min_gpus} GPU(s) of {sku.gpu_memory_gib:g} GiB"
            )
        else:
            notes.append(
                f"resource.count {requested_count} honoured: the model is spread over "
                f"{requested_count} nodes (it needs {nodes})"
            )
            nodes = requested_count

    tensor, pipeline, data = gpus_per_node, nodes, 1
    # Upstream's rule: a model under half of one GPU runs one copy per GPU (data parallel).
    small = preset.param_bytes * 2 < sku.gpu_memory_gib * GIB
    if (
        nodes == 1
        and gpus_per_node > 1
        and small
        and _largest_context(preset, sku.gpu_memory_gib, 1) >= context
    ):
        tensor, data = 1, gpus_per_node

    if max_model_len is None:
        longest = _largest_context(preset, sku.gpu_memory_gib, tensor * pipeline)
        if longest < preset.context_limit:
            longest -= longest % CONTEXT_ROUNDING
        context = max(context, min(preset.context_limit, longest))

    return Estimate(
        node_count=nodes,
        gpus_per_node=gpus_per_node,
        min_gpus=min_gpus,
        total_gpus=nodes * gpus_per_node,
        tensor_parallel_size=tensor,
        pipeline_parallel_size=pipeline,
        data_parallel_size=data,
        max_model_len=context,
        notes=tuple(notes),
    )


def cpu_memory_needed_gib(preset: Preset, context: int) -> tuple[float, int]:
    """(GiB of RAM needed, GiB of KV cache) for vLLM's CPU build serving `preset` in float32."""
    widen = CPU_DTYPE_BYTES / DTYPE_BYTES[preset.dtype]
    weights = preset.param_bytes * widen * WEIGHTS_SLACK / GIB
    kv_bytes = preset.kv_cache_bytes(context) * widen * CPU_CONCURRENT_SEQUENCES
    kv_gib = max(1, math.ceil(kv_bytes / GIB))
    return weights + kv_gib + CPU_RUNTIME_RESERVE_GIB, kv_gib


def _estimate_cpu(
    preset: Preset, sku: Sku, *, max_model_len: int | None, requested_count: int | None
) -> Estimate:
    context = _check_context(preset, max_model_len)
    if "vllm-cpu" not in preset.runtimes:
        reason = (
            f"{preset.quantization}-quantized"
            if preset.quantization
            else "not supported by vllm-cpu"
        )
        raise FitError(
            INSTANCE_TYPE_FIELD,
            f"{sku.name} has no GPU and {preset.name} is {reason}; "
            + _gpu_suggestions(preset, context),
        )
    needed, kv_gib = cpu_memory_needed_gib(preset, context)
    usable = sku.memory_gib * CPU_USABLE_MEMORY_FRACTION
    if needed > usable:
        bigger = [
            s.name
            for s in list_skus()
            if s.cpu_only and s.memory_gib * CPU_USABLE_MEMORY_FRACTION >= needed
        ]
        hint = (
            f"CPU instance types that fit: {', '.join(bigger[:3])}"
            if bigger
            else _gpu_suggestions(preset, context)
        )
        raise FitError(
            INSTANCE_TYPE_FIELD,
            f"{preset.name} needs about {needed:.1f} GiB of RAM on CPU (float32 weights and KV "
            f"cache) but {sku.name} offers {usable:.1f} of {sku.memory_gib} GiB; {hint}",
        )
    notes = []
    if requested_count is not None and requested_count > 1:
        notes.append(
            f"resource.count {requested_count} lowered to 1: vllm-cpu serves from one node"
        )
    return Estimate(
        node_count=1,
        gpus_per_node=0,
        min_gpus=0,
        total_gpus=0,
        tensor_parallel_size=1,
        pipeline_parallel_size=1,
        max_model_len=context,
        cpu_kv_cache_gib=kv_gib,
        notes=tuple(notes),
    )
