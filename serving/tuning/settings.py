"""The trainer's reading of ``training_config.yaml``: sections as plain dicts plus the defaults.

The operator validates the file key by key before it creates a Job; here the sections are only
split into what each library receives, with the defaults a run needs when a key is absent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from serving.tuning.report import StageError

SECTIONS = (
    "ModelConfig",
    "QuantizationConfig",
    "LoraConfig",
    "TrainingArguments",
    "DatasetConfig",
    "DataCollator",
)
DEFAULT_OUTPUT_DIR = "/mnt/results"
MARKER = "fine_tuning_completed.txt"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class DatasetSettings:
    """Where the rows are and which columns hold them (DatasetConfig)."""

    dataset_path: str | None = None
    dataset_extension: str | None = None
    shuffle_dataset: bool = True
    shuffle_seed: int = 42
    context_column: str | None = None
    response_column: str | None = None
    messages_column: str | None = None
    train_test_split: float = 1.0
    max_seq_length: int = 1024


@dataclass(frozen=True)
class Settings:
    model: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    collator: dict[str, Any] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        return bool(self.quantization.get("load_in_4bit") or self.quantization.get("load_in_8bit"))


def parse(document: object) -> Settings:
    if isinstance(document, Mapping) and set(document) == {"training_config"}:
        document = document["training_config"]  # upstream Kaito's nesting
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise StageError("training config must be a mapping of sections")
    unknown = [str(k) for k in document if k not in SECTIONS]
    if unknown:
        raise StageError(
            f"training config: unknown section {unknown[0]}; accepted: {', '.join(SECTIONS)}"
        )
    sections: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        body = document.get(name) or {}
        if not isinstance(body, Mapping):
            raise StageError(f"training config: {name} must be a mapping")
        sections[name] = dict(body)
    dataset_keys = set(DatasetSettings.__dataclass_fields__)
    bad = sorted(set(sections["DatasetConfig"]) - dataset_keys)
    if bad:
        raise StageError(
            f"training config: DatasetConfig.{bad[0]} is unknown; "
            f"accepted: {', '.join(sorted(dataset_keys))}"
        )
    return Settings(
        model=sections["ModelConfig"],
        quantization=sections["QuantizationConfig"],
        lora=sections["LoraConfig"],
        training=sections["TrainingArguments"],
        dataset=DatasetSettings(**sections["DatasetConfig"]),
        collator=sections["DataCollator"],
    )


def load(path: Path) -> Settings:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise StageError(f"cannot read the training config {path}: {err.strerror}") from None
    try:
        return parse(yaml.safe_load(text))
    except yaml.YAMLError as err:
        raise StageError(f"{path} is not valid YAML: {err}") from None


def output_dir(settings: Settings, override: Path | None) -> Path:
    if override is not None:
        return override
    return Path(str(settings.training.get("output_dir", DEFAULT_OUTPUT_DIR)))


def default_target_modules() -> list[str] | None:
    """The operator sets DEFAULT_TARGET_MODULES for models peft has no default for (phi-3)."""
    raw = os.environ.get("DEFAULT_TARGET_MODULES", "")
    modules = [m.strip() for m in raw.split(",") if m.strip()]
    return modules or None
