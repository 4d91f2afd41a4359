"""Launcher flags, config file merge, adapter discovery, and run-pod's path rewriting (no vLLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hack.run_pod import expand_vars, rewrite
from serving.chat import ChatBody, GenerateKwargs, sampling_fields
from serving.options import (
    OptionsError,
    adapter_rank,
    config_flags,
    discover_adapters,
    split_args,
    strengths_from_env,
)


def test_launcher_flags_are_taken_out_and_the_rest_passed_through(tmp_path: Path) -> None:
    opts, rest = split_args(
        [
            "--model", "/w", "--adapter-strength", "a=0.5", "--adapter-strength", "b=1",
            "--adapter-dir", str(tmp_path), "--max-queue-depth", "7", "--port", "5000",
        ]
    )  # fmt: skip
    assert opts.strengths == {"a": 0.5, "b": 1.0}
    assert opts.adapter_dir == tmp_path
    assert opts.max_queue_depth == 7
    assert opts.max_request_bytes == 16 * 2**20
    assert split_args(["--max-request-bytes", "0"])[0].max_request_bytes == 0
    with pytest.raises(OptionsError, match="--max-request-bytes"):
        split_args(["--max-request-bytes", "-1"])
    assert rest == ["--model", "/w", "--port", "5000"]


def test_config_file_vllm_section_is_appended_so_it_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text(
        "vllm:\n  max-model-len: 2048\n  enforce-eager: true\n  cpu_offload_gb: 0\n"
        "kv_cache_cpu_memory_utilization: 0.5\n"
    )
    _, rest = split_args(["--max-model-len", "512", "--config", str(cfg)])
    assert rest == [
        "--max-model-len", "512", "--max-model-len", "2048", "--enforce-eager",
        "--cpu-offload-gb", "0",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("vllm: [1, 2]\n", "'vllm' must be a mapping"),
        ("max-model-len: 5\n", "unknown top-level key"),
        ("vllm: {a: [\n", "not valid YAML"),
    ],
)
def test_bad_config_files_are_named(tmp_path: Path, text: str, match: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(OptionsError, match=match):
        split_args(["--config", str(cfg)])


@pytest.mark.parametrize("bad", ["a", "=1", "a=x", "a=nan", "a=2.5", "a=-1"])
def test_bad_strengths_are_explained(bad: str) -> None:
    with pytest.raises(OptionsError, match="--adapter-strength"):
        split_args(["--adapter-strength", bad])


def test_config_flags_shapes() -> None:
    assert config_flags({"x": False, "y": None, "z": [1, 2], "w": {"k": 1}}) == [
        "--no-x", "--z", "1", "2", "--w", '{"k": 1}',
    ]  # fmt: skip


def test_discover_adapters(tmp_path: Path) -> None:
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({"r": 16}))
    (tmp_path / "..data").mkdir()  # Kubernetes volume internals are skipped
    (tmp_path / "lost+found").mkdir()
    assert list(discover_adapters(tmp_path)) == ["a", "b"]
    assert adapter_rank(tmp_path / "a") == 16
    (tmp_path / "c").mkdir()
    with pytest.raises(OptionsError, match=r"no adapter_config\.json"):
        discover_adapters(tmp_path)
    assert discover_adapters(tmp_path / "missing") == {}


def test_strengths_from_env_take_upstream_per_adapter_variables() -> None:
    env = {"a": "0.25", "b": "notanumber", "c": "2.5", "PATH": "/bin"}
    assert strengths_from_env(["a", "b", "c", "d"], env) == {"a": 0.25}


def test_chat_defaults_follow_the_old_server() -> None:
    fields = sampling_fields(GenerateKwargs(), prompt_tokens=20)
    assert fields["max_tokens"] == 180  # max_length 200 includes the prompt
    assert fields["top_k"] == 10 and fields["temperature"] == 1.0
    greedy = sampling_fields(GenerateKwargs(do_sample=False, max_new_tokens=5), prompt_tokens=20)
    assert greedy["temperature"] == 0.0 and greedy["max_tokens"] == 5


def test_chat_body_needs_exactly_one_input() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ChatBody.model_validate({})
    assert ChatBody.model_validate({"prompt": "hi"}).prompt == "hi"


def test_rewrite_mount_paths_as_whole_components() -> None:
    mapping = [("/mnt/adapter/x", "/tmp/x"), ("/mnt/adapter", "/tmp/a")]
    assert rewrite("a=/mnt/adapter/a", mapping) == "a=/tmp/a/a"
    assert rewrite("/mnt/adapter/x/file", mapping) == "/tmp/x/file"
    assert rewrite("/mnt/adapters", mapping) == "/mnt/adapters"
    assert rewrite("/other/mnt/adapter", mapping) == "/other/mnt/adapter"


def test_expand_vars_like_kubernetes() -> None:
    assert expand_vars("$(A)-$(B)-$$(A)", {"A": "1"}) == "1-$(B)-$(A)"
