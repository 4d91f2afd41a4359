"""The model catalog: what Kaito knows about each preset, read from YAML under data/.

Sizes are upstream Kaito's facts (safetensors bytes, attention shape); the KV-cache bytes per token
are derived from the attention shape exactly as upstream derives them, so the node estimator sizes
every preset the same way upstream does. A model named by its hub id but absent here is sized from
the hub's metadata into the same :class:`Preset` (see :mod:`kaito.presets.hub_sizing`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from kaito.presets._datafiles import data_files, read_entries, validate_entry
from kaito.presets.errors import CatalogError

GIB = 1024**3
LOCAL_WEIGHTS_PATH = "/workspace/weights"

Dtype = Literal["bfloat16", "float16", "float32", "auto"]
Runtime = Literal["vllm", "vllm-cpu", "transformers"]
Origin = Literal["catalog", "hub"]

DTYPE_BYTES: dict[str, int] = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti)?\s*$")
_UNITS = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": GIB, "Ti": 1024**4}


def _parse_bytes(value: object) -> object:
    """Accept plain byte counts or Kubernetes-style binary quantities such as '7.12Gi'."""
    if isinstance(value, str):
        match = _QUANTITY.match(value)
        if not match:
            raise ValueError("expected bytes as an integer or a quantity such as '7.12Gi'")
        return round(float(match.group(1)) * _UNITS[match.group(2)])
    return value


ByteCount = Annotated[int, BeforeValidator(_parse_bytes), Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
FlagValue = str | int | float | bool


class Preset(BaseModel):
    """One servable model and everything needed to size and launch it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$", description="preset name users write")
    hf_id: str = Field(min_length=1, description="hub repo id, or a local path for test presets")
    revision: str = "main"
    aliases: tuple[str, ...] = ()
    param_bytes: ByteCount
    dtype: Dtype = "bfloat16"
    quantization: str | None = None
    num_layers: PositiveInt
    num_kv_heads: PositiveInt
    head_dim: PositiveInt
    kv_lora_rank: PositiveInt | None = Field(default=None, description="MLA latent rank")
    qk_rope_head_dim: PositiveInt | None = Field(default=None, description="MLA rope dim")
    sliding_window: PositiveInt | None = Field(
        default=None, description="tokens a sliding-window attention layer keeps"
    )
    sliding_window_layers: int = Field(
        default=0, ge=0, description="layers whose KV cache holds only the sliding window"
    )
    architecture: str | None = Field(default=None, description="model class, as vLLM names it")
    context_limit: PositiveInt
    tool_parser: str | None = None
    reasoning_parser: str | None = None
    chat_template: str | None = Field(default=None, description="file in the image's template dir")
    extra_args: dict[str, FlagValue] = Field(default_factory=dict)
    supports_lora: bool = True
    supports_tuning: bool = False
    runtimes: tuple[Runtime, ...] = ("vllm",)
    test_only: bool = False
    deprecated: bool = False
    image_repository: str | None = None
    image_tag: str | None = None
    description: str = ""
    origin: Origin = Field(default="catalog", description="catalog entry, or sized from the hub")
    provenance: dict[str, str] = Field(
        default_factory=dict, description="figure -> where it came from (hub-sized presets)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Preset:
        if (self.kv_lora_rank is None) != (self.qk_rope_head_dim is None):
            raise ValueError("kv_lora_rank and qk_rope_head_dim go together (MLA attention)")
        if (self.sliding_window is None) != (self.sliding_window_layers == 0):
            raise ValueError("sliding_window and sliding_window_layers go together")
        if self.sliding_window_layers > self.num_layers:
            raise ValueError("sliding_window_layers cannot exceed num_layers")
        if (self.image_repository is None) != (self.image_tag is None):
            raise ValueError("image_repository and image_tag go together")
        if "vllm" not in self.runtimes and "vllm-cpu" not in self.runtimes:
            raise ValueError("runtimes must include vllm or vllm-cpu")
        if self.quantization and self.dtype != "auto":
            raise ValueError("a quantized model uses dtype 'auto'")
        return self

    @property
    def weights_gib(self) -> float:
        return self.param_bytes / GIB

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token needs across all layers (keys and values; MLA keeps latents).

        This is upstream's figure: every layer counted as full attention.
        """
        return self._kv_bytes_per_layer_token * self.num_layers

    @property
    def _kv_bytes_per_layer_token(self) -> int:
        width = DTYPE_BYTES[self.dtype]
        if self.kv_lora_rank is not None and self.qk_rope_head_dim is not None:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * width
        return 2 * self.num_kv_heads * self.head_dim * width

    def kv_cache_bytes(self, tokens: int) -> int:
        """KV-cache bytes of one sequence; a sliding-window layer stops at its window."""
        windowed = min(tokens, self.sliding_window or 0) * self.sliding_window_layers
        full = tokens * (self.num_layers - self.sliding_window_layers)
        return (full + windowed) * self._kv_bytes_per_layer_token

    def tokens_within(self, kv_bytes: float) -> int:
        """The longest sequence whose KV cache fits in `kv_bytes` (inverse of kv_cache_bytes)."""
        if kv_bytes <= 0:
            return 0
        per_layer = self._kv_bytes_per_layer_token
        full_layers = self.num_layers - self.sliding_window_layers
        window = self.sliding_window or 0
        if kv_bytes < self.kv_cache_bytes(window):  # inside the window every layer grows
            return int(kv_bytes // (per_layer * self.num_layers))
        if full_layers == 0:  # only windows: any length fits once the windows do
            return 2**62
        rest = kv_bytes - window * self.sliding_window_layers * per_layer
        return int(rest // (per_layer * full_layers))

    @property
    def uses_local_weights(self) -> bool:
        """Weights come from /workspace/weights (a test model or a weights image), not the hub."""
        return self.hf_id.startswith("/") or self.image_repository is not None

    @property
    def model_ref(self) -> str:
        """What vLLM's --model gets."""
        return LOCAL_WEIGHTS_PATH if self.uses_local_weights else self.hf_id


def load_catalog(paths: Iterable[Path]) -> dict[str, Preset]:
    """Read catalog files into a lookup keyed by lowercased name, alias and hub id."""
    index: dict[str, Preset] = {}
    for path in paths:
        for label, entry in read_entries(path, "presets"):
            preset = validate_entry(Preset, path, label, entry)
            keys = {preset.name, *preset.aliases}
            if not preset.hf_id.startswith("/"):
                keys.add(preset.hf_id)
            for key in sorted(keys):
                if key.lower() in index and index[key.lower()] is not preset:
                    raise CatalogError(
                        f"{path.name}: entry {label}: field 'name': {key!r} is already used by "
                        f"preset {index[key.lower()].name!r}"
                    )
                index[key.lower()] = preset
    return index


@cache
def _builtin() -> dict[str, Preset]:
    return load_catalog(data_files("catalog*.yaml"))


def get_preset(name: str) -> Preset | None:
    """Find a preset by name, legacy short name or hub id, ignoring case."""
    return _builtin().get(name.strip().lower())


def list_presets(*, include_test: bool = True) -> list[Preset]:
    """Every preset once, sorted by name."""
    unique = {p.name: p for p in _builtin().values()}
    return sorted(
        (p for p in unique.values() if include_test or not p.test_only), key=lambda p: p.name
    )
