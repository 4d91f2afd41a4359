"""The operator's record of vLLM's supported architectures is the installed vLLM's list."""

from __future__ import annotations

from hack import vllm_architectures


def test_recorded_architectures_are_the_installed_vllms() -> None:
    recorded = vllm_architectures.TARGET.read_text(encoding="utf-8")
    assert recorded == vllm_architectures.render(), "stale: run hack/vllm-architectures"
