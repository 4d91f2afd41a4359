"""A tiny Llama model and tokenizer with a chat template, built locally from random weights.

Cached under $KAITO_CACHE_DIR (default ~/.cache/kaito-py)/tuning-fixtures/<hash of this file>,
so a test session builds it once in a few seconds. Run with the serving venv's python.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_TEXT = (
    "kaito tunes a tiny model on parquet rows the adapter is pushed to a registry and "
    "served again hello world what is the answer blue green red one two three cluster node"
)
WORDS = _TEXT.split(" ")


def sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(count)]


def _tokenizer(dest: Path) -> None:
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
    tok.train_from_iterator(sentences(2000, 1), trainer=trainer)
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


def _model(dest: Path) -> None:
    tok = AutoTokenizer.from_pretrained(dest)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(dest, safe_serialization=True)


def build(cache: Path | None = None) -> Path:
    """The model directory (tokenizer included), built once per version of this file."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    base = cache or Path(os.environ.get("KAITO_CACHE_DIR", Path.home() / ".cache" / "kaito-py"))
    key = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    root = base / "tuning-fixtures" / key
    if (root / ".complete").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            _tokenizer(root)
            _model(root)
            (root / ".complete").write_text("ok\n")
    return root


if __name__ == "__main__":
    print(build())
