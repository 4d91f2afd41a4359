"""Measure the LoRA delta real vLLM layers add to the base-model rows of a mixed batch.

Run as ``python -m tests.serving.lora_slots_probe`` with the serving venv (a process of its own:
see :mod:`tests.serving.lora_layers`). It builds a QKV projection and a logits processor, as the
launcher patched vLLM's factories and as vLLM ships them, with two adapters loaded; runs vLLM's
CPU Punica wrapper on a batch that mixes base rows with adapter rows, as decode and as prefill;
and prints JSON: per layer, phase and variant, the slot count, the largest delta on base rows and
the adapter rows' deltas (to compare between the variants).
"""

from __future__ import annotations

import json
from typing import Any

from tests.serving import lora_layers as ll

SHAPES = ll.Shapes(hidden=64, head_size=32, heads=2, kv_heads=1, rank=8, slots=2)
VOCAB = 256
ROWS = (1, 0, 2, 0, 0, 1)  # LoRA ids per row; 0 is the base model


def main() -> None:
    import torch

    torch.manual_seed(0)
    base_rows = [i for i, lora in enumerate(ROWS) if lora == 0]
    adapter_rows = [i for i, lora in enumerate(ROWS) if lora != 0]
    report: dict[str, Any] = {}
    with ll.single_rank(), torch.no_grad():
        x = torch.randn(len(ROWS), SHAPES.hidden)
        qkv = ll.qkv_layers(SHAPES)
        logits = ll.logits_layers(SHAPES, VOCAB)
        for phase, prefill in (("decode", False), ("prefill", True)):
            for variant in ll.VARIANTS:
                wrapper = ll.punica(ROWS, prefill, SHAPES.slots, VOCAB)
                q, lp = qkv[variant], logits[variant]
                for name, layer, delta in (
                    ("qkv", q, ll.qkv_delta(wrapper, q, x)),
                    ("logits", lp, ll.logits_delta(wrapper, lp, x, VOCAB)),
                ):
                    stacked = layer.lora_a_stacked
                    report[f"{name}/{phase}/{variant}"] = {
                        "slots": (stacked[0] if isinstance(stacked, tuple) else stacked).shape[0],
                        "base_rows_max_delta": float(delta[base_rows].abs().max()),
                        "adapter_rows": delta[adapter_rows].tolist(),
                    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
