"""The serving container's command, arguments and environment for a sized preset.

The contract with the launcher in serving/: the command is `python3 -m serving`; the arguments are
vLLM OpenAI-server flags it passes through, plus two of its own (`--adapter-strength NAME=FLOAT`,
repeated, and `--config PATH`). The order is fixed (unlike upstream's map order), so the same
Workspace always yields the same pod spec and golden files can pin it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kaito.presets.catalog import Preset
from kaito.presets.errors import SpecError
from kaito.presets.estimator import GPU_MEMORY_UTILIZATION, Estimate
from kaito.presets.skus import Sku

LAUNCH_COMMAND = ("python3", "-m", "serving")
SERVING_PORT = 5000
WEIGHTS_DIR = "/workspace/weights"
ADAPTER_DIR = "/mnt/adapter"
CONFIG_PATH = "/mnt/config/inference_config.yaml"
CHAT_TEMPLATE_DIR = "/workspace/chat_templates"
DEFAULT_MAX_LORA_RANK = 64
# vLLM on an A10 needs a little more head-room for CUDA graphs (upstream uses 0.82 there).
A10_GPU_MEMORY_UTILIZATION = 0.82

ADAPTERS_FIELD = "inference.adapters"
CONFIG_FIELD = "inference.config"
# Flags a user config may not override: the Service, probes and weights mount depend on them.
PROTECTED_FLAGS = frozenset({"port", "host", "model"})

Flag = tuple[str, str | list[str] | None]


class AdapterSpec(BaseModel):
    """A LoRA adapter mounted at /mnt/adapter/<name>, applied with `strength`."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    strength: float = Field(default=1.0, ge=0.0, le=1.0)


class Launch(BaseModel):
    """What the inference container runs."""

    model_config = ConfigDict(frozen=True)

    command: list[str]
    args: list[str]
    env: dict[str, str]


def serving_dtype(preset: Preset, sku: Sku) -> str:
    """float32 on CPUs and for float32 models; float16 where the GPU lacks bfloat16 (V100, T4)."""
    if sku.cpu_only or preset.dtype == "float32":
        return "float32"
    if preset.dtype == "auto":
        return "auto"
    if preset.dtype == "bfloat16" and not sku.supports_bf16:
        return "float16"
    return preset.dtype


def user_vllm_section(user_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `vllm:` mapping of a user's inference_config.yaml, keys as dashed flag names."""
    if not user_config:
        return {}
    section = user_config.get("vllm") or {}
    if not isinstance(section, Mapping):
        raise SpecError(
            f"{CONFIG_FIELD} (vllm)", "the vllm: section must be a mapping of flag: value"
        )
    return {str(key).strip().lstrip("-").replace("_", "-"): value for key, value in section.items()}


def user_max_model_len(user_config: Mapping[str, Any] | None) -> int | None:
    """max-model-len from the user's vllm: section, for sizing before the launch is built."""
    value = user_vllm_section(user_config).get("max-model-len")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise SpecError(
            f"{CONFIG_FIELD} (vllm.max-model-len)", f"expected a positive integer, got {value!r}"
        )
    return int(value)


def _render(value: Any, key: str) -> str | list[str] | None:
    """A flag's value: None means a bare switch; lists become several values."""
    if value is True or value is None or value == "":
        return None
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    if isinstance(value, Mapping):
        raise SpecError(
            f"{CONFIG_FIELD} (vllm.{key})", "nested mappings are not vLLM flags; use a JSON string"
        )
    return str(value)


def _model_flags(preset: Preset, sku: Sku, estimate: Estimate, port: int) -> list[Flag]:
    flags: list[Flag] = [("model", preset.model_ref)]
    if not preset.uses_local_weights:
        if preset.revision and preset.revision != "main":
            flags.append(("revision", preset.revision))
        flags.append(("download-dir", WEIGHTS_DIR))
    flags += [
        ("served-model-name", preset.name),
        ("dtype", serving_dtype(preset, sku)),
        ("max-model-len", str(estimate.max_model_len)),
    ]
    if not sku.cpu_only:
        utilization = (
            A10_GPU_MEMORY_UTILIZATION if sku.gpu_model == "NVIDIA A10" else GPU_MEMORY_UTILIZATION
        )
        flags.append(("gpu-memory-utilization", f"{utilization:g}"))
    flags += [
        ("tensor-parallel-size", str(estimate.tensor_parallel_size)),
        ("pipeline-parallel-size", str(estimate.pipeline_parallel_size)),
    ]
    if estimate.data_parallel_size > 1:
        flags.append(("data-parallel-size", str(estimate.data_parallel_size)))
    if estimate.pipeline_parallel_size > 1:
        flags.append(("distributed-executor-backend", "ray"))
    flags.append(("port", str(port)))
    if preset.chat_template:
        flags.append(("chat-template", f"{CHAT_TEMPLATE_DIR}/{preset.chat_template}"))
    if preset.tool_parser:
        flags += [("enable-auto-tool-choice", None), ("tool-call-parser", preset.tool_parser)]
    if preset.reasoning_parser:
        flags.append(("reasoning-parser", preset.reasoning_parser))
    flags += [
        (key, _render(value, key)) for key, value in preset.extra_args.items() if value is not False
    ]
    return flags


def _adapter_flags(preset: Preset, adapters: Sequence[AdapterSpec]) -> list[Flag]:
    if not adapters:
        return []
    if not preset.supports_lora:
        raise SpecError(
            ADAPTERS_FIELD, f"{preset.name} does not support LoRA adapters; remove them"
        )
    names = [adapter.name for adapter in adapters]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SpecError(
            ADAPTERS_FIELD, f"adapter names must be unique; repeated: {', '.join(duplicates)}"
        )
    return [
        ("enable-lora", None),
        ("max-lora-rank", str(DEFAULT_MAX_LORA_RANK)),
        ("max-loras", str(len(adapters))),
        ("lora-modules", [f"{a.name}={ADAPTER_DIR}/{a.name}" for a in adapters]),
    ]


def _flatten(flags: Sequence[Flag]) -> list[str]:
    args: list[str] = []
    for key, value in flags:
        args.append(f"--{key}")
        if isinstance(value, list):
            args += value
        elif value is not None:
            args.append(value)
    return args


def vllm_launch(
    preset: Preset,
    sku: Sku,
    estimate: Estimate,
    *,
    adapters: Sequence[AdapterSpec] = (),
    user_config: Mapping[str, Any] | None = None,
    port: int = SERVING_PORT,
    hub_endpoint: str | None = None,
) -> Launch:
    """Build the serving container's command, args and env; a user `vllm:` section wins per flag.

    `hub_endpoint` (the operator's HF_ENDPOINT) becomes the container's HF_ENDPOINT when the
    weights come from the hub, so vLLM downloads them from the hub the operator sized them from.
    """
    flags = dict(_model_flags(preset, sku, estimate, port) + _adapter_flags(preset, adapters))
    for key, value in user_vllm_section(user_config).items():
        if key in PROTECTED_FLAGS:
            raise SpecError(
                f"{CONFIG_FIELD} (vllm.{key})",
                f"{key} is set by Kaito (the Service and probes depend on it); remove it",
            )
        if value is False:
            flags.pop(key, None)
        else:
            flags[key] = _render(value, key)

    launcher: list[Flag] = [("adapter-strength", f"{a.name}={a.strength}") for a in adapters]
    if user_config is not None:
        launcher.append(("config", CONFIG_PATH))

    env = {"DO_NOT_TRACK": "1", "VLLM_NO_USAGE_STATS": "1"}
    if hub_endpoint and not preset.uses_local_weights:
        env["HF_ENDPOINT"] = hub_endpoint
    if sku.cpu_only:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, estimate.cpu_kv_cache_gib))
    return Launch(
        command=list(LAUNCH_COMMAND),
        args=_flatten(list(flags.items())) + _flatten(launcher),
        env=dict(sorted(env.items())),
    )
