"""Training config validation: every section, the lora/qlora rules and the output_dir rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from kaito.presets import tuning as t
from kaito.presets.errors import SpecError


def err(config: object, method: str = "lora") -> SpecError:
    with pytest.raises(SpecError) as info:
        t.validate_training_config(config, method)
    return info.value


def test_defaults_follow_upstream_templates_and_validate() -> None:
    lora, qlora = t.default_config("lora"), t.default_config("qlora")
    assert lora["QuantizationConfig"] == {"load_in_4bit": False}
    assert qlora["QuantizationConfig"] == {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_use_double_quant": True,
    }
    for config in (lora, qlora):
        assert config["LoraConfig"] == {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0}
        assert config["TrainingArguments"]["output_dir"] == "/mnt/results"
        assert config["TrainingArguments"]["save_strategy"] == "no"
        assert config["ModelConfig"] == {"torch_dtype": "bfloat16", "device_map": "auto"}
        assert config["DatasetConfig"] == {"shuffle_dataset": True, "train_test_split": 1}
    assert t.validate_training_config(lora, "lora") == lora
    assert t.validate_training_config(qlora, "QLoRA") == qlora
    # the YAML form round-trips through the parser
    assert t.parse_training_config(t.default_config_yaml("qlora"), "qlora") == qlora
    # each call is a fresh copy
    lora["LoraConfig"]["r"] = 64
    assert t.default_config("lora")["LoraConfig"]["r"] == 8


def test_unknown_method() -> None:
    with pytest.raises(SpecError) as info:
        t.default_config("dora")
    assert info.value.field == "tuning.method"
    assert "lora or qlora" in str(info.value)


def test_unknown_section_names_accepted_sections_and_suggests() -> None:
    e = err({"LoRAConfig": {"r": 8}})
    assert e.field == "training_config.yaml:LoRAConfig"
    assert "did you mean LoraConfig" in e.reason
    assert "ModelConfig, QuantizationConfig, LoraConfig" in e.reason


def test_config_must_be_a_mapping_and_yaml_errors_are_located() -> None:
    assert err(["ModelConfig"]).field == "training_config.yaml"
    with pytest.raises(SpecError) as info:
        t.parse_training_config("LoraConfig: {r: 8\n", "lora")
    assert "not valid YAML" in str(info.value) and "line" in str(info.value)
    # an empty file or empty sections are fine
    assert t.parse_training_config("", "lora") == {}
    assert t.validate_training_config({"LoraConfig": None}, "lora") == {"LoraConfig": {}}
    assert err({"LoraConfig": [1, 2]}).field == "training_config.yaml:LoraConfig"


CASES: list[tuple[str, str, object, str]] = [
    # section, key, bad value, words the message must contain
    ("ModelConfig", "torch_dtype", "bf16", "one of auto, float32, float16, bfloat16"),
    ("ModelConfig", "local_files_only", "yes", "true or false"),
    ("ModelConfig", "device_map", 3, "a string or a mapping"),
    ("QuantizationConfig", "bnb_4bit_quant_type", "int4", "one of nf4, fp4"),
    ("QuantizationConfig", "bnb_4bit_use_double_quant", 1, "true or false"),
    ("QuantizationConfig", "llm_int8_skip_modules", "lm_head", "a list of strings"),
    ("LoraConfig", "r", 0, ">= 1"),
    ("LoraConfig", "r", 8.5, "an integer"),
    ("LoraConfig", "r", True, "an integer"),
    ("LoraConfig", "lora_dropout", 1.0, "< 1"),
    ("LoraConfig", "target_modules", 5, "a string or a list of strings"),
    ("LoraConfig", "bias", "some", "one of none, all, lora_only"),
    ("TrainingArguments", "learning_rate", 0, "> 0"),
    ("TrainingArguments", "learning_rate", "2e-4", "a number"),
    ("TrainingArguments", "per_device_train_batch_size", 0, ">= 1"),
    ("TrainingArguments", "save_strategy", "sometimes", "one of no, steps, epoch, best"),
    ("TrainingArguments", "output_dir", 7, "a string"),
    ("DatasetConfig", "train_test_split", 0, "> 0 and <= 1"),
    ("DatasetConfig", "train_test_split", 1.5, "> 0 and <= 1"),
    ("DatasetConfig", "shuffle_dataset", "true", "true or false"),
    ("DatasetConfig", "messages_column", ["m"], "a string"),
    ("DatasetConfig", "dataset_extension", "xlsx", "one of parquet, jsonl, json, csv"),
    ("DataCollator", "mlm", "false", "true or false"),
    ("DataCollator", "mlm_probability", 0, "> 0 and <= 1"),
    ("DataCollator", "pad_to_multiple_of", -8, ">= 1"),
]


@pytest.mark.parametrize(("section", "key", "value", "words"), CASES)
def test_wrong_types_and_ranges_name_section_key_and_what_is_accepted(
    section: str, key: str, value: object, words: str
) -> None:
    config: dict[str, Any] = copy.deepcopy(t.default_config("lora"))
    config.setdefault(section, {})[key] = value
    e = err(config)
    assert e.field == f"training_config.yaml:{section}.{key}"
    assert words in e.reason
    assert repr(value) in e.reason


@pytest.mark.parametrize("section", list(t.SECTIONS))
def test_unknown_keys_in_every_section(section: str) -> None:
    e = err({section: {"no_such_key": 1}})
    assert e.field == f"training_config.yaml:{section}.no_such_key"
    assert "unknown key" in e.reason
    assert next(iter(t.SECTIONS[section])) in e.reason  # the accepted keys are listed


def test_typo_gets_a_suggestion_and_known_foreign_keys_a_fix() -> None:
    assert "did you mean learning_rate" in err({"TrainingArguments": {"learning_rte": 1}}).reason
    assert "eval_strategy" in err({"TrainingArguments": {"evaluation_strategy": "no"}}).reason
    assert "tuning.preset" in err({"ModelConfig": {"pretrained_model_name_or_path": "x"}}).reason
    assert "output.image" in err({"TrainingArguments": {"push_to_hub": True}}).reason


def test_valid_values_of_every_kind_pass() -> None:
    config: dict[str, dict[str, Any]] = {
        "ModelConfig": {"torch_dtype": "auto", "device_map": {"": 0}, "trust_remote_code": False},
        "QuantizationConfig": {"load_in_4bit": False, "llm_int8_skip_modules": ["lm_head"]},
        "LoraConfig": {
            "r": 16,
            "lora_alpha": 32.0,
            "lora_dropout": 0.05,
            "target_modules": ["q_proj", "v_proj"],
            "init_lora_weights": "gaussian",
            "layers_to_transform": [0, 1],
        },
        "TrainingArguments": {
            "num_train_epochs": 1,
            "max_steps": -1,
            "learning_rate": 2e-4,
            "report_to": ["none"],
            "output_dir": "/mnt/results/run-1/../run-2",
        },
        "DatasetConfig": {"messages_column": "conversation", "max_seq_length": 512},
        "DataCollator": {"mlm": True, "mlm_probability": 0.15},
    }
    assert t.validate_training_config(config, "lora") == config
    assert t.output_dir(config) == "/mnt/results/run-2"
    assert t.output_dir({}) == "/mnt/results"


def test_lora_must_not_quantize() -> None:
    for key in ("load_in_4bit", "load_in_8bit"):
        e = err({"QuantizationConfig": {key: True}}, "lora")
        assert e.field == f"training_config.yaml:QuantizationConfig.{key}"
        assert "method lora" in e.reason and "qlora" in e.reason


def test_qlora_requires_a_quantized_load() -> None:
    for config in ({}, {"QuantizationConfig": {"load_in_4bit": False}}, t.default_config("lora")):
        e = err(config, "qlora")
        assert e.field == "training_config.yaml:QuantizationConfig.load_in_4bit"
        assert "load_in_4bit: true" in e.reason
    eight = {"QuantizationConfig": {"load_in_8bit": True}}
    assert t.validate_training_config(eight, "qlora") == eight


def test_4bit_and_8bit_together() -> None:
    e = err({"QuantizationConfig": {"load_in_4bit": True, "load_in_8bit": True}}, "qlora")
    assert "cannot both be true" in e.reason


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("results", "absolute path under /mnt"),
        ("/tmp/results", "must be under /mnt"),
        ("/mnt", "must be under /mnt"),
        ("/mnt/../etc", "must be under /mnt"),
        ("/mntx/results", "must be under /mnt"),
        ("/mnt/data/out", "inside /mnt/data"),
        ("/mnt/config", "inside /mnt/config"),
    ],
)
def test_output_dir_must_resolve_under_mnt(path: str, words: str) -> None:
    e = err({"TrainingArguments": {"output_dir": path}})
    assert e.field == "training_config.yaml:TrainingArguments.output_dir"
    assert words in e.reason


def test_dataset_columns_and_path_rules() -> None:
    e = err({"DatasetConfig": {"messages_column": "m", "context_column": "c"}})
    assert e.field == "training_config.yaml:DatasetConfig.context_column"
    assert "messages_column" in e.reason
    ok = {"DatasetConfig": {"context_column": "q", "response_column": "a"}}
    assert t.validate_training_config(ok, "lora") == ok
    for bad in ("/etc/passwd", "../x", "a/../../b"):
        e = err({"DatasetConfig": {"dataset_path": bad}})
        assert e.field == "training_config.yaml:DatasetConfig.dataset_path"


def test_yaml_text_of_a_typical_user_config() -> None:
    text = yaml.safe_dump(
        {
            "ModelConfig": {"torch_dtype": "bfloat16"},
            "QuantizationConfig": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
            "TrainingArguments": {"num_train_epochs": 2, "output_dir": "/mnt/output"},
            "DatasetConfig": {"context_column": "question", "response_column": "answer"},
        }
    )
    parsed = t.parse_training_config(text, "qlora")
    assert parsed["TrainingArguments"]["num_train_epochs"] == 2
