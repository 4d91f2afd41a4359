"""Sizing a model from its hub metadata: real models' configs and sizes (tests/fixtures/hub).

Where a model is also a curated preset, the figures sized from the hub must give the estimator
exactly the curated preset's answers on every instance type.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from hack.hub import Repo
from kaito.presets import FitError, SpecError, estimate, get_preset, list_skus
from kaito.presets.catalog import GIB, Preset
from kaito.presets.hub_sizing import (
    HubFile,
    HubModel,
    is_hub_id,
    kv_formula,
    preset_from_hub,
    sliding_layers,
    supported_architectures,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "hub"
DEEPSEEK_V3_CONFIG = Path(__file__).parent / "data" / "hub" / "deepseek-v3-config.json"
CURATED = {
    "microsoft/Phi-3-mini-4k-instruct": "phi-3-mini-4k-instruct",
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b-instruct",
}


def hub_model(repo_id: str, **changes: Any) -> HubModel:
    """A fixture repository as the hub client would report it."""
    repo = Repo.load(repo_id, FIXTURES / repo_id)

    def read(name: str) -> dict[str, Any] | None:
        f = repo.files.get(name)
        return json.loads(f.local.read_text()) if f is not None and f.local else None

    fields: dict[str, Any] = {
        "repo_id": repo_id,
        "sha": repo.sha,
        "endpoint": "http://hub.test",
        "gated": repo.gated,
        "files": tuple(HubFile(path=f.path, size=f.size) for f in repo.files.values()),
        "config": read("config.json"),
        "tokenizer_config": read("tokenizer_config.json"),
        "generation_config": read("generation_config.json"),
    }
    return HubModel(**(fields | changes))


def outcome(preset: Preset, sku_name: str, max_model_len: int | None) -> object:
    sku = next(s for s in list_skus() if s.name == sku_name)
    try:
        return estimate(preset, sku, max_model_len=max_model_len)
    except FitError as err:
        return ("FitError", err.field)


def same_sizing_facts(generic: Preset, curated: Preset) -> None:
    for attr in (
        "num_layers",
        "num_kv_heads",
        "head_dim",
        "kv_lora_rank",
        "qk_rope_head_dim",
        "context_limit",
        "dtype",
        "quantization",
        "architecture",
        "kv_bytes_per_token",
        "sliding_window",
    ):
        assert getattr(generic, attr) == getattr(curated, attr), attr
    # upstream records weights to a hundredth of a GiB
    assert abs(generic.param_bytes - curated.param_bytes) <= 0.005 * GIB


@pytest.mark.parametrize("repo_id", sorted(CURATED))
def test_a_curated_model_sized_from_the_hub_plans_like_its_preset(repo_id: str) -> None:
    generic = preset_from_hub(hub_model(repo_id))
    curated = get_preset(CURATED[repo_id])
    assert curated is not None and generic.origin == "hub" and curated.origin == "catalog"
    same_sizing_facts(generic, curated)
    for sku in list_skus():
        for context in (None, 2048, 4096):
            assert outcome(generic, sku.name, context) == outcome(curated, sku.name, context), (
                sku.name,
                context,
            )


def test_an_mla_model_sized_from_its_config_plans_like_its_preset() -> None:
    """DeepSeek-V3's config.json (fp8, MLA); weights given as the index's total, not per file."""
    curated = get_preset("deepseek-v3-0324")
    assert curated is not None
    shards = tuple(HubFile(path=f"model-{i:05d}-of-000163.safetensors") for i in range(1, 164))
    model = HubModel(
        repo_id="deepseek-ai/DeepSeek-V3-0324",
        endpoint="http://hub.test",
        files=(*shards, HubFile(path="model.safetensors.index.json", size=8_898_324)),
        config=json.loads(DEEPSEEK_V3_CONFIG.read_text()),
        safetensors_total=curated.param_bytes,
    )
    generic = preset_from_hub(model)
    same_sizing_facts(generic, curated)
    assert generic.kv_bytes_per_token == (512 + 64) * 61 * 2 == 70272
    assert generic.runtimes == ("vllm",) and not generic.supports_lora
    assert "metadata.total_size" in generic.provenance["weights"]
    assert kv_formula(generic).startswith("MLA: (512 kv_lora_rank + 64 qk_rope_head_dim) x 61")
    for sku in list_skus():
        assert outcome(generic, sku.name, None) == outcome(curated, sku.name, None), sku.name


def test_upstreams_generic_example_qwen3_0_6b() -> None:
    preset = preset_from_hub(hub_model("Qwen/Qwen3-0.6B"))
    assert preset.name == "qwen3-0.6b" and preset.hf_id == "Qwen/Qwen3-0.6B"
    assert preset.param_bytes == 1_503_300_328
    assert (preset.num_layers, preset.num_kv_heads, preset.head_dim) == (28, 8, 128)
    assert preset.kv_bytes_per_token == 2 * 28 * 8 * 128 * 2
    assert preset.context_limit == 40960 and preset.dtype == "bfloat16"
    assert preset.architecture == "Qwen3ForCausalLM"
    assert (preset.tool_parser, preset.reasoning_parser) == ("hermes", "qwen3")
    assert preset.runtimes == ("vllm", "vllm-cpu") and preset.supports_lora
    assert not preset.supports_tuning and not preset.uses_local_weights
    where = preset.provenance
    assert where["weights"].startswith(
        "sum of 1 weight file size(s) on the hub (model.safetensors)"
    )
    assert where["context"] == "config max_position_embeddings"
    assert "temperature 0.6" in where["generation"]
    assert "supported list" in where["architecture"]


def test_sliding_window_layers_hold_only_their_window() -> None:
    preset = preset_from_hub(hub_model("google/gemma-2-2b-it"))
    assert (preset.sliding_window, preset.sliding_window_layers, preset.num_layers) == (
        4096,
        13,
        26,
    )
    per_layer = 2 * 4 * 256 * 2
    assert preset.kv_bytes_per_token == per_layer * 26
    assert preset.kv_cache_bytes(2048) == 2048 * per_layer * 26
    assert preset.kv_cache_bytes(8192) == per_layer * (13 * 8192 + 13 * 4096)
    assert "13 of 26 layers slide" in preset.provenance["sliding_window"]
    full = preset.model_copy(update={"sliding_window": None, "sliding_window_layers": 0})
    sku = next(s for s in list_skus() if s.name == "Standard_NV36ads_A10_v5")
    assert estimate(preset, sku).max_model_len >= estimate(full, sku).max_model_len


def test_kv_cache_and_its_inverse_agree() -> None:
    preset = preset_from_hub(hub_model("google/gemma-2-2b-it"))
    rng = random.Random(3)
    for _ in range(500):
        tokens = rng.randint(0, 20000)
        assert preset.tokens_within(preset.kv_cache_bytes(tokens)) >= tokens
        budget = rng.randint(0, 5 * 2**30)
        fits = preset.tokens_within(budget)
        assert preset.kv_cache_bytes(fits) <= budget < preset.kv_cache_bytes(fits + 1)


def test_phi3s_sliding_window_key_is_not_used_by_vllm() -> None:
    """Phi-3's config carries sliding_window 2047, but neither layer_types nor a default pattern."""
    preset = preset_from_hub(hub_model("microsoft/Phi-3-mini-4k-instruct"))
    assert preset.sliding_window is None
    assert "vLLM builds phi3 with full attention" in preset.provenance["sliding_window"]
    assert "auto_map" in preset.provenance["remote_code"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"model_type": "gemma3_text", "sliding_window": 1024}, (1024, 29)),
        (
            {"model_type": "gemma3_text", "sliding_window": 1024, "sliding_window_pattern": 2},
            (1024, 17),
        ),
        ({"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": False}, (None, 0)),
        (
            {"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": True,
             "max_window_layers": 20},
            (4096, 14),
        ),
        ({"model_type": "mistral", "sliding_window": 4096}, (None, 0)),
        ({"model_type": "ministral", "sliding_window": 4096}, (4096, 34)),
        (
            {"model_type": "anything", "sliding_window": 128,
             "layer_types": ["sliding_attention", "full_attention"] * 17},
            (128, 17),
        ),
        ({"model_type": "gemma2", "sliding_window": None}, (None, 0)),
    ],
)  # fmt: skip
def test_sliding_layers_follow_the_configs_layer_types(
    config: dict[str, Any], expected: tuple[int | None, int]
) -> None:
    window, count, _ = sliding_layers(config, 34)
    assert (window, count) == expected


def fixture_with(**config_changes: Any) -> HubModel:
    base = hub_model("Qwen/Qwen3-0.6B")
    return base.model_copy(update={"config": base.config | config_changes})


def test_context_follows_vllms_reading() -> None:
    assert (
        preset_from_hub(
            hub_model("Qwen/Qwen3-0.6B", tokenizer_config={"model_max_length": 8192})
        ).context_limit
        == 8192
    )
    scaled = preset_from_hub(fixture_with(rope_scaling={"rope_type": "linear", "factor": 2.0}))
    assert scaled.context_limit == 81920 and "linear factor 2" in scaled.provenance["context"]
    yarn = preset_from_hub(fixture_with(rope_scaling={"rope_type": "yarn", "factor": 4.0}))
    assert yarn.context_limit == 40960  # yarn's max_position_embeddings is already stretched
    bare = fixture_with()
    bare.config.pop("max_position_embeddings")
    assert preset_from_hub(bare).context_limit == 2048


def test_quantized_models_leave_the_dtype_to_vllm() -> None:
    preset = preset_from_hub(fixture_with(quantization_config={"quant_method": "AWQ", "bits": 4}))
    assert (preset.dtype, preset.quantization) == ("auto", "awq")
    assert preset.runtimes == ("vllm",) and not preset.supports_lora


def test_weights_without_sizes_fall_back_to_the_index_then_parameter_counts() -> None:
    unsized = tuple(HubFile(path=f.path) for f in hub_model("Qwen/Qwen3-0.6B").files)
    by_index = preset_from_hub(
        hub_model("Qwen/Qwen3-0.6B", files=unsized, safetensors_total=1_503_238_144)
    )
    assert by_index.param_bytes == 1_503_238_144
    by_count = preset_from_hub(
        hub_model("Qwen/Qwen3-0.6B", files=unsized, parameter_counts={"BF16": 751_632_384})
    )
    assert by_count.param_bytes == 2 * 751_632_384
    assert "parameter counts" in by_count.provenance["weights"]
    with pytest.raises(SpecError, match="without sizes and no safetensors index"):
        preset_from_hub(hub_model("Qwen/Qwen3-0.6B", files=unsized))


def test_only_top_level_weights_count_and_mistral_format_is_recognised() -> None:
    files = (
        HubFile(path="consolidated.safetensors", size=100),
        HubFile(path="model-00001-of-00001.safetensors", size=100),
        HubFile(path="original/consolidated.00.pth", size=10_000),
        HubFile(path="original/model.safetensors", size=10_000),
    )
    preset = preset_from_hub(hub_model("Qwen/Qwen3-0.6B", files=files))
    assert preset.param_bytes == 100
    assert preset.extra_args == {
        "tokenizer-mode": "mistral",
        "config-format": "mistral",
        "load-format": "mistral",
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architectures": ["NotAModelForCausalLM"]}, "which vLLM does not serve"),
        ({"architectures": []}, "names no architectures"),
        ({"num_hidden_layers": None}, "names no layer count"),
    ],
)
def test_models_vllm_cannot_serve_are_refused_with_the_reason(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        preset_from_hub(fixture_with(**changes))
    assert caught.value.field == "inference.preset.name"


def test_a_repository_without_weights_is_refused() -> None:
    files = (HubFile(path="config.json", size=726), HubFile(path="README.md", size=10))
    with pytest.raises(SpecError, match=r"no \.safetensors or \.bin weights"):
        preset_from_hub(hub_model("Qwen/Qwen3-0.6B", files=files))


def test_names_and_ids() -> None:
    assert is_hub_id("Qwen/Qwen3-0.6B") and is_hub_id("org/my_model.v2")
    for bad in ("phi-4", "a/b/c", "/abs", "org/", "org name/x", "../etc"):
        assert not is_hub_id(bad), bad
    renamed = hub_model("Qwen/Qwen3-0.6B").model_copy(update={"repo_id": "Some-Org/My_Model+X"})
    preset = preset_from_hub(renamed)
    assert preset.name == "my-model-x"
    assert "Qwen3ForCausalLM" in supported_architectures()


def test_parsers_come_from_the_name_never_from_the_architecture_alone() -> None:
    """vLLM 0.32 refuses to start when a tool parser's tokens are not in the tokenizer."""
    llama = hub_model("meta-llama/Llama-3.1-8B-Instruct")
    other = preset_from_hub(llama.model_copy(update={"repo_id": "kaito-test/tiny-llama"}))
    assert other.architecture == "LlamaForCausalLM"
    assert (other.tool_parser, other.reasoning_parser) == (None, None)
    assert "parsers" not in other.provenance
