"""Where model files come from: the preset registry, a private image, or the hub."""

from __future__ import annotations

from kaito.api import PresetOptions
from kaito.controllers.common import local_weights_args, weights_source


def test_catalog_image_lives_in_the_preset_registry() -> None:
    assert weights_source("kaito-tiny", "0.1.0", None, "reg.local:5000/") == (
        "reg.local:5000/kaito-tiny:0.1.0",
        (),
    )


def test_private_preset_image_and_secrets_win() -> None:
    options = PresetOptions(image="private.example/phi:1", image_pull_secrets=["regcred"])
    assert weights_source("kaito-tiny", "0.1.0", options, "reg") == (
        "private.example/phi:1",
        ("regcred",),
    )


def test_hub_models_have_no_image() -> None:
    assert weights_source(None, None, PresetOptions(model_access_secret="hf"), "reg") == (None, ())


def test_hub_flags_are_rewritten_for_local_weights() -> None:
    args = ["--model", "microsoft/phi", "--download-dir", "/workspace/weights", "--dtype", "x"]
    assert local_weights_args(args) == ["--model", "/workspace/weights", "--dtype", "x"]
