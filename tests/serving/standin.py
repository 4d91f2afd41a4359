"""Tiny stand-ins for real presets: a model of the preset's architecture and context, random
weights, the tiny test tokenizer, and a LoRA adapter on the architecture's own projection.

The seed's walkthrough applies phi-3 Workspaces unchanged; nothing can be downloaded from the
hub here, so a local hub (hack/hub.py) serves one of these under the real model's id. Being a
``Phi3ForCausalLM`` (fused ``qkv_proj``), it goes through the same vLLM model class, the same
LoRA targets and the same tuning defaults as the real model would; only the sizes are tiny.

    python -m tests.serving.standin microsoft/Phi-3-mini-4k-instruct DEST [--adapter DEST2]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from tests.serving.tiny_model import LORA_RANK, build

# hub id -> the context window of the real model (what vLLM sizes max-model-len against)
CONTEXTS = {
    "microsoft/Phi-3-mini-4k-instruct": 4096,
    "microsoft/Phi-3-mini-128k-instruct": 131072,
}


def build_standin(model_id: str, dest: Path) -> Path:
    """Write a tiny Phi-3 with the tiny test tokenizer to `dest`; returns `dest`."""
    import torch
    from transformers import AutoTokenizer, Phi3Config, Phi3ForCausalLM

    if model_id not in CONTEXTS:
        raise SystemExit(f"no stand-in for {model_id}; one of {', '.join(CONTEXTS)}")
    tiny = build().model
    dest.mkdir(parents=True, exist_ok=True)
    for f in tiny.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")) or f.name == "chat_template.jinja":
            shutil.copy(f, dest / f.name)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    context = CONTEXTS[model_id]
    config = Phi3Config(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=context,
        original_max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(3)
    model = Phi3ForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.08)
    model.save_pretrained(dest, safe_serialization=True)
    (dest / "kaito-standin.json").write_text(json.dumps({"stands_in_for": model_id}))
    return dest


def build_adapter(model_dir: Path, dest: Path) -> Path:
    """A LoRA adapter on Phi-3's fused attention projection, with non-zero B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=LORA_RANK, lora_alpha=16, target_modules=["qkv_proj"], lora_dropout=0.0)
    torch.manual_seed(4)
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)
    model.save_pretrained(dest, safe_serialization=True)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_id", choices=sorted(CONTEXTS))
    parser.add_argument("dest", type=Path)
    parser.add_argument("--adapter", type=Path, help="also write a LoRA adapter here")
    args = parser.parse_args()
    build_standin(args.model_id, args.dest)
    if args.adapter:
        build_adapter(args.dest, args.adapter)
    print(args.dest)


if __name__ == "__main__":
    main()
