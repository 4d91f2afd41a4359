"""The webhook sizes a preset named by hub id exactly like a curated one (local hub, in-process)."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.hub import Hub, load_repos, serve
from kaito.hub import HubClient, HubPresets
from kaito.webhook import WebhookServer

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "hub"
QWEN = yaml.safe_load((REPO / "examples" / "workspace-qwen3-0.6b-hub.yaml").read_text())


@pytest.fixture
async def local_hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, str]]:
    """The fixtures plus two made-up repositories: one too big for any node, one unservable."""
    qwen = FIXTURES / "Qwen" / "Qwen3-0.6B"
    config = json.loads((qwen / "config.json").read_text())
    big = tmp_path / "test-org" / "huge"
    odd = tmp_path / "test-org" / "not-vllm"
    for repo, arch, size in ((big, "Qwen3ForCausalLM", 900 * 2**30), (odd, "FooForBar", 10**9)):
        repo.mkdir(parents=True)
        (repo / "config.json").write_text(json.dumps(config | {"architectures": [arch]}))
        (repo / "hub.json").write_text(json.dumps({"files": {"model.safetensors": size}}))
    hub = Hub(load_repos([FIXTURES, tmp_path], {}), tokens=frozenset({"tok"}))
    runner, url = await serve(hub, "127.0.0.1", 0)
    yield hub, url
    await runner.cleanup()


@pytest.fixture
async def webhook(local_hub: tuple[Hub, str]) -> AsyncIterator[WebhookServer]:
    client = HubClient(local_hub[1])
    yield WebhookServer(hub=HubPresets(client), hub_timeout_s=5)
    await client.close()


def create(obj: dict[str, Any]) -> dict[str, Any]:
    return {"uid": "u", "operation": "CREATE", "object": obj}


def workspace(name: str, instance_type: str = "Standard_NC24ads_A100_v4") -> dict[str, Any]:
    obj = copy.deepcopy(QWEN)
    obj["inference"]["preset"] = {"name": name}
    obj["resource"]["instanceType"] = instance_type
    return obj


async def test_upstreams_generic_example_is_admitted(webhook: WebhookServer) -> None:
    warnings: list[str] = []
    assert await webhook.review(create(QWEN), warnings) == []
    assert warnings == []


async def test_a_hub_model_too_big_for_the_instance_type_is_refused_like_a_curated_one(
    webhook: WebhookServer,
) -> None:
    (error,) = await webhook.review(create(workspace("test-org/huge", "Standard_D4s_v5")))
    assert error.field == "resource.instanceType"
    assert "huge" in error.message and "bypass-resource-checks" in error.message


async def test_models_that_cannot_be_served_are_refused_with_the_reason(
    webhook: WebhookServer,
) -> None:
    (missing,) = await webhook.review(create(workspace("nobody/no-such-model")))
    assert missing.field == "inference.preset.name" and "no model nobody/no-such-model" in (
        missing.message
    )
    (odd,) = await webhook.review(create(workspace("test-org/not-vllm")))
    assert "FooForBar, which vLLM does not serve" in odd.message
    (gated,) = await webhook.review(create(workspace("google/gemma-2-2b-it")))
    assert gated.field == "inference.preset.presetOptions.modelAccessSecret"


async def test_a_gated_model_with_an_access_secret_is_left_to_the_operator(
    webhook: WebhookServer,
) -> None:
    obj = workspace("google/gemma-2-2b-it")
    obj["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    warnings: list[str] = []
    assert await webhook.review(create(obj), warnings) == []
    assert len(warnings) == 1 and "not checked anonymously" in warnings[0]


async def test_a_hub_outage_admits_with_a_warning(
    local_hub: tuple[Hub, str], webhook: WebhookServer
) -> None:
    hub, _ = local_hub
    hub.fail_status, hub.fail_count = 503, 5
    warnings: list[str] = []
    assert await webhook.review(create(workspace("test-org/huge")), warnings) == []
    assert "was not checked" in warnings[0] and "HTTP 503" in warnings[0]


async def test_unchanged_updates_do_not_ask_the_hub(
    local_hub: tuple[Hub, str], webhook: WebhookServer
) -> None:
    hub, _ = local_hub
    before = len(hub.requests)
    obj = workspace("test-org/huge", "Standard_D4s_v5")
    labelled = copy.deepcopy(obj)
    labelled["metadata"]["labels"] = {"team": "a"}
    review = {"uid": "u", "operation": "UPDATE", "object": labelled, "oldObject": obj}
    assert await webhook.review(review) == []
    assert len(hub.requests) == before


def inference_set(name: str, instance_type: str = "Standard_NC24ads_A100_v4") -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "InferenceSet",
        "metadata": {"name": "set", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "labelSelector": {"matchLabels": {"apps": "set"}},
            "template": {
                "resource": {"instanceType": instance_type},
                "inference": {"preset": {"name": name}},
            },
        },
    }


async def test_a_sets_hub_model_is_sized_like_a_workspaces(webhook: WebhookServer) -> None:
    assert await webhook.review_set(create(inference_set("Qwen/Qwen3-0.6B"))) == []
    (error,) = await webhook.review_set(create(inference_set("test-org/huge", "Standard_D4s_v5")))
    assert error.field == "spec.template.resource.instanceType" and "huge" in error.message


async def test_a_sets_unservable_hub_model_is_named_at_the_sets_field(
    webhook: WebhookServer,
) -> None:
    (missing,) = await webhook.review_set(create(inference_set("nobody/no-such-model")))
    assert missing.field == "spec.template.inference.preset.name"
    assert "no model nobody/no-such-model" in missing.message


async def test_a_hub_outage_admits_a_set_with_a_warning_at_its_field(
    local_hub: tuple[Hub, str], webhook: WebhookServer
) -> None:
    hub, _ = local_hub
    hub.fail_status, hub.fail_count = 503, 5
    warnings: list[str] = []
    assert await webhook.review_set(create(inference_set("test-org/huge")), warnings) == []
    assert warnings[0].startswith("spec.template.inference.preset.name: ")
    assert "HTTP 503" in warnings[0]
