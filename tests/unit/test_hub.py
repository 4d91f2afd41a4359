"""The hub client and the preset cache against the local hub server (hack/hub.py), in-process."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import kaito.hub
from hack.hub import Hub, load_repos, serve
from kaito.hub import HubClient, HubPresets, hub_endpoint
from kaito.presets import SpecError
from kaito.presets.errors import SourceUnavailable

FIXTURES = Path(__file__).parents[1] / "fixtures" / "hub"
TOKEN = "hf_test_token"


@pytest.fixture
async def hub() -> AsyncIterator[tuple[Hub, str]]:
    state = Hub(load_repos([FIXTURES], {}), tokens=frozenset({TOKEN}), page_size=2)
    runner, url = await serve(state, "127.0.0.1", 0)
    yield state, url
    await runner.cleanup()


@pytest.fixture
async def client(hub: tuple[Hub, str]) -> AsyncIterator[HubClient]:
    async with HubClient(hub[1], timeout_s=5) as c:
        yield c


def test_endpoint_is_hf_endpoint_as_the_hf_libraries_read_it() -> None:
    assert hub_endpoint({}) == "https://huggingface.co"
    assert hub_endpoint({"HF_ENDPOINT": "http://127.0.0.1:9/"}) == "http://127.0.0.1:9"


async def test_metadata_follows_paginated_listings(hub: tuple[Hub, str], client: HubClient) -> None:
    state, _ = hub
    model = await client.model("Qwen/Qwen3-0.6B")
    assert {f.path for f in model.files} >= {"config.json", "model.safetensors", "vocab.json"}
    assert dict((f.path, f.size) for f in model.files)["model.safetensors"] == 1_503_300_328
    assert model.sha and model.config["model_type"] == "qwen3"
    assert model.generation_config and model.generation_config["top_k"] == 20
    assert model.tokenizer_config is None  # not in the repository: not asked for
    pages = [r for r in state.requests if "/tree/" in r]
    assert len(pages) == 3  # 6 files, 2 a page


async def test_the_repository_id_is_case_insensitive_like_the_hubs(client: HubClient) -> None:
    model = await client.model("qwen/qwen3-0.6b")
    assert model.config["architectures"] == ["Qwen3ForCausalLM"]


async def test_gated_models_need_an_accepted_token(client: HubClient) -> None:
    gated = "meta-llama/Llama-3.1-8B-Instruct"
    with pytest.raises(SpecError) as anonymous:
        await client.model(gated)
    assert anonymous.value.field == "inference.preset.presetOptions.modelAccessSecret"
    assert "is gated (HTTP 401): set presetOptions.modelAccessSecret" in anonymous.value.reason
    with pytest.raises(SpecError) as refused:
        await client.model(gated, token="hf_wrong")
    assert "refused the HF_TOKEN" in refused.value.reason and "HTTP 403" in refused.value.reason
    model = await client.model(gated, token=TOKEN)
    assert model.gated and model.config["num_key_value_heads"] == 8


async def test_unknown_models_and_revisions_are_spec_errors(client: HubClient) -> None:
    with pytest.raises(SpecError) as missing:
        await client.model("nobody/no-such-model")
    assert not isinstance(missing.value, SourceUnavailable)
    assert missing.value.field == "inference.preset.name"
    assert "no model nobody/no-such-model on http://127.0.0.1:" in missing.value.reason
    with pytest.raises(SpecError, match="no such revision"):
        await client.model("Qwen/Qwen3-0.6B", revision="v9")


async def test_a_failing_hub_is_unavailable_not_a_spec_error(
    hub: tuple[Hub, str], client: HubClient
) -> None:
    state, url = hub
    state.fail_status, state.fail_count = 503, 1
    with pytest.raises(SourceUnavailable) as caught:
        await client.model("Qwen/Qwen3-0.6B")
    assert f"the model hub {url} answered HTTP 503" in caught.value.reason
    state.fail_status, state.fail_count = 429, 1
    with pytest.raises(SourceUnavailable, match="HTTP 429"):
        await client.model("Qwen/Qwen3-0.6B")
    assert (await client.model("Qwen/Qwen3-0.6B")).sha  # recovered


async def test_an_unreachable_hub_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    async with HubClient(f"http://127.0.0.1:{port}", timeout_s=2) as c:
        with pytest.raises(SourceUnavailable, match="cannot reach the model hub"):
            await c.model("Qwen/Qwen3-0.6B")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_presets_are_cached_with_a_ttl_and_concurrent_asks_share_one_fetch(
    client: HubClient,
) -> None:
    clock = Clock()
    presets = HubPresets(client, ttl_s=60, clock=clock)
    first, second = await asyncio.gather(
        presets.preset("Qwen/Qwen3-0.6B"), presets.preset("qwen/QWEN3-0.6B")
    )
    assert first is second and presets.fetches == 1
    clock.now += 59
    assert await presets.preset("Qwen/Qwen3-0.6B") is first and presets.fetches == 1
    clock.now += 2
    assert (await presets.preset("Qwen/Qwen3-0.6B")).name == "qwen3-0.6b"
    assert presets.fetches == 2


async def test_the_cache_is_bounded(client: HubClient) -> None:
    presets = HubPresets(client, max_entries=2)
    for repo in ("Qwen/Qwen3-0.6B", "microsoft/Phi-3-mini-4k-instruct", "google/gemma-2-2b-it"):
        token = TOKEN if repo.startswith("google") else None
        await presets.preset(repo, token=token)
    assert len(presets) == 2
    await presets.preset("Qwen/Qwen3-0.6B")  # the oldest was dropped: fetched again
    assert presets.fetches == 4


async def test_refusals_are_remembered_briefly_and_outages_not_at_all(
    hub: tuple[Hub, str], client: HubClient
) -> None:
    state, _ = hub
    clock = Clock()
    presets = HubPresets(client, failure_ttl_s=30, clock=clock)
    for _ in range(3):
        with pytest.raises(SpecError, match="no model"):
            await presets.preset("nobody/no-such-model")
    assert presets.fetches == 1
    clock.now += 31
    with pytest.raises(SpecError):
        await presets.preset("nobody/no-such-model")
    assert presets.fetches == 2

    state.fail_status, state.fail_count = 503, 1
    with pytest.raises(SourceUnavailable):
        await presets.preset("Qwen/Qwen3-0.6B")
    assert (await presets.preset("Qwen/Qwen3-0.6B")).name == "qwen3-0.6b"


async def test_a_token_is_part_of_the_cache_key(client: HubClient) -> None:
    presets = HubPresets(client)
    gated = "meta-llama/Llama-3.1-8B-Instruct"
    with pytest.raises(SpecError, match="is gated"):
        await presets.preset(gated)
    assert (await presets.preset(gated, token=TOKEN)).name == "llama-3.1-8b-instruct"


async def test_large_answers_are_read_whole_and_oversized_ones_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "org" / "many-files"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text(
        (FIXTURES / "Qwen" / "Qwen3-0.6B" / "config.json").read_text()
    )
    sizes = {f"shards/part-{i:05d}.bin": i for i in range(3000)} | {"model.safetensors": 10}
    (repo / "hub.json").write_text(json.dumps({"files": sizes}))
    state = Hub(load_repos([tmp_path], {}), page_size=10_000)
    runner, url = await serve(state, "127.0.0.1", 0)
    try:
        async with HubClient(url) as c:
            model = await c.model("org/many-files")  # one listing of about 400 kB
            assert len(model.files) == 3002
            monkeypatch.setattr(kaito.hub, "MAX_JSON_BYTES", 1000)
            with pytest.raises(SpecError, match="is larger than 1000 bytes"):
                await c.model("org/many-files")
    finally:
        await runner.cleanup()
