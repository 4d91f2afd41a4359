"""Catalog and SKU data: lookups, and malformed files rejected with file, entry and field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito.presets import CatalogError, get_preset, get_sku, list_presets, list_skus
from kaito.presets.catalog import load_catalog
from kaito.presets.skus import load_skus

REQUIRED_SKUS = [
    "Standard_NC6s_v3",
    "Standard_NC12s_v3",
    "Standard_NC24s_v3",
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_NC96ads_A100_v4",
    "Standard_ND96asr_v4",
    "Standard_ND96amsr_A100_v4",
    "Standard_NV36ads_A10_v5",
    "Standard_NV72ads_A10_v5",
    "Standard_NC40ads_H100_v5",
    "Standard_NC80adis_H100_v5",
    "Standard_ND96isr_H100_v5",
    "Standard_ND96isr_H200_v5",
    "Standard_D16s_v5",
    "Standard_D32s_v5",
]


@pytest.mark.parametrize("name", REQUIRED_SKUS)
def test_required_skus_present(name: str) -> None:
    sku = get_sku(name)
    assert sku is not None and sku.name == name
    assert get_sku(name.lower()) is sku


def test_seed_sku_is_a_v100_without_bf16() -> None:
    sku = get_sku("Standard_NC6s_v3")
    assert sku is not None
    assert (sku.gpu_model, sku.gpu_count, sku.gpu_memory_gib) == ("NVIDIA V100", 1, 16)
    assert sku.compute_capability == "7.0" and not sku.supports_bf16
    a100 = get_sku("Standard_NC24ads_A100_v4")
    assert a100 is not None and a100.supports_bf16 and a100.nvme


def test_upstream_spelling_of_nd96asr_is_an_alias() -> None:
    assert get_sku("Standard_ND96asr_A100_v4") is get_sku("Standard_ND96asr_v4")
    assert len({s.name for s in list_skus()}) == len(list_skus())


def test_cpu_skus_have_no_gpus() -> None:
    cpu = [s for s in list_skus() if s.cpu_only]
    assert cpu and all(s.gpu_count == 0 and not s.supports_bf16 for s in cpu)
    assert get_sku("Standard_Unknown") is None


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("phi-3-mini-4k-instruct", "phi-3-mini-4k-instruct"),
        ("PHI-3-MINI-128K-INSTRUCT", "phi-3-mini-128k-instruct"),
        ("microsoft/Phi-3-mini-4k-instruct", "phi-3-mini-4k-instruct"),
        ("meta-llama/llama-3.1-8b-instruct", "llama-3.1-8b-instruct"),
        ("mistral-7b-v0.3", "mistral-7b"),
        ("mistral-7b-instruct", "mistral-7b-instruct"),
        ("gemma-3-4b-it", "gemma-3-4b-instruct"),
        ("ministral-3-8b-instruct-2512", "ministral-3-8b-instruct"),
        ("falcon-40b", "falcon-40b"),
        ("tiny-llama-test", "tiny-llama-test"),
    ],
)
def test_lookup_by_name_alias_and_hub_id(query: str, name: str) -> None:
    preset = get_preset(query)
    assert preset is not None and preset.name == name


def test_unknown_preset_is_none() -> None:
    assert get_preset("gpt-5") is None


def test_tiny_preset_is_local_and_test_only() -> None:
    tiny = get_preset("tiny-llama-test")
    assert tiny is not None and tiny.test_only
    assert tiny.model_ref == "/workspace/weights" and tiny.dtype == "float32"
    assert (tiny.num_layers, tiny.num_kv_heads, tiny.head_dim, tiny.context_limit) == (
        2,
        2,
        32,
        512,
    )
    assert "tiny-llama-test" not in {p.name for p in list_presets(include_test=False)}


def test_catalog_flags_follow_upstream() -> None:
    qwen = get_preset("qwen2.5-coder-7b-instruct")
    assert qwen is not None
    assert (qwen.tool_parser, qwen.chat_template) == ("hermes", "tool-chat-hermes.jinja")
    oss = get_preset("gpt-oss-20b")
    assert oss is not None and oss.reasoning_parser == "openai_gptoss" and oss.dtype == "auto"
    phi = get_preset("phi-3-mini-4k-instruct")
    assert (
        phi is not None and phi.supports_tuning and phi.supports_lora and "vllm-cpu" in phi.runtimes
    )


# Upstream's curated list (kaito v0.12 model_catalog.yaml, kaito.md §4.2): every id answers.
UPSTREAM_CURATED_IDS = [
    "microsoft/phi-4",
    "microsoft/Phi-4-mini-instruct",
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    "microsoft/Phi-3-mini-4k-instruct",
    "microsoft/Phi-3-mini-128k-instruct",
    "microsoft/Phi-3-medium-4k-instruct",
    "microsoft/Phi-3-medium-128k-instruct",
    "microsoft/Phi-3.5-mini-instruct",
    "Qwen/Qwen2.5-Coder-7B-Instruct",
    "Qwen/Qwen2.5-Coder-32B-Instruct",
    "openai/gpt-oss-20b",
    "openai/gpt-oss-120b",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.3-70B-Instruct",
    "mistralai/Mistral-7B-v0.3",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "mistralai/Ministral-3-3B-Instruct-2512",
    "mistralai/Ministral-3-8B-Instruct-2512",
    "mistralai/Ministral-3-14B-Instruct-2512",
    "google/gemma-3-4b-it",
    "google/gemma-3-27b-it",
    "deepseek-ai/DeepSeek-R1-0528",
    "deepseek-ai/DeepSeek-V3-0324",
    "mistralai/Mistral-Large-3-675B-Instruct-2512",
    "nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16",
    "nvidia/Nemotron-Cascade-2-30B-A3B",
    "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
    "nvidia/NVIDIA-Nemotron-Nano-12B-v2-VL-BF16",
    "nvidia/NVIDIA-Nemotron-Nano-9B-v2",
    "nvidia/NVIDIA-Nemotron-3-Nano-4B-BF16",
    "Qwen/Qwen3-8B-AWQ",
    "google/gemma-4-31B-it",
    "google/gemma-4-26B-A4B-it",
    "google/gemma-4-E4B-it",
    "google/gemma-4-E2B-it",
    "mistralai/Mistral-Small-4-119B-2603",
    "mistralai/Mistral-Small-4-119B-2603-NVFP4",
    "Qwen/Qwen3.5-2B",
    "Qwen/Qwen3.5-4B",
    "Qwen/Qwen3.5-9B",
    "Qwen/Qwen3.5-122B-A10B-GPTQ-Int4",
    "Qwen/Qwen3.5-122B-A10B",
    "Qwen/Qwen3.6-35B-A3B-FP8",
    "Qwen/Qwen3.6-35B-A3B",
    "Qwen/Qwen3.6-27B",
    "Qwen/Qwen3.5-397B-A17B-GPTQ-Int4",
    "moonshotai/Kimi-K2.5",
    "moonshotai/Kimi-K2.6",
    "MiniMaxAI/MiniMax-M2.7",
    "mistralai/Mistral-Medium-3.5-128B",
    "deepseek-ai/DeepSeek-V4-Flash-0731",
    "deepseek-ai/DeepSeek-V4-Pro",
    "google/gemma-4-12B-it",
    "zai-org/GLM-5.2-FP8",
    "moonshotai/Kimi-K2.7-Code",
    "nvidia/NVIDIA-Nemotron-3-Ultra-550B-A55B-NVFP4",
    "deepseek-ai/DeepSeek-V3.2",
    "ibm-granite/granite-4.1-8b",
    "Qwen/Qwen3.8-27B",
]


@pytest.mark.parametrize("hf_id", UPSTREAM_CURATED_IDS)
def test_every_upstream_curated_id_is_a_catalog_preset(hf_id: str) -> None:
    preset = get_preset(hf_id)
    assert preset is not None and preset.hf_id == hf_id and preset.origin == "catalog"
    assert get_preset(hf_id.lower()) is preset
    assert preset.architecture


# Upstream's legacy short preset names (kaito.md §4.4, LegacyBuiltinToCatalog): all 25 still answer.
UPSTREAM_LEGACY = {
    "phi-4": "microsoft/phi-4",
    "phi-4-mini-instruct": "microsoft/Phi-4-mini-instruct",
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "llama-3.3-70b-instruct": "meta-llama/Llama-3.3-70B-Instruct",
    "deepseek-r1-distill-llama-8b": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "deepseek-r1-distill-qwen-14b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    "deepseek-r1-0528": "deepseek-ai/DeepSeek-R1-0528",
    "deepseek-v3-0324": "deepseek-ai/DeepSeek-V3-0324",
    "phi-3-mini-4k-instruct": "microsoft/Phi-3-mini-4k-instruct",
    "phi-3-mini-128k-instruct": "microsoft/Phi-3-mini-128k-instruct",
    "phi-3-medium-4k-instruct": "microsoft/Phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct": "microsoft/Phi-3-medium-128k-instruct",
    "phi-3.5-mini-instruct": "microsoft/Phi-3.5-mini-instruct",
    "qwen2.5-coder-7b-instruct": "Qwen/Qwen2.5-Coder-7B-Instruct",
    "qwen2.5-coder-32b-instruct": "Qwen/Qwen2.5-Coder-32B-Instruct",
    "gpt-oss-20b": "openai/gpt-oss-20b",
    "gpt-oss-120b": "openai/gpt-oss-120b",
    "gemma-3-4b-instruct": "google/gemma-3-4b-it",
    "gemma-3-27b-instruct": "google/gemma-3-27b-it",
    "mistral-7b": "mistralai/Mistral-7B-v0.3",
    "mistral-7b-instruct": "mistralai/Mistral-7B-Instruct-v0.3",
    "ministral-3-3b-instruct": "mistralai/Ministral-3-3B-Instruct-2512",
    "ministral-3-8b-instruct": "mistralai/Ministral-3-8B-Instruct-2512",
    "ministral-3-14b-instruct": "mistralai/Ministral-3-14B-Instruct-2512",
    "mistral-large-3-675b-instruct": "mistralai/Mistral-Large-3-675B-Instruct-2512",
}


@pytest.mark.parametrize(("legacy", "hf_id"), sorted(UPSTREAM_LEGACY.items()))
def test_upstreams_legacy_names_answer_as_their_hub_ids(legacy: str, hf_id: str) -> None:
    preset = get_preset(legacy)
    assert preset is not None and preset is get_preset(hf_id)


VALID = """\
presets:
  - name: ok-model
    hf_id: org/ok-model
    param_bytes: 1Gi
    num_layers: 2
    num_kv_heads: 2
    head_dim: 64
    context_limit: 2048
"""


@pytest.mark.parametrize(
    ("replace", "by", "field"),
    [
        ("    num_layers: 2\n", "", "num_layers"),
        ("num_layers: 2", "num_layers: two", "num_layers"),
        ("param_bytes: 1Gi", "param_bytes: 1GB", "param_bytes"),
        ("param_bytes: 1Gi", "param_bytes: -5", "param_bytes"),
        ("context_limit: 2048", "context_limit: 0", "context_limit"),
        ("name: ok-model", "name: Not Valid", "name"),
        ("head_dim: 64", "head_dim: 64\n    colour: blue", "colour"),
        ("head_dim: 64", "head_dim: 64\n    dtype: int3", "dtype"),
        ("head_dim: 64", "head_dim: 64\n    runtimes: [transformers]", "(entry)"),
    ],
)
def test_malformed_preset_names_file_entry_field(
    tmp_path: Path, replace: str, by: str, field: str
) -> None:
    text = VALID + VALID.split("\n", 1)[1].replace("ok-model", "second")
    path = tmp_path / "catalog-bad.yaml"
    path.write_text(text.replace(replace, by, 1))
    assert replace in text
    with pytest.raises(CatalogError) as info:
        load_catalog([path])
    message = str(info.value)
    assert message.startswith("catalog-bad.yaml: entry presets[0]")
    assert f"field '{field}'" in message


def test_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "catalog-ok.yaml"
    path.write_text(VALID)
    assert load_catalog([path])["ok-model"].kv_bytes_per_token == 2 * 2 * 64 * 2 * 2


def test_duplicate_preset_name_rejected(tmp_path: Path) -> None:
    path = tmp_path / "catalog-dup.yaml"
    path.write_text(VALID + VALID.split("\n", 1)[1])
    with pytest.raises(
        CatalogError, match=r"catalog-dup.yaml: entry presets\[1\] \(ok-model\).*'name'"
    ):
        load_catalog([path])


@pytest.mark.parametrize("text", ["presets: 3\n", "- a\n", "presets: [1]\n", "presets: [\n"])
def test_wrong_shape_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "catalog-shape.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError, match=r"^catalog-shape.yaml: "):
        load_catalog([path])


def test_malformed_sku_names_file_entry_field(tmp_path: Path) -> None:
    path = tmp_path / "skus-bad.yaml"
    path.write_text(
        "skus:\n"
        "  - {name: Standard_X, gpu_model: G, gpu_count: 1, gpu_memory_gib: 8, "
        "compute_capability: '8.0', vcpu: 4, memory_gib: 16}\n"
        "  - {name: Standard_Y, gpu_model: G, gpu_count: 1, gpu_memory_gib: 8, "
        "compute_capability: 'eight', vcpu: 4, memory_gib: 16}\n"
    )
    with pytest.raises(CatalogError) as info:
        load_skus([path])
    assert str(info.value).startswith(
        "skus-bad.yaml: entry skus[1] (Standard_Y): field 'compute_capability'"
    )


def test_gpu_sku_without_gpus_rejected(tmp_path: Path) -> None:
    path = tmp_path / "skus-nogpu.yaml"
    path.write_text("skus:\n  - {name: Standard_Z, vcpu: 4, memory_gib: 16}\n")
    with pytest.raises(CatalogError, match=r"entry skus\[0\] \(Standard_Z\).*gpu_count"):
        load_skus([path])
