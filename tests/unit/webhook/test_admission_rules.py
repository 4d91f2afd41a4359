"""Issue 19's admission rules as pure functions: ConfigMaps, fit, updates, partitions, counts,
instance types we do not know, and upstream's own example manifests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito.presets.skus import learn_from_azure
from kaito.presets.vllm_config import flag_table
from kaito.webhook import validate_create, validate_update
from kaito.webhook.view import ClusterView, FieldError, Policy

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
UPSTREAM = REPO / "tests" / "fixtures" / "upstream_v0.12_examples.yaml"
GPU_LABELS = {
    "nvidia.com/gpu.product": "NVIDIA-H200",
    "nvidia.com/gpu.count": "8",
    "nvidia.com/gpu.memory": "144384",
}
# upstream examples we refuse on purpose: vLLM 0.32 has no swap-space (docs/api.md)
DIVERGENT = {
    "examples/inference/kaito_workspace_custom_config.yaml",
    "examples/inference/kaito_workspace_llama-3.3_70b_instruct.yaml",
    "examples/inference/kaito_workspace_tool_calling.yaml",
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    data["metadata"]["namespace"] = "ns"
    return data


def cms(**data: dict[str, str] | None) -> ClusterView:
    return ClusterView(config_maps=data)


def one(errors: list[FieldError]) -> FieldError:
    assert len(errors) == 1, errors
    return errors[0]


def node(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "status": {"capacity": {"cpu": "96"}}}


# ------------------------------------------------------------------ 1. inference config


def with_config(text: str | None, *, key: str = "inference_config.yaml") -> tuple[Any, Any]:
    ws = load("workspace-phi-3-mini-v1beta1.yaml")
    ws["inference"]["config"] = "params"
    data = None if text is None else {key: text}
    return ws, cms(params=data)


@pytest.mark.parametrize(
    ("text", "key", "field", "needle"),
    [
        (None, "inference_config.yaml", "inference.config", "not found in namespace 'ns'"),
        ("vllm: {}", "config.yaml", "inference.config", "has no key inference_config.yaml"),
        ("vllm: [1,", "inference_config.yaml", "inference.config", "not valid YAML"),
        ("- a", "inference_config.yaml", "inference.config", "must be a mapping"),
        ("vlm: {}", "inference_config.yaml", "inference.config", "unknown top-level key"),
        ("vllm: {max-model-len: big}", "inference_config.yaml", "max-model-len", "integer"),
        ("vllm: {max-model-len: 8192}", "inference_config.yaml", "max-model-len", "4096"),
        ("vllm: {max-modle-len: 1}", "inference_config.yaml", "vllm.max-modle-len", "mean"),
        ("vllm: {enforce-eager: 3}", "inference_config.yaml", "vllm.enforce-eager", "true or"),
        ("vllm: {swap-space: 4}", "inference_config.yaml", "vllm.swap-space", "remove it"),
        ("vllm: {port: 80}", "inference_config.yaml", "vllm.port", "set by Kaito"),
    ],
)
def test_inference_config_rules(text: str | None, key: str, field: str, needle: str) -> None:
    ws, view = with_config(text, key=key)
    err = one(validate_create(ws, view))
    assert field in err.field and needle in err.message, err


def test_inference_config_accepted_and_fit_with_its_context() -> None:
    ws, view = with_config("vllm: {max-model-len: 4096, gpu-memory-utilization: 0.9}\n")
    assert validate_create(ws, view) == []
    ws["resource"]["instanceType"] = "Standard_D4s_v5"  # CPU: 4k context no longer fits RAM
    err = one(validate_create(ws, view))
    assert err.field == "resource.instanceType" and "GiB" in err.message


def test_vllm_flag_table_is_vllms() -> None:
    table = flag_table()
    assert table.flags["max-model-len"].type == "int"
    assert table.flags["enable-chunked-prefill"].type == "bool"
    assert table.flags["swap-space"].retired


# ------------------------------------------------------------------ 2. tuning config

QLORA = "QuantizationConfig: {load_in_4bit: true}\n"


def tuning(config: str | None = None) -> dict[str, Any]:
    ws = load("workspace-tuning-phi-3-v1beta1.yaml")
    if config is not None:
        ws["tuning"]["config"] = config
    return ws


@pytest.mark.parametrize(
    ("text", "field", "needle"),
    [
        (None, "tuning.config", "not found"),
        ("Trainer: {}", "Trainer", "unknown section"),
        ("QuantizationConfig: {load_in_4bit: false}", "load_in_4bit", "qlora needs"),
        (
            "QuantizationConfig: {load_in_4bit: true, load_in_8bit: true}",
            "load_in_8bit",
            "both",
        ),
        (f"{QLORA}TrainingArguments: {{output_dir: /}}", "output_dir", "under /mnt"),
        (f"{QLORA}TrainingArguments: {{output_dir: /tmp/x}}", "output_dir", "under /mnt"),
    ],
)
def test_tuning_config_rules(text: str | None, field: str, needle: str) -> None:
    ws = tuning("train")
    view = cms(train=None if text is None else {"training_config.yaml": text})
    err = one(validate_create(ws, view))
    assert err.field.startswith("tuning.config") and field in err.field, err
    assert needle in err.message


def test_lora_must_not_quantize_and_upstreams_nesting_is_read() -> None:
    ws = tuning("train")
    ws["tuning"]["method"] = "lora"
    text = "training_config:\n  QuantizationConfig: {load_in_8bit: true}\n"
    err = one(validate_create(ws, cms(train={"training_config.yaml": text})))
    assert "load_in_8bit" in err.field and "lora" in err.message


def test_tuning_needs_one_node_and_image_references() -> None:
    ws = tuning()
    ws["resource"]["count"] = 2
    assert one(validate_create(ws)).field == "resource.count"
    ws = tuning()
    ws["tuning"]["output"]["image"] = "Registry/Bad Image"
    assert one(validate_create(ws)).field == "tuning.output.image"
    ws = tuning()
    ws["tuning"]["input"] = {"image": "UPPER/case:1"}
    assert one(validate_create(ws)).field == "tuning.input.image"


# ------------------------------------------------------------------ 3. model fits


@pytest.mark.parametrize("name", ["workspace-phi-3-mini.yaml", "workspace-phi-3-mini-v1beta1.yaml"])
def test_model_fit_names_the_numbers(name: str) -> None:
    ws = load(name)
    ws["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"  # 26 GiB on one 16 GiB V100
    errors = validate_create(ws)
    if name.endswith("v1beta1.yaml"):
        assert errors == []  # vLLM v1beta1 spreads it over nodes, as upstream's estimator does
        return
    err = one(errors)
    assert err.field == "resource.instanceType"
    assert "26.0 GiB" in err.message and "16 GiB in all" in err.message
    ws["resource"]["count"] = 2
    assert validate_create(ws) == []


def test_transformers_runtime_checks_total_memory_on_v1beta1() -> None:
    ws = load("workspace-phi-3-mini-v1beta1.yaml")
    ws["metadata"]["annotations"] = {"kaito.sh/runtime": "transformers"}
    ws["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"
    assert "GiB" in one(validate_create(ws)).message


# ------------------------------------------------------------------ 4. updates


def test_updates_get_the_create_rules() -> None:
    old = load("workspace-falcon-7b-adapter-v1beta1.yaml")
    new = copy.deepcopy(old)
    new["inference"]["adapters"][0]["source"].pop("image")
    assert one(validate_update(new, old)).field == "inference.adapters[0].source"
    new = copy.deepcopy(old)
    new["inference"]["adapters"][0]["source"]["urls"] = ["https://example.com/a"]
    assert "URLs" in one(validate_update(new, old)).message
    new = copy.deepcopy(old)
    new["inference"]["config"] = "missing"
    assert "not found" in one(validate_update(new, old, view=cms(missing=None))).message


# ------------------------------------------------------------------ 5. partitions


def byo_partition(partition: dict[str, Any]) -> dict[str, Any]:
    ws = load("workspace-phi-3-mini-v1beta1.yaml")
    ws["resource"].pop("instanceType")
    ws["resource"]["partition"] = partition
    return ws


def test_partition_needs_user_nodes_and_gates() -> None:
    view = ClusterView(selected_nodes=[node("n1", {"apps": "phi-3", **GPU_LABELS})])
    ws = load("workspace-phi-3-mini-v1beta1.yaml")
    ws["resource"]["partition"] = {"mode": "accelerator", "count": 1}
    assert "bring-your-own" in one(validate_create(ws, view)).message
    ws = byo_partition({"mode": "accelerator", "count": 2})
    assert "enableAccelerator" in one(validate_create(ws, view)).message
    assert validate_create(ws, view, Policy(enable_accelerator=True)) == []
    ws = byo_partition({"mode": "accelerator", "count": 9})
    assert "at most 8" in one(validate_create(ws, view, Policy(enable_accelerator=True))).message
    ws = byo_partition({"mode": "mig", "profile": "3g.40gb"})
    assert "enableMIG" in one(validate_create(ws, view)).message
    assert validate_create(ws, view, Policy(enable_mig=True)) == []
    ws = byo_partition({"mode": "mig", "profile": "9g.1tb"})
    assert "unknown MIG" in one(validate_create(ws, view, Policy(enable_mig=True))).message
    ws = byo_partition({"mode": "mig", "profile": "1g.5gb"})  # phi-3-mini is 7 GiB
    err = one(validate_create(ws, view, Policy(enable_mig=True)))
    assert err.field.startswith("resource") and "GiB" in err.message


# ------------------------------------------------------------------ 7. instance types


def test_unknown_azure_size_learned_from_node_labels() -> None:
    ws = load("workspace-phi-3-mini-v1beta1.yaml")
    ws["resource"]["instanceType"] = "Standard_ND96isr_H200_v9"
    err = one(validate_create(ws, ClusterView(typed_nodes=[])))
    assert "Standard_NC24ads_A100_v4" in err.message and "labelSelector" in err.message
    view = ClusterView(typed_nodes=[node("h200-0", GPU_LABELS)])
    assert validate_create(ws, view) == []


def test_unknown_azure_size_learned_from_the_sku_list() -> None:
    ws = load("workspace-phi-3-mini-v1beta1.yaml")
    ws["resource"]["instanceType"] = "Standard_NC40ads_H200_v9"
    learned = learn_from_azure(
        "Standard_NC40ads_H200_v9", {"vCPUs": "40", "MemoryGB": "320", "GPUs": "1"}
    )
    assert learned is not None and learned.sku.gpu_memory_gib == 141
    assert validate_create(ws, ClusterView(typed_nodes=[], cloud_sku=learned)) == []
    policy = Policy(node_provisioner="azure", azure_location="eastus")
    assert "eastus" in one(validate_create(ws, ClusterView(typed_nodes=[]), policy)).message


def test_other_clouds_are_named() -> None:
    ws = load("workspace-phi-3-mini-v1beta1.yaml")
    ws["resource"]["instanceType"] = "g5.4xlarge"
    err = one(validate_create(ws, ClusterView(typed_nodes=[])))
    assert "AWS" in err.message and "Azure only" in err.message


# ------------------------------------------------------------------ 8. count 0


def test_count_zero_means_kaito_sizes_it() -> None:
    ws = load("workspace-phi-3-mini-v1beta1.yaml")
    ws["resource"]["count"] = 0
    assert validate_create(ws) == []
    ws["metadata"]["annotations"] = {"kaito.sh/runtime": "transformers"}
    assert one(validate_create(ws)).field == "resource.count"


# ------------------------------------------------------------------ upstream's examples


def _upstream() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(UPSTREAM.read_text()) if d]


@pytest.mark.parametrize(
    "ws",
    [d for d in _upstream() if d["kind"] == "Workspace"],
    ids=lambda d: d["metadata"]["annotations"]["test.kaito.sh/source"].rsplit("/", 1)[-1],
)
def test_upstream_examples(ws: dict[str, Any]) -> None:
    source = ws["metadata"]["annotations"]["test.kaito.sh/source"]
    maps = {d["metadata"]["name"]: d["data"] for d in _upstream() if d["kind"] == "ConfigMap"}
    ws["metadata"]["namespace"] = "default"
    labels = (ws["resource"].get("labelSelector") or {}).get("matchLabels") or {}
    view = ClusterView(config_maps=maps, selected_nodes=[node("byo-0", {**labels, **GPU_LABELS})])
    errors = validate_create(ws, view, Policy(enable_accelerator=True))
    if source in DIVERGENT:
        assert [e.field for e in errors] == ["inference.config (vllm.swap-space)"]
    else:
        assert errors == [], source


def test_upstream_training_config_map_is_accepted() -> None:
    (cm,) = [d for d in _upstream() if d["kind"] == "ConfigMap" and "tuning" in str(d)]
    ws = tuning(cm["metadata"]["name"])
    assert validate_create(ws, cms(**{cm["metadata"]["name"]: cm["data"]})) == []
