"""The mixed-batch LoRA fix (serving/lora_fix.py): real vLLM layers, and the patching mechanism.

The end-to-end check (concurrent base and adapter requests against transformers+peft) is
``test_server.py::test_concurrent_base_and_adapter_requests_are_each_correct``; it fails with
``KAITO_SERVING_LORA_FIX=0``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from serving import lora_fix
from tests.serving.conftest import needs_vllm
from tests.serving.helpers import ROOT


@needs_vllm
@pytest.mark.slow
def test_base_rows_of_a_mixed_batch_get_no_adapter_delta() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(lora_fix.DISABLE_ENV, None)
    out = subprocess.run(
        [sys.executable, "-m", "tests.serving.lora_slots_probe"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    for layer in ("qkv", "logits"):
        for phase in ("decode", "prefill"):
            fixed = report[f"{layer}/{phase}/launcher"]
            vllm = report[f"{layer}/{phase}/vllm"]
            where = f"{layer} ({phase})"
            assert fixed["slots"] == vllm["slots"] + 1, where
            assert fixed["base_rows_max_delta"] == 0.0, where
            assert fixed["adapter_rows"] == vllm["adapter_rows"], where
            # The bug the fix exists for; once vLLM fixes it, the fix can go.
            assert vllm["base_rows_max_delta"] > 0, f"{where}: vLLM no longer has the bug"


def test_zero_slot_wrapper_adds_one_slot_except_where_told() -> None:
    def from_layer(layer: str, max_loras: int, lora_config: object, packed: list[str]) -> int:
        return max_loras

    wrapped = lora_fix.with_zero_slot(from_layer, keep_count=lambda layer: layer == "moe")
    assert wrapped("linear", 4, None, []) == 5
    assert wrapped("linear", max_loras=4, lora_config=None, packed=[]) == 5
    assert wrapped("moe", 4, None, []) == 4
    assert wrapped.__wrapped__ is from_layer  # type: ignore[attr-defined]


def test_patch_runs_when_the_module_is_first_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "kaito_probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "target.py").write_text(textwrap.dedent("VALUE = 1\n"))
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[int] = []
    hook = lora_fix._PatchOnImport("kaito_probe_pkg.target", lambda m: seen.append(m.VALUE))
    monkeypatch.setattr(sys, "meta_path", [hook, *sys.meta_path])
    try:
        import kaito_probe_pkg.target  # type: ignore[import-not-found]  # noqa: F401

        assert seen == [1]
        assert hook not in sys.meta_path  # it steps aside after the one import
    finally:
        for name in ("kaito_probe_pkg.target", "kaito_probe_pkg"):
            sys.modules.pop(name, None)
