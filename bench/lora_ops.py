"""Per-call cost of the LoRA path in vLLM's CPU worker: the launcher's layers versus vLLM's own.

A noise-robust companion to ``bench/serving.py``: it times the one thing the mixed-batch LoRA fix
can change — the Punica call a LoRA QKV projection makes on every forward — in one process, for
four variants interleaved call block by call block:

- ``vllm``: the layer as vLLM builds it (base rows read the last adapter's slot: the bug);
- ``vllm copy``: a second layer built the same way — the A/A control: how far two identical
  variants drift apart here is the noise floor of every other ratio;
- ``launcher``: the layer as the launcher's fix builds it (one more, zero, slot);
- ``clone fix``: vLLM's layer with the fix this project used before (each kernel call cloned its
  input and zeroed the base rows), kept here as the reference the issue measured.

For each batch shape it prints the minimum, 10th percentile and median time per call over
``--blocks`` blocks of about ``--block-ms`` each; the low percentiles are what the code costs when
nothing else on the machine interferes, so they stay comparable under load. Ratios are ÷ ``vllm``.

Run with the serving venv: ``$(hack/serving-env)/bin/python bench/lora_ops.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serving import lora_layers as ll  # noqa: E402

MODELS = {
    # the served tiny Llama (tests/serving/tiny_model.py) with the tests' rank-8 adapters
    "tiny": ll.Shapes(hidden=128, head_size=32, heads=4, kv_heads=2, rank=8, slots=2),
    # a 7B-class Llama attention block, rank-16 adapters
    "7B-class": ll.Shapes(hidden=4096, head_size=128, heads=32, kv_heads=8, rank=16, slots=2),
}
BATCHES = {  # LoRA id per row (0 = base), decode unless named prefill
    "decode base x8": ((0,) * 8, False),
    "decode mixed x8": ((1, 0, 2, 0, 1, 0, 2, 0), False),
    "decode adapter x8": ((1, 2) * 4, False),
    "prefill mixed 2x32": ((0,) * 32 + (1,) * 32, True),
}
VARIANTS = ("vllm", "vllm copy", "launcher", "clone fix")
_OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def _clone_masked(op: Callable[..., Any]) -> Callable[..., Any]:
    """The previous fix: clone the kernel's input and zero the rows whose index is -1."""

    def wrapper(inputs: Any, weights: Any, output: Any, indices: Any, *a: Any, **k: Any) -> Any:
        no_lora = indices < 0
        if bool(no_lora.any()):
            rows = min(inputs.shape[0], no_lora.shape[0])
            inputs = inputs.clone()
            inputs[:rows][no_lora[:rows]] = 0
        return op(inputs, weights, output, indices, *a, **k)

    return wrapper


@contextlib.contextmanager
def clone_fix() -> Iterator[None]:
    """Install the previous fix's wrappers where vLLM's CPU Punica wrapper finds the ops."""
    import vllm.lora.ops.torch_ops.lora_ops as ops
    import vllm.lora.punica_wrapper.punica_cpu as cpu

    saved = [(m, n, getattr(m, n)) for m in (ops, cpu) for n in _OPS if hasattr(m, n)]
    wrapped = {name: _clone_masked(getattr(ops, name)) for name in _OPS}
    for module, name, _ in saved:
        setattr(module, name, wrapped[name])
    try:
        yield
    finally:
        for module, name, op in saved:
            setattr(module, name, op)


def time_block(call: Callable[[], None], calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        call()
    return (time.perf_counter_ns() - t0) / calls / 1e3  # µs per call


def bench_model(name: str, shapes: ll.Shapes, a: argparse.Namespace) -> None:
    import torch

    built, copy = ll.qkv_layers(shapes), ll.qkv_layers(shapes)
    layers = {
        "vllm": built["vllm"],
        "vllm copy": copy["vllm"],
        "launcher": built["launcher"],
        "clone fix": built["vllm"],
    }
    print(f"\n{name}: hidden {shapes.hidden}, rank {shapes.rank}, {shapes.slots} adapters loaded")
    print(
        f"  {'batch':20}{'variant':>11}{'min µs':>9}{'p10 µs':>9}{'median µs':>11}"
        f"{'min ratio':>11}{'p10 ratio':>11}{'median ratio':>14}"
    )
    for batch, (rows, prefill) in BATCHES.items():
        wrapper = ll.punica(rows, prefill, shapes.slots, vocab=1024)
        x = torch.randn(len(rows), shapes.hidden)
        calls: dict[str, Callable[[], None]] = {}
        for variant, layer in layers.items():
            out = torch.zeros(len(rows), sum(layer.output_slices))

            def call(layer: Any = layer, out: Any = out, w: Any = wrapper, x: Any = x) -> None:
                w.add_lora_linear(
                    out, x, layer.lora_a_stacked, layer.lora_b_stacked, 1.0, layer.output_slices
                )

            calls[variant] = call
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        with torch.no_grad():
            per_call = min(time_block(calls["vllm"], 1) for _ in range(5))
            n = max(2, min(100, round(a.block_ms * 1e3 / per_call)))
            for block in range(a.blocks):
                k = block % len(VARIANTS)
                for variant in VARIANTS[k:] + VARIANTS[:k]:
                    ctx = clone_fix() if variant == "clone fix" else contextlib.nullcontext()
                    with ctx:
                        times[variant].append(time_block(calls[variant], n))
        stats = {
            v: (min(t), statistics.quantiles(t, n=10)[0], statistics.median(t))
            for v, t in times.items()
        }
        for variant in VARIANTS:
            mine, base = stats[variant], stats["vllm"]
            print(
                f"  {batch:20}{variant:>11}{mine[0]:9.1f}{mine[1]:9.1f}{mine[2]:11.1f}"
                f"{mine[0] / base[0]:11.3f}{mine[1] / base[1]:11.3f}{mine[2] / base[2]:14.3f}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=100, help="timed blocks per variant and batch")
    p.add_argument("--block-ms", type=float, default=4.0, help="about this long a block")
    p.add_argument("--model", choices=sorted(MODELS), action="append")
    a = p.parse_args()
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)  # the worker's model thread; keeps the comparison about the code
    print(f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    with ll.single_rank():
        for name in a.model or list(MODELS):
            bench_model(name, MODELS[name], a)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
