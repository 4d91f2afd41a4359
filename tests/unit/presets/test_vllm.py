"""vLLM launch arguments: golden files per case, dtype rules, adapters, user config overrides.

Regenerate the golden files after an intended change with KAITO_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kaito.presets import AdapterSpec, SpecError, estimate, get_preset, get_sku, vllm_launch
from kaito.presets.plan import plan_workspace
from kaito.presets.vllm import serving_dtype, user_max_model_len

GOLDEN = Path(__file__).with_name("golden")

CASES: dict[str, dict[str, Any]] = {
    "phi-3-mini-4k-nc6s-v3": {"preset": "phi-3-mini-4k-instruct", "sku": "Standard_NC6s_v3"},
    "phi-3-mini-128k-adapter-nc6s-v3": {
        "preset": "phi-3-mini-128k-instruct",
        "sku": "Standard_NC6s_v3",
        "adapters": [("phi-3-adapter", 1.0)],
    },
    "phi-3-mini-4k-two-adapters-config-a100": {
        "preset": "phi-3-mini-4k-instruct",
        "sku": "Standard_NC24ads_A100_v4",
        "adapters": [("zeta", 0.5), ("alpha", 1.0)],
        "config": {"vllm": {"max_model_len": 2048, "enforce-eager": True, "max-lora-rank": 16}},
    },
    "phi-4-two-nodes-a10": {"preset": "phi-4", "sku": "Standard_NV36ads_A10_v5"},
    "qwen2.5-coder-32b-tp4-a100": {
        "preset": "qwen2.5-coder-32b-instruct",
        "sku": "Standard_NC96ads_A100_v4",
    },
    "llama-3.1-8b-dp8-h100": {"preset": "llama-3.1-8b-instruct", "sku": "Standard_ND96isr_H100_v5"},
    "gpt-oss-20b-h100": {"preset": "gpt-oss-20b", "sku": "Standard_NC40ads_H100_v5"},
    "mistral-7b-instruct-a100": {
        "preset": "mistral-7b-instruct",
        "sku": "Standard_NC24ads_A100_v4",
    },
    "deepseek-r1-0528-h200": {"preset": "deepseek-r1-0528", "sku": "Standard_ND96isr_H200_v5"},
    "tiny-cpu": {"preset": "tiny-llama-test", "sku": "Standard_D4s_v5"},
    "tiny-cpu-adapter-empty-config": {
        "preset": "tiny-llama-test",
        "sku": "Standard_D4s_v5",
        "adapters": [("tiny-adapter", 0.25)],
        "config": {},
    },
    "phi-3-mini-4k-cpu": {"preset": "phi-3-mini-4k-instruct", "sku": "Standard_D16s_v5"},
}


def launch_for(case: dict[str, Any]) -> dict[str, Any]:
    preset, sku = get_preset(case["preset"]), get_sku(case["sku"])
    assert preset is not None and sku is not None
    config = case.get("config")
    sized = estimate(preset, sku, max_model_len=user_max_model_len(config))
    adapters = [AdapterSpec(name=n, strength=s) for n, s in case.get("adapters", [])]
    return vllm_launch(preset, sku, sized, adapters=adapters, user_config=config).model_dump()


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    got = launch_for(CASES[name])
    path = GOLDEN / f"{name}.json"
    if os.environ.get("KAITO_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=2) + "\n")
    assert path.exists(), f"missing golden file {path.name}; run with KAITO_UPDATE_GOLDEN=1"
    assert got == json.loads(path.read_text())


def test_no_stale_golden_files() -> None:
    assert {p.stem for p in GOLDEN.glob("*.json")} == set(CASES)


def test_output_is_deterministic() -> None:
    case = CASES["phi-3-mini-4k-two-adapters-config-a100"]
    assert launch_for(case) == launch_for(dict(case))


@pytest.mark.parametrize(
    ("preset", "sku", "dtype"),
    [
        ("phi-3-mini-4k-instruct", "Standard_NC6s_v3", "float16"),
        ("phi-3-mini-4k-instruct", "Standard_NC4as_T4_v3", "float16"),
        ("phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4", "bfloat16"),
        ("phi-3-mini-4k-instruct", "Standard_D16s_v5", "float32"),
        ("tiny-llama-test", "Standard_NC24ads_A100_v4", "float32"),
        ("gpt-oss-20b", "Standard_NC24ads_A100_v4", "auto"),
    ],
)
def test_dtype_rule(preset: str, sku: str, dtype: str) -> None:
    p, s = get_preset(preset), get_sku(sku)
    assert p is not None and s is not None
    assert serving_dtype(p, s) == dtype
    args = vllm_launch(p, s, estimate(p, s)).args
    assert args[args.index("--dtype") + 1] == dtype


def _phi_launch(**kw: Any) -> list[str]:
    p, s = get_preset("phi-3-mini-4k-instruct"), get_sku("Standard_NC24ads_A100_v4")
    assert p is not None and s is not None
    return vllm_launch(p, s, estimate(p, s), **kw).args


def test_user_config_overrides_in_place() -> None:
    args = _phi_launch(user_config={"vllm": {"max-model-len": 1024, "gpu_memory_utilization": 0.9}})
    assert args.count("--max-model-len") == 1 and args[args.index("--max-model-len") + 1] == "1024"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.9"
    assert args[-2:] == ["--config", "/mnt/config/inference_config.yaml"]


def test_user_config_false_removes_a_flag() -> None:
    assert "--gpu-memory-utilization" not in _phi_launch(
        user_config={"vllm": {"gpu-memory-utilization": False}}
    )


@pytest.mark.parametrize("flag", ["port", "model", "host"])
def test_user_config_cannot_move_port_or_model(flag: str) -> None:
    with pytest.raises(SpecError, match=rf"^inference\.config \(vllm\.{flag}\)"):
        _phi_launch(user_config={"vllm": {flag: "x"}})


@pytest.mark.parametrize("flag", ["nnodes", "node-rank", "master_addr", "master-port", "headless"])
def test_user_config_cannot_move_a_multi_node_group(flag: str) -> None:
    with pytest.raises(SpecError, match="for models served by several nodes"):
        _phi_launch(user_config={"vllm": {flag: "1"}})


def test_no_config_flag_without_user_config() -> None:
    assert "--config" not in _phi_launch()


def test_adapters_share_one_lora_modules_flag() -> None:
    args = _phi_launch(
        adapters=[AdapterSpec(name="a", strength=1), AdapterSpec(name="b", strength=0.3)]
    )
    i = args.index("--lora-modules")
    assert args[i + 1 : i + 3] == ["a=/mnt/adapter/a", "b=/mnt/adapter/b"]
    assert args.count("--lora-modules") == 1 and "--enable-lora" in args
    assert [args[j + 1] for j, v in enumerate(args) if v == "--adapter-strength"] == [
        "a=1.0",
        "b=0.3",
    ]


def test_duplicate_adapter_names_rejected() -> None:
    with pytest.raises(SpecError, match=r"^inference\.adapters: .*repeated: a"):
        _phi_launch(
            adapters=[AdapterSpec(name="a", strength=1), AdapterSpec(name="a", strength=0.3)]
        )


def test_adapters_on_a_model_without_lora_rejected() -> None:
    p, s = get_preset("gpt-oss-20b"), get_sku("Standard_NC24ads_A100_v4")
    assert p is not None and s is not None
    with pytest.raises(SpecError, match=r"^inference\.adapters: gpt-oss-20b does not support LoRA"):
        vllm_launch(p, s, estimate(p, s), adapters=[AdapterSpec(name="x", strength=1)])


def test_bad_max_model_len_in_config() -> None:
    with pytest.raises(SpecError, match="positive integer"):
        user_max_model_len({"vllm": {"max-model-len": "lots"}})
    assert user_max_model_len({"vllm": {"max_model_len": "4096"}}) == 4096
    assert user_max_model_len(None) is None


def test_performance_mode_is_passed_unless_balanced() -> None:
    args = _phi_launch(performance_mode="throughput")
    assert args[args.index("--performance-mode") + 1] == "throughput"
    assert "--performance-mode" not in _phi_launch(performance_mode="balanced")
    assert "--performance-mode" not in _phi_launch()
    overridden = _phi_launch(
        performance_mode="throughput", user_config={"vllm": {"performance-mode": "interactivity"}}
    )
    assert overridden[overridden.index("--performance-mode") + 1] == "interactivity"


def test_plan_reads_the_performance_mode_annotation() -> None:
    doc = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "w", "annotations": {"kaito.sh/performance-mode": "interactivity"}},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    launch = plan_workspace(doc).launch
    assert launch is not None
    assert launch.args[launch.args.index("--performance-mode") + 1] == "interactivity"


def test_node_disk_is_the_weights_and_upstreams_headroom() -> None:
    phi = get_preset("phi-3-mini-4k-instruct")
    assert phi is not None
    assert phi.node_disk_gib == int(round(phi.weights_gib, 2) + 80)
