"""The operator reads a hub model's config the way the serving image's vLLM does.

For each real model in tests/fixtures/hub (and DeepSeek-V3's MLA config), vLLM's own ModelConfig
is built from the same config.json and compared with the preset the operator derives: layers,
KV heads, head size, max_model_len, dtype and which layers slide. transformers' default layer
patterns (the rules kaito.presets.hub_sizing copies for configs without layer_types) are checked
against transformers itself, model type by model type. The parsers the operator may pass must
be registered in this vLLM.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.hub import Repo
from kaito.presets.catalog import list_presets
from kaito.presets.hub_sizing import (
    _SLIDING_RULES,
    HubFile,
    HubModel,
    preset_from_hub,
    sliding_layers,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "hub"
DEEPSEEK = REPO / "tests" / "unit" / "presets" / "data" / "hub" / "deepseek-v3-config.json"
PARSERS = REPO / "src" / "kaito" / "presets" / "data" / "hub-parsers.yaml"
REPOS = sorted(f"{p.parent.name}/{p.name}" for p in FIXTURES.glob("*/*") if p.is_dir())


def _vllm_view(config: dict[str, Any], tokenizer: dict[str, Any] | None, tmp: Path) -> Any:
    from vllm.config import ModelConfig

    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps(config))
    if tokenizer is not None:
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    return ModelConfig(model=str(tmp), skip_tokenizer_init=True)


def _compare(model: HubModel, tmp: Path) -> None:
    preset = preset_from_hub(model)
    vllm = _vllm_view(model.config, model.tokenizer_config, tmp)
    text = vllm.hf_text_config
    assert preset.num_layers == text.num_hidden_layers
    assert preset.context_limit == vllm.max_model_len
    if vllm.use_mla:
        assert preset.kv_lora_rank is not None and preset.qk_rope_head_dim is not None
        assert preset.kv_lora_rank + preset.qk_rope_head_dim == vllm.get_head_size()
    else:
        assert preset.num_kv_heads == vllm.get_total_num_kv_heads()
        assert preset.head_dim == vllm.get_head_size()
        kinds = list(getattr(text, "layer_types", None) or [])
        window = getattr(text, "sliding_window", None)
        sliding = sum(k == "sliding_attention" for k in kinds) if window else 0
        assert preset.sliding_window_layers == sliding
        assert preset.sliding_window == (window if sliding else None)
    if preset.quantization is None:
        assert str(vllm.dtype) == f"torch.{preset.dtype}"


@pytest.mark.parametrize("repo_id", REPOS)
def test_fixture_models_are_read_as_vllm_reads_them(repo_id: str, tmp_path: Path) -> None:
    repo = Repo.load(repo_id, FIXTURES / repo_id)

    def read(name: str) -> dict[str, Any] | None:
        f = repo.files.get(name)
        return json.loads(f.local.read_text()) if f is not None and f.local else None

    model = HubModel(
        repo_id=repo_id,
        endpoint="http://hub.test",
        files=tuple(HubFile(path=f.path, size=f.size) for f in repo.files.values()),
        config=read("config.json") or {},
        tokenizer_config=read("tokenizer_config.json"),
    )
    _compare(model, tmp_path)


def test_an_mla_config_is_read_as_vllm_reads_it(tmp_path: Path) -> None:
    config = json.loads(DEEPSEEK.read_text())
    config.pop("quantization_config")  # fp8 has no CPU kernels to build a config for here
    model = HubModel(
        repo_id="deepseek-ai/DeepSeek-V3-0324",
        endpoint="http://hub.test",
        files=(HubFile(path="model.safetensors", size=10),),
        config=config,
    )
    _compare(model, tmp_path)


@pytest.mark.parametrize("model_type", sorted(_SLIDING_RULES))
def test_default_layer_patterns_are_transformers(model_type: str) -> None:
    from transformers import CONFIG_MAPPING

    extra: dict[str, Any] = {"num_hidden_layers": 13, "sliding_window": 64}
    if model_type.startswith("qwen"):
        extra |= {"use_sliding_window": True, "max_window_layers": 5}
    config = CONFIG_MAPPING[model_type](**extra)
    if config.get_text_config() is not config:  # a multimodal config: the text part slides
        config = CONFIG_MAPPING[model_type](text_config=extra)
    text = config.get_text_config()
    kinds = list(getattr(text, "layer_types", None) or [])
    raw = text.to_dict()
    raw.pop("layer_types", None)
    window, count, _ = sliding_layers(raw | {"model_type": model_type}, 13)
    text_window = getattr(text, "sliding_window", None)
    expected = sum(k == "sliding_attention" for k in kinds) if text_window else 0
    assert count == expected, (model_type, kinds)
    assert window == (text_window if expected else None)


def test_parsers_the_operator_may_pass_are_registered_in_this_vllm() -> None:
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    tables = yaml.safe_load(PARSERS.read_text())
    tools = set(tables["tool_parser_by_name_prefix"].values())
    tools |= {p.tool_parser for p in list_presets() if p.tool_parser}
    reasoning = set(tables["reasoning_parser_by_name_prefix"].values())
    reasoning |= {p.reasoning_parser for p in list_presets() if p.reasoning_parser}
    assert tools <= set(ToolParserManager.list_registered())
    assert reasoning <= set(ReasoningParserManager.list_registered())
