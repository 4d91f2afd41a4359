"""The instance-type table: what each Azure VM size offers to a model server.

GPU figures are GiB per GPU as the NVIDIA driver reports them (upstream Kaito's numbers). Older
Volta/Turing sizes stay in the table because the seed manifests use Standard_NC6s_v3; they cannot
do bfloat16, so the generated dtype there is float16. CPU sizes serve small models with vLLM's
CPU build.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any

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

    `nvidia.com/gpu.memory` is MiB per GPU; like upstream it is rounded to whole GiB (halves
    up). Without `nvidia.com/cuda.compute.*` labels the GPU is taken to be Ampere (8.0).
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
        float(math.floor(memory_mib / 1024 + 0.5)),
        compute_capability=cc,
        gpu_model=labels.get(GPU_PRODUCT_LABEL, "byo") or "byo",
        name=name,
    )


# --- instance types newer than the table --------------------------------------------------------

# GPU models named in Azure VM size names: (product, GiB per GPU, compute capability).  Where a
# model comes in two memory sizes (A100 40/80 GB, V100 16/32 GB, H100 80/94 GB) the smaller is
# taken: sizing on too little memory costs a node, on too much a crash.
AZURE_GPU_MODELS: Mapping[str, tuple[str, float, str]] = {
    "H200": ("NVIDIA H200", 141, "9.0"),
    "H100": ("NVIDIA H100", 80, "9.0"),
    "A100": ("NVIDIA A100", 40, "8.0"),
    "A10": ("NVIDIA A10", 24, "8.6"),
    "L40S": ("NVIDIA L40S", 48, "8.9"),
    "L4": ("NVIDIA L4", 24, "8.9"),
    "T4": ("NVIDIA T4", 16, "7.5"),
    "V100": ("NVIDIA V100", 16, "7.0"),
}
AZURE_PREFIX = "standard_"
# Instance-type spellings of the clouds this operator does not provision on.
_OTHER_CLOUDS = (
    ("AWS", re.compile(r"^[a-z][a-z0-9-]*\.[0-9]*(nano|micro|small|medium|large|xlarge|metal)")),
    ("Google Cloud", re.compile(r"^[a-z][a-z0-9]*-(standard|highgpu|megagpu|ultragpu|highmem)")),
)


@dataclass(frozen=True)
class LearnedSku:
    """An instance type missing from the table, sized from what the cluster or the cloud says."""

    sku: Sku
    source: str
    """Where the figures came from, in words (it ends up in a Workspace condition)."""

    @property
    def summary(self) -> str:
        if self.sku.cpu_only:
            return f"{self.sku.name}: no GPU, {self.sku.vcpu} vCPUs, {self.sku.memory_gib} GiB"
        return (
            f"{self.sku.name}: {self.sku.gpu_count} x {self.sku.gpu_memory_gib:g} GiB "
            f"{self.sku.gpu_model} (compute capability {self.sku.compute_capability})"
        )


def is_azure_name(name: str) -> bool:
    return name.strip().lower().startswith(AZURE_PREFIX)


def other_cloud(name: str) -> str | None:
    """The cloud whose spelling `name` has, when it is not Azure's (e.g. AWS for g5.4xlarge)."""
    text = name.strip().lower()
    for cloud, pattern in _OTHER_CLOUDS:
        if pattern.match(text):
            return cloud
    return None


def learn_from_nodes(name: str, nodes: Iterable[Mapping[str, Any]]) -> LearnedSku | None:
    """Size `name` from nodes of that type carrying GPU Feature Discovery labels."""
    for node in nodes:
        meta = node.get("metadata") or {}
        labels = meta.get("labels") or {}
        sku = sku_from_node_labels(labels, name=name)
        if sku is None:
            continue
        capacity = (node.get("status") or {}).get("capacity") or {}
        vcpu = _int_or(capacity.get("cpu"), 1)
        return LearnedSku(
            sku.model_copy(update={"vcpu": max(vcpu, 1)}),
            f"the labels of node {meta.get('name')} ({GPU_COUNT_LABEL}="
            f"{labels.get(GPU_COUNT_LABEL)}, "
            f"{GPU_MEMORY_LABEL}={labels.get(GPU_MEMORY_LABEL)} MiB)",
        )
    return None


def learn_from_azure(name: str, capabilities: Mapping[str, str]) -> LearnedSku | None:
    """Size an Azure VM size from its resource SKU capabilities (GPUs, vCPUs, MemoryGB).

    The SKU list gives the GPU count but not the GPU's memory: that comes from the GPU model
    the size's name carries (``..._H200_v5``).  None when either is missing.
    """
    vcpu = _int_or(capabilities.get("vCPUs"), 0)
    memory = int(float(capabilities.get("MemoryGB") or 0))
    gpus = _int_or(capabilities.get("GPUs"), 0)
    if vcpu < 1 or memory < 1:
        return None
    source = "Azure's resource SKU list"
    if gpus == 0:
        sku = Sku(name=name, cpu_only=True, vcpu=vcpu, memory_gib=memory)
        return LearnedSku(sku, f"{source} (no GPUs, {vcpu} vCPUs, {memory} GB)")
    tokens = [t.upper() for t in name.split("_")[1:]]
    model = next((AZURE_GPU_MODELS[t] for t in tokens if t in AZURE_GPU_MODELS), None)
    if model is None:
        return None
    product, per_gpu, cc = model
    sku = Sku(
        name=name,
        gpu_model=product,
        gpu_count=gpus,
        gpu_memory_gib=per_gpu,
        compute_capability=cc,
        vcpu=vcpu,
        memory_gib=memory,
    )
    return LearnedSku(
        sku,
        f"{source} (GPUs={gpus}) and the GPU model in its name ({product}, at least "
        f"{per_gpu:g} GiB per GPU)",
    )


def _int_or(value: object, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default
