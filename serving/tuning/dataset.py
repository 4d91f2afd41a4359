"""Training rows from parquet (or jsonl/csv) files, tokenized for causal-LM fine-tuning.

Three row shapes are understood, chosen by DatasetConfig or, when it names no columns, by the
columns present:
- chat: a ``messages`` column of ``[{role, content}, ...]``, rendered with the tokenizer's chat
  template; the loss covers the final assistant turn when the chat ends with one;
- prompt/completion: ``context_column`` + ``response_column`` (auto: ``prompt`` + ``completion``),
  rendered as a one-turn chat when the tokenizer has a template, else concatenated; the loss
  covers the completion only;
- plain text: ``response_column`` alone (auto: ``text``), the loss covering all of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv
import pyarrow.json
import pyarrow.parquet
import torch

from serving.tuning.report import StageError
from serving.tuning.settings import DatasetSettings

IGNORE = -100  # label value the loss skips


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class Layout:
    """Which columns a row is read from."""

    kind: str  # "chat" | "pair" | "text"
    messages: str | None = None
    context: str | None = None
    response: str | None = None


def data_files(root: Path, settings: DatasetSettings) -> list[Path]:
    base = root / settings.dataset_path if settings.dataset_path else root
    if base.is_file():
        return [base]
    extensions = [settings.dataset_extension] if settings.dataset_extension else ["parquet"]
    if settings.dataset_extension == "json":
        extensions.append("jsonl")
    files = sorted(p for ext in extensions for p in base.rglob(f"*.{ext}") if p.is_file())
    if not files:
        wanted = " or ".join(f"*.{e}" for e in extensions)
        raise StageError(f"no {wanted} files under {base}; check tuning.input and DatasetConfig")
    return files


def read_rows(files: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """All rows of all files, and the column names they share."""
    rows: list[dict[str, Any]] = []
    columns: list[str] | None = None
    for path in files:
        try:
            if path.suffix in (".json", ".jsonl"):
                table = pyarrow.json.read_json(path)
            elif path.suffix == ".csv":
                table = pyarrow.csv.read_csv(path)
            else:
                table = pyarrow.parquet.read_table(path)
        except (pa.ArrowException, OSError) as err:
            raise StageError(f"cannot read {path.name}: {err}") from None
        names = list(table.column_names)
        columns = names if columns is None else [c for c in columns if c in names]
        rows.extend(table.to_pylist())
    return rows, columns or []


def layout(settings: DatasetSettings, columns: list[str]) -> Layout:
    def need(*names: str | None) -> None:
        missing = [n for n in names if n and n not in columns]
        if missing:
            raise StageError(
                f"DatasetConfig names column {missing[0]!r}, but the data has only "
                f"{', '.join(columns) or 'no columns'}"
            )

    if settings.messages_column:
        need(settings.messages_column)
        return Layout("chat", messages=settings.messages_column)
    if settings.context_column:
        response = settings.response_column or "completion"
        need(settings.context_column, response)
        return Layout("pair", context=settings.context_column, response=response)
    if settings.response_column:
        need(settings.response_column)
        return Layout("text", response=settings.response_column)
    if "messages" in columns:
        return Layout("chat", messages="messages")
    if "prompt" in columns and "completion" in columns:
        return Layout("pair", context="prompt", response="completion")
    if "text" in columns:
        return Layout("text", response="text")
    raise StageError(
        f"cannot tell how to train on columns {', '.join(columns) or '(none)'}: use a "
        "'messages' column, 'prompt' + 'completion', or 'text', or name the columns in "
        "DatasetConfig (messages_column, or context_column + response_column)"
    )


def _check_messages(value: object, index: int) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise StageError(f"row {index}: messages must be a non-empty list of {{role, content}}")
    out = []
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise StageError(f"row {index}: every message needs a string 'content' and a 'role'")
        out.append({"role": str(message.get("role")), "content": message["content"]})
    return out


class Encoder:
    """Turns rows into token ids with the prompt part masked out of the loss."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.has_template = bool(getattr(tokenizer, "chat_template", None))

    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
        return str(text)

    def _split(self, prompt: str, full: str, special: bool) -> Example:
        full_ids = self._ids(full, special)
        prompt_ids = self._ids(prompt, special) if prompt else []
        cut = len(prompt_ids) if full_ids[: len(prompt_ids)] == prompt_ids else 0
        labels = [IGNORE] * cut + full_ids[cut:]
        return Example(full_ids[: self.max_length], labels[: self.max_length])

    def chat(self, messages: list[dict[str, str]]) -> Example:
        if not self.has_template:
            raise StageError(
                "the data is in chat format but the model's tokenizer has no chat template; "
                "use prompt/completion columns instead"
            )
        full = self._render(messages, False)
        prompt = ""
        if messages[-1]["role"] == "assistant" and len(messages) > 1:
            prompt = self._render(messages[:-1], True)
        return self._split(prompt, full, special=False)

    def pair(self, context: str, response: str) -> Example:
        if self.has_template:
            turns = [
                {"role": "user", "content": context},
                {"role": "assistant", "content": response},
            ]
            return self.chat(turns)
        eos = self.tokenizer.eos_token or ""
        return self._split(context, context + response + eos, special=True)

    def text(self, text: str) -> Example:
        eos = self.tokenizer.eos_token or ""
        return self._split("", text + eos, special=True)


def encode(rows: list[dict[str, Any]], shape: Layout, encoder: Encoder) -> list[Example]:
    examples = []
    for index, row in enumerate(rows):
        if shape.kind == "chat":
            example = encoder.chat(_check_messages(row.get(shape.messages or ""), index))
        else:
            response = row.get(shape.response or "")
            context = row.get(shape.context or "") if shape.kind == "pair" else ""
            if not isinstance(response, str) or not isinstance(context, str):
                continue  # null cells: nothing to learn from this row
            if shape.kind == "pair":
                example = encoder.pair(context, response)
            else:
                example = encoder.text(response)
        if any(label != IGNORE for label in example.labels):
            examples.append(example)
    return examples


def split(
    examples: list[Example], settings: DatasetSettings
) -> tuple[list[Example], list[Example]]:
    """Shuffle (seeded) and cut into train and eval parts by ``train_test_split``."""
    ordered = list(examples)
    if settings.shuffle_dataset:
        random.Random(settings.shuffle_seed).shuffle(ordered)
    cut = max(1, round(len(ordered) * settings.train_test_split))
    return ordered[:cut], ordered[cut:]


def load_examples(
    root: Path, settings: DatasetSettings, tokenizer: Any
) -> tuple[list[Example], list[Example], Layout]:
    rows, columns = read_rows(data_files(root, settings))
    shape = layout(settings, columns)
    examples = encode(rows, shape, Encoder(tokenizer, settings.max_seq_length))
    if not examples:
        raise StageError(f"no usable training rows in {root} ({len(rows)} rows read)")
    train, evaluation = split(examples, settings)
    return train, evaluation, shape


class Collator:
    """Pads a batch to its longest row; padded labels are ignored by the loss."""

    def __init__(self, pad_id: int, multiple_of: int | None = None) -> None:
        self.pad_id = pad_id
        self.multiple_of = multiple_of

    def __call__(self, batch: list[Example]) -> dict[str, Any]:
        width = max(len(e.input_ids) for e in batch)
        if self.multiple_of:
            width = -(-width // self.multiple_of) * self.multiple_of
        ids, labels, mask = [], [], []
        for e in batch:
            pad = width - len(e.input_ids)
            ids.append(e.input_ids + [self.pad_id] * pad)
            labels.append(e.labels + [IGNORE] * pad)
            mask.append([1] * len(e.input_ids) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }
