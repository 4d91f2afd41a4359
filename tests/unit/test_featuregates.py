"""Upstream's feature-gate names: known ones parse, typos and unsupported values are refused."""

from __future__ import annotations

import pytest

from kaito import featuregates
from kaito.operator import parse_args


def test_defaults_and_known_gates() -> None:
    gates = featuregates.parse("")
    assert gates.enabled("vLLM") and not gates.enabled("disableNodeAutoProvisioning")
    gates = featuregates.parse("vLLM=true, disableNodeAutoProvisioning=TRUE")
    assert gates.enabled("disableNodeAutoProvisioning")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("vllm=true", "unknown gate 'vllm'"),
        ("vLLM", "needs =true or =false"),
        ("vLLM=yes", "needs =true or =false"),
        ("vLLM=false", "transformers runtime"),
        ("ModelStreaming=true", "not supported by this operator"),
    ],
)
def test_bad_gates_are_named(text: str, needle: str) -> None:
    with pytest.raises(featuregates.FeatureGateError, match=needle):
        featuregates.parse(text)


def test_unsupported_gate_at_its_default_is_accepted() -> None:
    assert not featuregates.parse("ModelStreaming=false").enabled("ModelStreaming")
    assert featuregates.parse("enableMIG=true").enabled("enableMIG")


def test_operator_flag_disables_node_provisioning(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["--feature-gates=disableNodeAutoProvisioning=true"])
    assert args.node_provisioner == "byo"
    with pytest.raises(SystemExit) as info:
        parse_args(["--feature-gates=nope=true"])
    assert info.value.code == 2
    assert "unknown gate 'nope'" in capsys.readouterr().err


def test_the_inferenceset_controller_gate_can_be_turned_off() -> None:
    assert featuregates.parse("").enabled("enableInferenceSetController")
    assert not featuregates.parse("enableInferenceSetController=false").enabled(
        "enableInferenceSetController"
    )
