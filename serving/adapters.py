"""Adapter strength: a scaled copy of a peft LoRA adapter, prepared before vLLM loads it.

A LoRA layer adds ``scale * B @ A`` to the base weight, so multiplying every ``lora_B`` tensor by
``s`` multiplies the adapter's delta by ``s``: 1.0 is the adapter as trained, 0.0 is the base model.
vLLM has no per-adapter strength, and upstream rejects any strength under vLLM; preparing a scaled
copy keeps vLLM's own (fast) LoRA path and makes the seed's ``strength: "1.0"`` work as written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterError(ValueError):
    """An adapter directory cannot be served; the message names the directory and the problem."""


def default_prepared_root() -> Path:
    return Path(tempfile.gettempdir()) / "kaito-prepared-adapters"


def prepare(source: Path, strength: float, root: Path | None = None) -> Path:
    """The directory vLLM should load for ``source`` at ``strength`` (the source itself at 1.0)."""
    if strength == 1.0:
        return source
    weights = next((source / f for f in WEIGHT_FILES if (source / f).is_file()), None)
    if weights is None:
        raise AdapterError(f"{source}: no adapter_model.safetensors (or .bin) to scale")
    digest = hashlib.sha256(f"{source.resolve()}:{strength!r}".encode())
    digest.update(str(weights.stat().st_mtime_ns).encode())
    dest = (root or default_prepared_root()) / f"{source.name}-{digest.hexdigest()[:12]}"
    if (dest / weights.name).is_file():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    _scale_lora_b(tmp / weights.name, strength)
    cfg_path = tmp / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["kaito_strength"] = strength  # provenance only; peft and vLLM ignore unknown keys
    cfg_path.write_text(json.dumps(cfg, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def _scale_lora_b(path: Path, strength: float) -> None:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(path))
    else:
        tensors = torch.load(str(path), map_location="cpu", weights_only=True)
    scaled = 0
    for key, tensor in tensors.items():
        if "lora_B" in key or "lora_embedding_B" in key:
            tensors[key] = (tensor.to(torch.float32) * strength).to(tensor.dtype)
            scaled += 1
    if scaled == 0:
        raise AdapterError(f"{path}: no lora_B tensors found; is this a LoRA adapter?")
    if path.suffix == ".safetensors":
        save_file(tensors, str(path), metadata={"format": "pt"})
    else:
        torch.save(tensors, str(path))
