"""Real vLLM LoRA layers outside a server, for the fix's probe and the LoRA-ops benchmark.

Everything here runs in a process of its own (the probe, the benchmark): :func:`single_rank` sets
up vLLM's one-rank distributed state, which must not leak into a test process. The layers are built
through ``vllm.lora.model_manager``'s factories — as the launcher patched them (``"launcher"``)
or through the unpatched originals (``"vllm"``) — with adapters of random weights loaded into
every slot the adapter manager would use, and driven through vLLM's CPU Punica wrapper exactly as
their forward drives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.serving.helpers import free_port

VARIANTS = ("launcher", "vllm")


@contextmanager
def single_rank() -> Iterator[None]:
    """vLLM's config context and one-rank (gloo) tensor/pipeline groups, with the fix registered."""
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    from serving import lora_fix

    lora_fix.register()
    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(
            world_size=1,
            rank=0,
            distributed_init_method=f"tcp://127.0.0.1:{free_port()}",
            local_rank=0,
            backend="gloo",
        )
        initialize_model_parallel(1, 1)
        yield


def factory(name: str, variant: str) -> Any:
    """``vllm.lora.model_manager.<name>`` as patched (``"launcher"``) or as vLLM ships it."""
    import vllm.lora.model_manager as manager

    built = getattr(manager, name)
    return built if variant == "launcher" else getattr(built, "__wrapped__", built)


@dataclass
class Shapes:
    hidden: int
    head_size: int
    heads: int
    kv_heads: int
    rank: int
    slots: int  # adapters loaded (vLLM's --max-loras)


def lora_config(shapes: Shapes) -> Any:
    import torch
    from vllm.config.lora import LoRAConfig

    return LoRAConfig(max_lora_rank=shapes.rank, max_loras=shapes.slots, lora_dtype=torch.float32)


def qkv_layers(shapes: Shapes) -> dict[str, Any]:
    """One QKV projection with LoRA per variant, the same adapters loaded in each."""
    import torch
    from vllm.model_executor.layers.linear import QKVParallelLinear

    s = shapes
    base = QKVParallelLinear(s.hidden, s.head_size, s.heads, s.kv_heads, bias=False)
    outs = (s.head_size * s.heads, s.head_size * s.kv_heads, s.head_size * s.kv_heads)
    loras = [
        ([torch.randn(s.rank, s.hidden) for _ in outs], [torch.randn(n, s.rank) for n in outs])
        for _ in range(s.slots)
    ]
    built = {}
    for variant in VARIANTS:
        packed = ["q_proj", "k_proj", "v_proj"]
        layer = factory("from_layer", variant)(base, s.slots, lora_config(s), packed, None)
        for slot, (a, b) in enumerate(loras):
            layer.set_lora(slot, a, b)
        built[variant] = layer
    return built


def logits_layers(shapes: Shapes, vocab: int) -> dict[str, Any]:
    """One logits processor with an ``lm_head`` LoRA per variant, the same adapters in each."""
    import torch
    from vllm.model_executor.layers.logits_processor import LogitsProcessor
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    s = shapes
    head = ParallelLMHead(vocab, s.hidden)
    processor = LogitsProcessor(vocab)
    loras = [(torch.randn(s.rank, s.hidden), torch.randn(vocab, s.rank)) for _ in range(s.slots)]
    built = {}
    for variant in VARIANTS:
        build = factory("from_layer_logits_processor", variant)
        layer = build(processor, head, s.slots, lora_config(s), None)
        for slot, (a, b) in enumerate(loras):
            layer.set_lora(slot, a, b)
        built[variant] = layer
    return built


def punica(rows: tuple[int, ...], prefill: bool, slots: int, vocab: int) -> Any:
    """vLLM's CPU Punica wrapper mapped to ``rows`` (a LoRA id per row, 0 = base model).

    LoRA ids ``1..slots`` sit in slots ``0..slots-1``, as the adapter manager places them.
    """
    from vllm.lora.layers.utils import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    wrapper = PunicaWrapperCPU(max(64, len(rows)), max(16, len(rows)), "cpu")
    mapping = LoRAMapping(rows, rows, is_prefill=prefill)
    wrapper.update_metadata(mapping, list(range(1, slots + 1)), slots + 1, vocab)
    return wrapper


def qkv_delta(wrapper: Any, layer: Any, x: Any) -> Any:
    """What the layer's forward adds to the base projection: its Punica call, into zeros."""
    import torch

    out = torch.zeros(x.shape[0], sum(layer.output_slices))
    wrapper.add_lora_linear(
        out, x, layer.lora_a_stacked, layer.lora_b_stacked, 1.0, layer.output_slices
    )
    return out


def logits_delta(wrapper: Any, layer: Any, x: Any, vocab: int) -> Any:
    """What the logits processor adds to the base logits: its Punica call, into zeros."""
    import torch

    out = torch.zeros(x.shape[0], vocab)
    wrapper.add_lora_logits(out, x, layer.lora_a_stacked, layer.lora_b_stacked, 1.0)
    return out
