"""The real Hugging Face clients download from the local hub (hack/hub.py) through HF_ENDPOINT.

huggingface_hub's snapshot_download and transformers' from_pretrained are what vLLM uses to fetch
a model named by hub id; here they fetch the tiny test model published on the local hub under an
owner/name id, byte for byte, and the launcher's pre-flight check reads the same hub.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.hub import LocalHub
from serving.options import OptionsError
from serving.weights import check_model_source
from tests.serving.conftest import needs_vllm

REPO = Path(__file__).resolve().parents[2]
MODEL_ID = "kaito-test/tiny-llama"
FETCH = """
import sys
from huggingface_hub import snapshot_download
from transformers import AutoConfig, AutoTokenizer
path = snapshot_download(sys.argv[1], cache_dir=sys.argv[2])
config = AutoConfig.from_pretrained(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
print(path)
print(config.num_hidden_layers, tokenizer("hello world")["input_ids"][:1])
"""


@pytest.fixture(scope="module")
def hub(tiny: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    model_dir = tiny.model  # type: ignore[attr-defined]
    log = tmp_path_factory.mktemp("hub") / "hub.log"
    local = LocalHub.start(
        roots=[REPO / "tests" / "fixtures" / "hub"],
        publish={MODEL_ID: model_dir},
        tokens=["hf_good"],
        log=log,
    )
    yield local
    local.stop()


@needs_vllm
def test_huggingface_hub_and_transformers_download_from_the_local_hub(
    hub: LocalHub, tiny: object, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, "-c", FETCH, MODEL_ID, str(tmp_path / "cache")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    snapshot = Path(done.stdout.splitlines()[0])
    source = tiny.model  # type: ignore[attr-defined]
    for original in sorted(p for p in source.iterdir() if p.is_file()):
        assert (snapshot / original.name).read_bytes() == original.read_bytes(), original.name
    assert done.stdout.splitlines()[1].startswith("2 ")
    served = hub.requests()
    assert any(r.startswith("GET /kaito-test/tiny-llama/resolve/") and "safetensors" in r
               for r in served), served  # fmt: skip


@needs_vllm
def test_the_launchers_preflight_reads_the_same_hub(
    hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    check_model_source(MODEL_ID)
    with pytest.raises(OptionsError, match=r"no-such-model .*was not found"):
        check_model_source("kaito-test/no-such-model")


def test_a_gated_model_is_refused_before_vllm_starts_unless_the_token_is_accepted(
    hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub serves a gated model's metadata to anyone: the files are what need the token."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    gated = "google/gemma-2-2b-it"
    with pytest.raises(OptionsError, match=r"is gated: set presetOptions\.modelAccessSecret"):
        check_model_source(gated)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(OptionsError, match=r"HTTP 403.*HF_TOKEN .* was refused"):
        check_model_source(gated)
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    check_model_source(gated)
