"""The instance-type table: what each Azure VM size offers to a model server.

GPU figures are GiB per GPU as the NVIDIA driver reports them (upstream Kaito's numbers). Older
Volta/Turing sizes stay in the table because the seed manifests use Standard_NC6s_v3; they cannot
do bfloat16, so the generated dtype there is float16. CPU sizes serve small models with vLLM's
CPU build.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kaito.presets._datafiles import data_files, read_entries, validate_entry
from kaito.presets.errors import CatalogError

BF16_MIN_COMPUTE_CAPABILITY = (8, 0)

NonNegInt = Annotated[int, Field(ge=0)]


class Sku(BaseModel):
    """One instance type: GPUs (count, model, memory per GPU), CPUs and memory, local NVMe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    gpu_model: str = ""
    gpu_count: NonNegInt = 0
    gpu_memory_gib: float = Field(default=0.0, ge=0, description="GiB per GPU")
    compute_capability: str = Field(default="", description="CUDA compute capability, e.g. '8.0'")
    vcpu: int = Field(gt=0)
    memory_gib: int = Field(gt=0)
    nvme: bool = False
    cpu_only: bool = False
    aliases: tuple[str, ...] = ()

    @field_validator("compute_capability", mode="before")
    @classmethod
    def _cc_as_text(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{float(value):.1f}"
        return value

    @field_validator("compute_capability")
    @classmethod
    def _cc_shape(cls, value: str) -> str:
        if value:
            major, dot, minor = value.partition(".")
            if not (major.isdigit() and dot and minor.isdigit()):
                raise ValueError("expected MAJOR.MINOR, e.g. '8.0'")
        return value

    @model_validator(mode="after")
    def _gpu_fields_agree(self) -> Sku:
        if self.cpu_only:
            if self.gpu_count or self.gpu_memory_gib:
                raise ValueError("a cpu_only SKU has no GPUs (gpu_count and gpu_memory_gib 0)")
        else:
            if self.gpu_count < 1 or self.gpu_memory_gib <= 0:
                raise ValueError("a GPU SKU needs gpu_count >= 1 and gpu_memory_gib > 0")
            if not self.compute_capability or not self.gpu_model:
                raise ValueError("a GPU SKU needs gpu_model and compute_capability")
        return self

    @property
    def compute_capability_tuple(self) -> tuple[int, int]:
        """(major, minor); (0, 0) for CPU-only sizes."""
        if not self.compute_capability:
            return (0, 0)
        major, _, minor = self.compute_capability.partition(".")
        return (int(major), int(minor))

    @property
    def supports_bf16(self) -> bool:
        """bfloat16 needs Ampere (compute capability 8.0) or newer."""
        return not self.cpu_only and self.compute_capability_tuple >= BF16_MIN_COMPUTE_CAPABILITY

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_count * self.gpu_memory_gib


def load_skus(paths: Iterable[Path]) -> dict[str, Sku]:
    """Read SKU files into a case-insensitive index (names and aliases); duplicates are errors."""
    index: dict[str, Sku] = {}
    for path in paths:
        for label, entry in read_entries(path, "skus"):
            sku = validate_entry(Sku, path, label, entry)
            for key in (sku.name, *sku.aliases):
                if key.lower() in index:
                    raise CatalogError(
                        f"{path.name}: entry {label}: field 'name': duplicate {key!r}"
                    )
                index[key.lower()] = sku
    return index


@cache
def _builtin() -> dict[str, Sku]:
    return load_skus(data_files("skus*.yaml"))


def get_sku(name: str) -> Sku | None:
    """Look an instance type up by name or alias, ignoring case (Azure treats VM sizes that way)."""
    return _builtin().get(name.strip().lower())


def list_skus() -> list[Sku]:
    """Every known SKU once: GPU sizes first (by GPU memory per node), then CPU sizes."""
    unique = {sku.name: sku for sku in _builtin().values()}.values()
    return sorted(
        unique,
        key=lambda s: (s.cpu_only, s.total_gpu_memory_gib, s.gpu_count, s.memory_gib, s.name),
    )


GPU_COUNT_LABEL = "nvidia.com/gpu.count"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
CUDA_MAJOR_LABEL = "nvidia.com/cuda.compute.major"
CUDA_MINOR_LABEL = "nvidia.com/cuda.compute.minor"


def byo_sku(
    gpu_count: int,
    gpu_memory_gib: float,
    *,
    compute_capability: str = "8.0",
    gpu_model: str = "byo",
    name: str = "byo",
    vcpu: int = 1,
    memory_gib: int = 1,
) -> Sku:
    """A Sku describing a bring-your-own node, so the launcher code path is the same."""
    return Sku(
        name=name,
        gpu_model=gpu_model,
        gpu_count=gpu_count,
        gpu_memory_gib=gpu_memory_gib,
        compute_capability=compute_capability,
        vcpu=vcpu,
        memory_gib=memory_gib,
    )


def sku_from_node_labels(labels: Mapping[str, str], *, name: str = "byo") -> Sku | None:
    """Size a BYO node from GPU Feature Discovery labels; None when the labels are missing or bad.

    `nvidia.com/gpu.memory` is MiB per GPU; like upstream it is rounded to whole GiB.
    """
    try:
        count = int(labels[GPU_COUNT_LABEL])
        memory_mib = int(labels[GPU_MEMORY_LABEL])
    except (KeyError, ValueError):
        return None
    if count < 1 or memory_mib < 1:
        return None
    major = labels.get(CUDA_MAJOR_LABEL, "8")
    minor = labels.get(CUDA_MINOR_LABEL, "0")
    cc = f"{major}.{minor}" if major.isdigit() and minor.isdigit() else "8.0"
    return byo_sku(
        count,
        float(round(memory_mib / 1024)),
        compute_capability=cc,
        gpu_model=labels.get(GPU_PRODUCT_LABEL, "byo") or "byo",
        name=name,
    )
