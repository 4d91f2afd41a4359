"""Build real vLLM LoRA layers in one process and measure the delta they add to base-model rows.

Run as ``python -m tests.serving.lora_slots_probe`` with the serving venv (one process: it sets up
vLLM's single-rank distributed state, which must not leak into the test process). It registers
the launcher's fix, builds a QKV projection and a logits processor through
``vllm.lora.model_manager``'s factories — once as patched, once through the unpatched originals —
loads two adapters into slots 0 and 1, runs vLLM's CPU Punica wrapper on a batch that mixes base
rows with adapter rows (as decode and as prefill), and prints JSON: per layer, phase and variant,
the slot count, the largest delta on base rows, and the adapter rows' deltas (to compare between
the variants).
"""

from __future__ import annotations

import json
from typing import Any

from tests.serving.helpers import free_port

SLOTS = 2  # adapters loaded (vLLM's --max-loras)
RANK = 8
HIDDEN = 64
HEAD = 32
VOCAB = 256
ROWS = (1, 0, 2, 0, 0, 1)  # LoRA ids per row; 0 is the base model


def main() -> None:
    import torch
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.config.lora import LoRAConfig
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    from serving import lora_fix

    lora_fix.register()
    torch.manual_seed(0)
    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(
            world_size=1,
            rank=0,
            distributed_init_method=f"tcp://127.0.0.1:{free_port()}",
            local_rank=0,
            backend="gloo",
        )
        initialize_model_parallel(1, 1)
        import vllm.lora.model_manager as manager
        from vllm.lora.layers.utils import LoRAMapping
        from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
        from vllm.model_executor.layers.linear import QKVParallelLinear
        from vllm.model_executor.layers.logits_processor import LogitsProcessor
        from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

        config = LoRAConfig(max_lora_rank=RANK, max_loras=SLOTS, lora_dtype=torch.float32)
        x = torch.randn(len(ROWS), HIDDEN)
        qkv = QKVParallelLinear(HIDDEN, HEAD, 2, 1, bias=False)
        head = ParallelLMHead(VOCAB, HIDDEN)
        logits = LogitsProcessor(VOCAB)
        outs = (HEAD * 2, HEAD, HEAD)  # q, k, v
        qkv_lora = [
            ([torch.randn(RANK, HIDDEN) for _ in outs], [torch.randn(n, RANK) for n in outs])
            for _ in range(SLOTS)
        ]
        head_lora = [(torch.randn(RANK, HIDDEN), torch.randn(VOCAB, RANK)) for _ in range(SLOTS)]
        base_rows = [i for i, lora in enumerate(ROWS) if lora == 0]
        adapter_rows = [i for i, lora in enumerate(ROWS) if lora != 0]
        report: dict[str, Any] = {}
        for variant in ("patched", "original"):

            def build(name: str, *args: Any, variant: str = variant) -> Any:
                factory = getattr(manager, name)
                if variant == "original":
                    factory = getattr(factory, "__wrapped__", factory)
                return factory(*args)

            layer = build("from_layer", qkv, SLOTS, config, ["q_proj", "k_proj", "v_proj"], None)
            lp = build("from_layer_logits_processor", logits, head, SLOTS, config, None)
            for slot in range(SLOTS):
                layer.set_lora(slot, *qkv_lora[slot])
                lp.set_lora(slot, *head_lora[slot])
            for phase, prefill in (("decode", False), ("prefill", True)):
                punica = PunicaWrapperCPU(64, 16, "cpu")
                mapping = LoRAMapping(ROWS, ROWS, is_prefill=prefill)
                punica.update_metadata(mapping, [1, 2], SLOTS + 1, VOCAB)
                # The calls the layers' forward makes, into zeros: the LoRA delta alone.
                qkv_delta = torch.zeros(len(ROWS), sum(layer.output_slices))
                logits_delta = torch.zeros(len(ROWS), VOCAB)
                with torch.no_grad():
                    punica.add_lora_linear(
                        qkv_delta,
                        x,
                        layer.lora_a_stacked,
                        layer.lora_b_stacked,
                        1.0,
                        layer.output_slices,
                    )
                    punica.add_lora_logits(
                        logits_delta, x, lp.lora_a_stacked, lp.lora_b_stacked, 1.0
                    )
                for name, slots, delta in (
                    ("qkv", layer.lora_a_stacked[0].shape[0], qkv_delta),
                    ("logits", lp.lora_a_stacked.shape[0], logits_delta),
                ):
                    report[f"{name}/{phase}/{variant}"] = {
                        "slots": slots,
                        "base_rows_max_delta": float(delta[base_rows].abs().max()),
                        "adapter_rows": delta[adapter_rows].tolist(),
                    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
