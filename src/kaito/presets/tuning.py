"""Training configuration of a tuning Workspace: the lora/qlora defaults and validation.

A user's ``training_config.yaml`` reaches the trainer as keyword arguments of transformers,
peft and bitsandbytes classes, where a typo or a wrong type only shows up as a traceback
minutes into a GPU Job. Checking every section here, before any Job exists, turns that into
one line that names the section, the key and what is accepted.
"""

from __future__ import annotations

import copy
import difflib
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from kaito.presets.errors import SpecError

CONFIG_KEY = "training_config.yaml"
CONFIG_FIELD = "tuning.config"
# Upstream Kaito nests the sections under one top-level key; both spellings are accepted.
UPSTREAM_WRAPPER = "training_config"
METHODS = ("lora", "qlora")
OUTPUT_ROOT = "/mnt"
DEFAULT_OUTPUT_DIR = "/mnt/results"
# Other volumes of the tuning pod: results written there would clobber the inputs.
RESERVED_DIRS = ("/mnt/config", "/mnt/data")

_DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Key:
    """What one key accepts: ``kind`` is ``|``-separated names of ``_CHECKS``."""

    kind: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_min: bool = False
    exclusive_max: bool = False


_BOOL = Key("bool")
_STR = Key("str")
_MAP = Key("map")
_POS_INT = Key("int", minimum=1)
_NONNEG_INT = Key("int", minimum=0)
_POS_NUM = Key("number", minimum=0, exclusive_min=True)
_NONNEG_NUM = Key("number", minimum=0)
_UNIT = Key("number", minimum=0, maximum=1)
_DTYPE = Key("str", choices=_DTYPES)

SECTIONS: dict[str, dict[str, Key]] = {
    "ModelConfig": {
        "torch_dtype": _DTYPE,
        "dtype": _DTYPE,
        "local_files_only": _BOOL,
        "device_map": Key("str|map"),
        "trust_remote_code": _BOOL,
        "revision": _STR,
        "attn_implementation": Key("str", choices=("eager", "sdpa", "flash_attention_2")),
        "low_cpu_mem_usage": _BOOL,
        "use_cache": _BOOL,
    },
    "QuantizationConfig": {
        "load_in_4bit": _BOOL,
        "load_in_8bit": _BOOL,
        "bnb_4bit_quant_type": Key("str", choices=("nf4", "fp4")),
        "bnb_4bit_compute_dtype": Key("str", choices=("float32", "float16", "bfloat16")),
        "bnb_4bit_use_double_quant": _BOOL,
        "bnb_4bit_quant_storage": Key("str", choices=("uint8", "float16", "bfloat16", "float32")),
        "llm_int8_threshold": _NONNEG_NUM,
        "llm_int8_skip_modules": Key("strs"),
        "llm_int8_enable_fp32_cpu_offload": _BOOL,
        "llm_int8_has_fp16_weight": _BOOL,
    },
    "LoraConfig": {
        "r": _POS_INT,
        "lora_alpha": _POS_NUM,
        "lora_dropout": Key("number", minimum=0, maximum=1, exclusive_max=True),
        "target_modules": Key("str|strs"),
        "bias": Key("str", choices=("none", "all", "lora_only")),
        "task_type": Key("str", choices=("CAUSAL_LM",)),
        "fan_in_fan_out": _BOOL,
        "modules_to_save": Key("strs"),
        "init_lora_weights": Key("bool|str"),
        "use_rslora": _BOOL,
        "use_dora": _BOOL,
        "layers_to_transform": Key("int|ints"),
        "rank_pattern": _MAP,
        "alpha_pattern": _MAP,
    },
    "TrainingArguments": {
        "output_dir": _STR,
        "num_train_epochs": _POS_NUM,
        "max_steps": Key("int", minimum=-1),
        "per_device_train_batch_size": _POS_INT,
        "per_device_eval_batch_size": _POS_INT,
        "gradient_accumulation_steps": _POS_INT,
        "gradient_checkpointing": _BOOL,
        "gradient_checkpointing_kwargs": _MAP,
        "auto_find_batch_size": _BOOL,
        "learning_rate": _POS_NUM,
        "weight_decay": _NONNEG_NUM,
        "adam_beta1": _UNIT,
        "adam_beta2": _UNIT,
        "adam_epsilon": _POS_NUM,
        "max_grad_norm": _NONNEG_NUM,
        "optim": _STR,
        "lr_scheduler_type": Key(
            "str",
            choices=(
                "linear",
                "cosine",
                "cosine_with_restarts",
                "polynomial",
                "constant",
                "constant_with_warmup",
                "inverse_sqrt",
                "reduce_lr_on_plateau",
                "cosine_with_min_lr",
                "warmup_stable_decay",
            ),
        ),
        "lr_scheduler_kwargs": _MAP,
        "warmup_ratio": _UNIT,
        "warmup_steps": _NONNEG_INT,
        "logging_strategy": Key("str", choices=("no", "steps", "epoch")),
        "logging_steps": _POS_NUM,
        "logging_first_step": _BOOL,
        "save_strategy": Key("str", choices=("no", "steps", "epoch", "best")),
        "save_steps": _POS_NUM,
        "save_total_limit": _POS_INT,
        "eval_strategy": Key("str", choices=("no", "steps", "epoch")),
        "eval_steps": _POS_NUM,
        "load_best_model_at_end": _BOOL,
        "metric_for_best_model": _STR,
        "seed": _NONNEG_INT,
        "data_seed": _NONNEG_INT,
        "full_determinism": _BOOL,
        "bf16": _BOOL,
        "fp16": _BOOL,
        "tf32": _BOOL,
        "use_cpu": _BOOL,
        "torch_compile": _BOOL,
        "ddp_find_unused_parameters": _BOOL,
        "ddp_timeout": _POS_INT,
        "dataloader_num_workers": _NONNEG_INT,
        "dataloader_pin_memory": _BOOL,
        "group_by_length": _BOOL,
        "neftune_noise_alpha": _POS_NUM,
        "report_to": Key("str|strs"),
        "run_name": _STR,
        "disable_tqdm": _BOOL,
    },
    "DatasetConfig": {
        "dataset_path": _STR,
        "dataset_extension": Key("str", choices=("parquet", "jsonl", "json", "csv")),
        "shuffle_dataset": _BOOL,
        "shuffle_seed": _NONNEG_INT,
        "context_column": _STR,
        "response_column": _STR,
        "messages_column": _STR,
        "train_test_split": Key("number", minimum=0, maximum=1, exclusive_min=True),
        "max_seq_length": _POS_INT,
    },
    "DataCollator": {
        "mlm": _BOOL,
        "mlm_probability": Key("number", minimum=0, maximum=1, exclusive_min=True),
        "pad_to_multiple_of": _POS_INT,
    },
}

# Keys users copy from other trainers that mean something we set ourselves: the fix, not a list.
_REDIRECTS = {
    ("ModelConfig", "pretrained_model_name_or_path"): "the model comes from tuning.preset",
    ("TrainingArguments", "evaluation_strategy"): "renamed in transformers: use eval_strategy",
    ("TrainingArguments", "push_to_hub"): "the adapter is published by tuning.output.image",
    ("TrainingArguments", "hub_model_id"): "the adapter is published by tuning.output.image",
}

_BASE_TEMPLATE: dict[str, dict[str, Any]] = {
    # Upstream also sets local_files_only: true, as its weights always come baked into an
    # image; ours may be a hub id fetched at run time, which that flag would forbid.
    "ModelConfig": {"torch_dtype": "bfloat16", "device_map": "auto"},
    "QuantizationConfig": {"load_in_4bit": False},
    "LoraConfig": {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0},
    "TrainingArguments": {
        "output_dir": DEFAULT_OUTPUT_DIR,
        "ddp_find_unused_parameters": False,
        "save_strategy": "no",
        "per_device_train_batch_size": 1,
    },
    # Upstream's templates say mlm: true; every preset is a causal LM, so masked-LM
    # collation never applies and the default says what actually happens.
    "DataCollator": {"mlm": False},
    "DatasetConfig": {"shuffle_dataset": True, "train_test_split": 1},
}
_QLORA_QUANTIZATION = {
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_compute_dtype": "bfloat16",
    "bnb_4bit_use_double_quant": True,
}


def field_path(section: str, key: str | None = None) -> str:
    """How errors name a place in the ConfigMap: ``training_config.yaml:LoraConfig.r``."""
    return f"{CONFIG_KEY}:{section}" + (f".{key}" if key else "")


def check_method(method: str) -> str:
    """Normalise ``tuning.method`` (case-insensitive, as upstream accepts it)."""
    normal = method.strip().lower()
    if normal not in METHODS:
        raise SpecError("tuning.method", f"{method!r} is not a tuning method; use lora or qlora")
    return normal


def default_config(method: str) -> dict[str, dict[str, Any]]:
    """The training config used when the Workspace names no ``tuning.config``."""
    config = copy.deepcopy(_BASE_TEMPLATE)
    if check_method(method) == "qlora":
        config["QuantizationConfig"] = dict(_QLORA_QUANTIZATION)
    return config


def default_config_yaml(method: str) -> str:
    return yaml.safe_dump(default_config(method), sort_keys=False)


def parse_training_config(text: str, method: str) -> dict[str, dict[str, Any]]:
    """Parse and validate the ``training_config.yaml`` text of a user's ConfigMap."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError(CONFIG_KEY, f"is not valid YAML{where}: {err}") from None
    return validate_training_config(document, method)


def training_config_from_data(
    name: str, namespace: str, data: Mapping[str, str] | None, method: str
) -> dict[str, dict[str, Any]]:
    """The validated training config of ConfigMap `name` (its ``data``; None: not found)."""
    if data is None:
        raise SpecError(
            CONFIG_FIELD,
            f"ConfigMap {name!r} not found in namespace {namespace!r}; create it with key "
            f"{CONFIG_KEY}, or remove tuning.config to use the {method} defaults",
        )
    text = data.get(CONFIG_KEY)
    if text is None:
        raise SpecError(
            CONFIG_FIELD,
            f"ConfigMap {name!r} has no key {CONFIG_KEY} (it has: "
            f"{', '.join(sorted(data)) or 'no keys'}); put the training settings under that key",
        )
    return parse_training_config(text, method)


def unwrap(document: object) -> object:
    """Upstream's ``training_config: {ModelConfig: ...}`` form, as the bare sections."""
    if isinstance(document, Mapping) and set(document) == {UPSTREAM_WRAPPER}:
        return document[UPSTREAM_WRAPPER]
    return document


def validate_training_config(config: object, method: str) -> dict[str, dict[str, Any]]:
    """Check every section and key; return a copy with empty sections as ``{}``."""
    method = check_method(method)
    config = unwrap(config)
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise SpecError(
            CONFIG_KEY,
            f"must be a mapping of sections ({', '.join(SECTIONS)}), got {_kind(config)}",
        )
    result: dict[str, dict[str, Any]] = {}
    for section, body in config.items():
        if section not in SECTIONS:
            raise SpecError(
                field_path(str(section)),
                f"unknown section{_suggest(str(section), SECTIONS)}; "
                f"accepted sections: {', '.join(SECTIONS)}",
            )
        result[section] = _check_section(section, body)
    _check_quantization(result.get("QuantizationConfig", {}), method)
    _check_output_dir(result.get("TrainingArguments", {}))
    _check_dataset(result.get("DatasetConfig", {}))
    return result


def output_dir(config: Mapping[str, Mapping[str, Any]]) -> str:
    """Where the trainer writes the adapter (a validated config's output_dir, normalised)."""
    raw = config.get("TrainingArguments", {}).get("output_dir", DEFAULT_OUTPUT_DIR)
    return posixpath.normpath(str(raw))


def _check_section(section: str, body: object) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise SpecError(field_path(section), f"must be a mapping of keys, got {_kind(body)}")
    accepted = SECTIONS[section]
    out: dict[str, Any] = {}
    for key, value in body.items():
        name = str(key)
        redirect = _REDIRECTS.get((section, name))
        if redirect:
            raise SpecError(field_path(section, name), f"is not accepted: {redirect}")
        if name not in accepted:
            raise SpecError(
                field_path(section, name),
                f"unknown key{_suggest(name, accepted)}; accepted keys: {', '.join(accepted)}",
            )
        problem = _check_value(accepted[name], value)
        if problem:
            raise SpecError(field_path(section, name), f"{problem}, got {value!r} ({_kind(value)})")
        out[name] = copy.deepcopy(value)
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_strs(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_map(value: object) -> bool:
    return isinstance(value, Mapping)


def _is_ints(value: object) -> bool:
    return isinstance(value, list) and all(_is_int(i) for i in value)


_CHECKS: dict[str, Callable[[object], bool]] = {
    "bool": _is_bool,
    "str": _is_str,
    "int": _is_int,
    "number": _is_number,
    "map": _is_map,
    "strs": _is_strs,
    "ints": _is_ints,
}


def _check_value(spec: Key, value: object) -> str | None:
    """A description of what is accepted when ``value`` does not fit ``spec``, else None."""
    kinds = spec.kind.split("|")
    names = {
        "bool": "true or false",
        "str": "a string",
        "int": "an integer",
        "number": "a number",
        "map": "a mapping",
        "strs": "a list of strings",
        "ints": "a list of integers",
    }
    if not any(_CHECKS[k](value) for k in kinds):
        return "must be " + " or ".join(names[k] for k in kinds)
    if spec.choices and isinstance(value, str) and value not in spec.choices:
        return f"must be one of {', '.join(spec.choices)}"
    if _is_number(value) and ("int" in kinds or "number" in kinds):
        number = float(value)  # type: ignore[arg-type]
        low, high = spec.minimum, spec.maximum
        too_low = low is not None and (number <= low if spec.exclusive_min else number < low)
        too_high = high is not None and (number >= high if spec.exclusive_max else number > high)
        if too_low or too_high:
            return "must be " + _range_text(spec)
    return None


def _range_text(spec: Key) -> str:
    parts = []
    if spec.minimum is not None:
        parts.append(f"{'>' if spec.exclusive_min else '>='} {spec.minimum:g}")
    if spec.maximum is not None:
        parts.append(f"{'<' if spec.exclusive_max else '<='} {spec.maximum:g}")
    return " and ".join(parts)


def _check_quantization(section: Mapping[str, Any], method: str) -> None:
    four, eight = section.get("load_in_4bit", False), section.get("load_in_8bit", False)
    if four and eight:
        raise SpecError(
            field_path("QuantizationConfig", "load_in_8bit"),
            "load_in_4bit and load_in_8bit cannot both be true; keep one",
        )
    if method == "lora" and (four or eight):
        key = "load_in_4bit" if four else "load_in_8bit"
        raise SpecError(
            field_path("QuantizationConfig", key),
            "method lora trains unquantized weights; set it to false or use method qlora",
        )
    if method == "qlora" and not (four or eight):
        raise SpecError(
            field_path("QuantizationConfig", "load_in_4bit"),
            "method qlora needs a quantized base model; set load_in_4bit: true "
            "(or load_in_8bit: true), or use method lora",
        )


def _check_output_dir(section: Mapping[str, Any]) -> None:
    raw = section.get("output_dir")
    if raw is None:
        return
    where = field_path("TrainingArguments", "output_dir")
    if not raw.startswith("/"):
        raise SpecError(where, f"must be an absolute path under {OUTPUT_ROOT}, got {raw!r}")
    path = posixpath.normpath(raw)
    if not path.startswith(OUTPUT_ROOT + "/"):
        raise SpecError(
            where, f"must be under {OUTPUT_ROOT} (e.g. {DEFAULT_OUTPUT_DIR}), got {raw!r}"
        )
    for reserved in RESERVED_DIRS:
        if path == reserved or path.startswith(reserved + "/"):
            raise SpecError(
                where,
                f"{raw!r} is inside {reserved}, which holds the job's inputs; "
                f"use another directory under {OUTPUT_ROOT} (e.g. {DEFAULT_OUTPUT_DIR})",
            )


def _check_dataset(section: Mapping[str, Any]) -> None:
    if "messages_column" in section:
        for other in ("context_column", "response_column"):
            if other in section:
                raise SpecError(
                    field_path("DatasetConfig", other),
                    "cannot be combined with messages_column; a row is either a chat "
                    "(messages_column) or a prompt/completion pair (context/response columns)",
                )
    path = section.get("dataset_path")
    if path is not None and (path.startswith("/") or ".." in path.split("/")):
        raise SpecError(
            field_path("DatasetConfig", "dataset_path"),
            f"must be a relative path inside the input data directory, got {path!r}",
        )


def _suggest(name: str, options: Mapping[str, Any] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "mapping"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}
    return names.get(type(value), type(value).__name__)
