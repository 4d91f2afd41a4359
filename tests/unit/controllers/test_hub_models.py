"""Where the workspace controller gets a hub model's HF_TOKEN, and when a missing one matters."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kaito.api import parse_workspace
from kaito.controllers.hub_models import hub_token, presets_for
from kaito.presets import Preset, SpecError, get_preset
from kaito.runtime.errors import ApiError, Forbidden, NotFound


class Secrets:
    """Just the client's get(), for Secrets."""

    def __init__(self, answer: dict[str, Any] | ApiError) -> None:
        self.answer = answer
        self.reads = 0

    async def get(self, gvk: Any, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        if isinstance(self.answer, ApiError):
            raise self.answer
        return self.answer


class Hub:
    """HubPresets' preset(): open models answer, gated ones need the token 'good'."""

    def __init__(self) -> None:
        self.tokens: list[str | None] = []

    async def preset(
        self, repo_id: str, *, revision: str = "main", token: str | None = None
    ) -> Preset:
        self.tokens.append(token)
        if "gated" in repo_id and token != "good":
            raise SpecError(
                "inference.preset.presetOptions.modelAccessSecret", f"{repo_id} is gated (HTTP 401)"
            )
        preset = get_preset("phi-3-mini-4k-instruct")
        assert preset is not None
        return preset.model_copy(update={"hf_id": repo_id, "origin": "hub"})


def secret(value: bytes | None) -> dict[str, Any]:
    return {"data": {} if value is None else {"HF_TOKEN": base64.b64encode(value).decode()}}


def ws(model: str, secret_name: str | None = None) -> tuple[Any, dict[str, Any]]:
    preset: dict[str, Any] = {"name": model}
    if secret_name:
        preset["presetOptions"] = {"modelAccessSecret": secret_name}
    doc = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "w", "namespace": "ns"},
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"a": "b"}},
        },
        "inference": {"preset": preset},
    }
    return parse_workspace(doc), doc


@pytest.mark.parametrize(
    ("answer", "token", "why"),
    [
        (secret(b"good\n"), "good", None),
        (secret(None), None, "has no key HF_TOKEN"),
        (secret(b"\xff"), None, "not base64-encoded text"),
        (NotFound(404), None, "does not exist in ns"),
        (Forbidden(403), None, "modelHub.readAccessSecrets=true"),
    ],
)
async def test_the_token_and_why_there_is_none(
    answer: dict[str, Any] | ApiError, token: str | None, why: str | None
) -> None:
    got, reason = await hub_token(Secrets(answer), "ns", "hf")  # type: ignore[arg-type]
    assert got == token
    assert (reason is None) if why is None else (why in (reason or ""))


async def test_curated_presets_and_other_names_ask_nobody() -> None:
    client, hub = Secrets(secret(b"good")), Hub()
    for name in ("phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct", "not-a-hub-id"):
        workspace, doc = ws(name, "hf")
        assert await presets_for(client, hub, workspace, doc) == {}  # type: ignore[arg-type]
    assert client.reads == 0 and hub.tokens == []


async def test_an_open_model_is_sized_without_the_secret_it_names() -> None:
    client, hub = Secrets(NotFound(404)), Hub()
    workspace, doc = ws("org/open-model", "hf-token")
    found = await presets_for(client, hub, workspace, doc)  # type: ignore[arg-type]
    assert found["org/open-model"].hf_id == "org/open-model" and hub.tokens == [None]


async def test_a_gated_model_says_why_there_was_no_token() -> None:
    workspace, doc = ws("org/gated-model", "hf-token")
    with pytest.raises(SpecError) as caught:
        await presets_for(Secrets(Forbidden(403)), Hub(), workspace, doc)  # type: ignore[arg-type]
    assert caught.value.field == "inference.preset.presetOptions.modelAccessSecret"
    assert "is gated" in caught.value.reason and "readAccessSecrets" in caught.value.reason
    found = await presets_for(Secrets(secret(b"good")), Hub(), workspace, doc)  # type: ignore[arg-type]
    assert "org/gated-model" in found
