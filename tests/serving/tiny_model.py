"""A tiny Llama model, tokenizer and peft LoRA adapters built locally (nothing from a hub).

The weights are random but seeded, so vLLM's greedy float32 output can be compared token for token
with transformers (+peft). Everything is cached under a directory keyed by a hash of this file and
the library versions, so a test session builds it once (a few seconds) and reuses it afterwards.

Run ``python -m tests.serving.tiny_model`` to build (or find) the cache and print its path.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

ADAPTERS = {"adapter-a": 1, "adapter-b": 2}  # name -> seed of its lora_B weights
LORA_RANK = 8
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_WORDS = [
    "the",
    "a",
    "model",
    "serves",
    "tokens",
    "fast",
    "cluster",
    "node",
    "gpu",
    "adapter",
    "lora",
    "kaito",
    "workspace",
    "inference",
    "tuning",
    "pod",
    "runs",
    "answers",
    "hello",
    "world",
    "chat",
    "prompt",
    "weights",
    "batch",
    "queue",
    "latency",
    "request",
    "reply",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "red",
    "green",
    "blue",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
]


@dataclass(frozen=True)
class TinyModel:
    """Paths of a built tiny model and its adapters."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    def adapter(self, name: str) -> Path:
        return self.root / "adapters" / name


def _cache_key() -> str:
    import peft
    import tokenizers
    import transformers

    h = hashlib.sha256(Path(__file__).read_bytes())
    for mod in (transformers, tokenizers, peft):
        h.update(mod.__version__.encode())
    return h.hexdigest()[:12]


def _corpus(lines: int = 3000) -> list[str]:
    rng = random.Random(7)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16))) for _ in range(lines)]


def _build_tokenizer(dest: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=specials[4:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dest)


def _build_model(dest: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(dest)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    # Larger than the default init so greedy decoding is not one repeated token.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.08)
    model.save_pretrained(dest, safe_serialization=True)


def _build_adapter(model_dir: Path, dest: Path, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=LORA_RANK, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0
    )
    torch.manual_seed(seed)
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: an adapter that changes nothing
                p.normal_(0.0, 0.3)
    model.save_pretrained(dest, safe_serialization=True)


def build(cache: Path | None = None) -> TinyModel:
    """Build the tiny model and adapters once per cache key and return their paths."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    base = cache or Path(os.environ.get("KAITO_CACHE_DIR", Path.home() / ".cache" / "kaito-py"))
    root = base / "serving-fixtures" / _cache_key()
    done = root / ".complete"
    if done.exists():
        return TinyModel(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / (root.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            tm = TinyModel(root)
            _build_tokenizer(tm.model)
            _build_model(tm.model)
            for name, seed in ADAPTERS.items():
                _build_adapter(tm.model, tm.adapter(name), seed)
            done.write_text(json.dumps(sorted(ADAPTERS)))
    return TinyModel(root)


if __name__ == "__main__":
    print(build().root)
