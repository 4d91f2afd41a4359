"""Trainer stage: fine-tune a peft LoRA (or QLoRA) adapter with transformers' Trainer.

QLoRA needs bitsandbytes' 4/8-bit kernels, which run on CUDA GPUs. Without a CUDA device the
quantization section is dropped and plain LoRA is trained on the unquantized weights, after a
``warning`` event saying so: the adapter is the same shape and loads the same way, only the
memory use differs, so a CPU run (tests, small models) still produces a usable adapter.

Only the adapter is saved (adapter_config.json + adapter_model.safetensors); the marker file
``fine_tuning_completed.txt`` is written after it, so the output stage never sees a partial one.

Usage: python -m serving.tuning.train --config /mnt/config/training_config.yaml \
           --data /mnt/data --output /mnt/results [--model /workspace/weights]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from serving.tuning import dataset, settings
from serving.tuning.report import StageError, event, run_stage

STAGE = "train"
DEFAULT_MODEL = "/workspace/weights"


def _dtype(name: object) -> Any:
    if name in (None, "auto"):
        return "auto" if name == "auto" else None
    value = getattr(torch, str(name), None)
    if not isinstance(value, torch.dtype):
        raise StageError(f"ModelConfig.torch_dtype: unknown dtype {name!r}")
    return value


def model_kwargs(cfg: settings.Settings, cuda: bool) -> dict[str, Any]:
    kwargs = dict(cfg.model)
    dtype = kwargs.pop("torch_dtype", None) or kwargs.pop("dtype", None)
    kwargs.pop("dtype", None)
    if dtype is not None:
        kwargs["dtype"] = _dtype(dtype)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # one full replica per process under torchrun/accelerate (DDP)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    elif not cuda:
        kwargs.pop("device_map", None)  # CPU: no placement to do
    return kwargs


def quantization(cfg: settings.Settings, cuda: bool) -> Any:
    if not cfg.quantized:
        return None
    if not cuda:
        event(
            STAGE,
            "warning",
            message="QLoRA quantization needs a CUDA GPU (bitsandbytes); none is present, so "
            "QuantizationConfig is ignored and plain LoRA is trained on unquantized weights",
        )
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise StageError(
            "QuantizationConfig asks for 4/8-bit loading but bitsandbytes is not installed "
            "in the image; use method lora or an image with bitsandbytes"
        ) from None
    q = dict(cfg.quantization)
    if "bnb_4bit_compute_dtype" in q:
        q["bnb_4bit_compute_dtype"] = _dtype(q["bnb_4bit_compute_dtype"])
    try:
        return BitsAndBytesConfig(**q)
    except (TypeError, ValueError) as err:
        raise StageError(f"QuantizationConfig: {err}") from None


def lora_config(cfg: settings.Settings) -> Any:
    kwargs = {"task_type": TaskType.CAUSAL_LM, **cfg.lora}
    if "target_modules" not in kwargs:
        modules = settings.default_target_modules()
        if modules:
            kwargs["target_modules"] = modules
    try:
        return LoraConfig(**kwargs)
    except (TypeError, ValueError) as err:
        raise StageError(f"LoraConfig: {err}") from None


def training_arguments(cfg: settings.Settings, output: Path, has_eval: bool) -> Any:
    kwargs: dict[str, Any] = {
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
        "disable_tqdm": True,
        **cfg.training,
        "output_dir": str(output),
        "remove_unused_columns": False,  # rows are already tokenized Examples
    }
    if not has_eval:
        kwargs["eval_strategy"] = "no"
    try:
        return TrainingArguments(**kwargs)
    except (TypeError, ValueError) as err:
        raise StageError(f"TrainingArguments: {err}") from None


def progress_callback() -> Any:
    class JsonProgress(TrainerCallback):  # type: ignore[misc]
        """Each Trainer log record as a ``progress`` event (step, epoch, loss, ...)."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if not state.is_world_process_zero or not logs:
                return
            fields = {k: v for k, v in logs.items() if isinstance(v, int | float)}
            fields |= {
                "step": state.global_step,
                "max_steps": state.max_steps,
                "epoch": round(state.epoch or 0.0, 4),
            }
            event(STAGE, "progress", **fields)

    return JsonProgress()


def train(args: argparse.Namespace) -> None:
    cfg = settings.load(args.config)
    output = settings.output_dir(cfg, args.output)
    if cfg.collator.get("mlm"):
        event(STAGE, "note", message="DataCollator.mlm ignored: causal LMs train on next tokens")

    cuda = torch.cuda.is_available()
    started = time.monotonic()
    event(STAGE, "start", model=args.model, data=str(args.data), output=str(output), cuda=cuda)
    shared = ("local_files_only", "revision", "trust_remote_code")
    loader = {k: cfg.model[k] for k in shared if k in cfg.model}
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model, **loader)
    except (OSError, ValueError) as err:
        raise StageError(f"cannot load the tokenizer of {args.model}: {err}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_rows, eval_rows, shape = dataset.load_examples(args.data, cfg.dataset, tokenizer)
    event(STAGE, "dataset", format=shape.kind, train_rows=len(train_rows), eval_rows=len(eval_rows))

    quant = quantization(cfg, cuda)
    kwargs = model_kwargs(cfg, cuda)
    if quant is not None:
        kwargs["quantization_config"] = quant
    try:
        model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    except (OSError, ValueError) as err:
        raise StageError(f"cannot load the model {args.model}: {err}") from None
    if quant is not None:
        checkpointing = bool(cfg.training.get("gradient_checkpointing", False))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    model = get_peft_model(model, lora_config(cfg))

    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, output, bool(eval_rows)),
        train_dataset=train_rows,
        eval_dataset=eval_rows or None,
        data_collator=dataset.Collator(
            tokenizer.pad_token_id, cfg.collator.get("pad_to_multiple_of")
        ),
        callbacks=[progress_callback()],
    )
    trainer.remove_callback(PrinterCallback)  # its dict dumps are not JSON; ours replace them
    trainer.remove_callback(ProgressCallback)
    result = trainer.train()
    if not trainer.is_world_process_zero():
        return
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output, safe_serialization=True)
    missing = [f for f in settings.ADAPTER_FILES if not (output / f).is_file()]
    if missing:
        raise RuntimeError(f"save_pretrained wrote no {', '.join(missing)} in {output}")
    summary = {
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "seconds": round(time.monotonic() - started, 2),
        "quantized": quant is not None,
    }
    (output / settings.MARKER).write_text(json.dumps(summary) + "\n")
    event(STAGE, "completed", output=str(output), **summary)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.tuning.train", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="training_config.yaml")
    parser.add_argument("--data", type=Path, required=True, help="directory of training files")
    parser.add_argument("--output", type=Path, help="adapter directory (default: output_dir)")
    parser.add_argument(
        "--model",
        default=os.environ.get("KAITO_MODEL", DEFAULT_MODEL),
        help="base model directory or hub id (default $KAITO_MODEL or /workspace/weights)",
    )
    args = parser.parse_args(argv)
    run_stage(STAGE, lambda: train(args))


if __name__ == "__main__":
    main()
