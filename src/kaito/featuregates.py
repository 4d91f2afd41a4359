"""``--feature-gates=name=true,...`` with upstream Kaito's gate names.

Unknown names and non-boolean values are an error (as upstream), so a typo in a Helm value
stops the operator with a message instead of being silently ignored.  Gates for features
this operator does not implement may be given, but only with their default value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# name -> (default, implemented here)
KNOWN: Mapping[str, tuple[bool, bool]] = {
    "vLLM": (True, True),
    "disableNodeAutoProvisioning": (False, True),
    "gatewayAPIInferenceExtension": (False, False),
    "enableInferenceSetController": (True, True),
    "enableMIG": (False, True),
    "enableAccelerator": (False, True),
    "enableMultiRoleInferenceController": (False, False),
    "ModelMirror": (False, False),
    "ModelStreaming": (False, False),
    "enableBaseImageAutoUpgrade": (False, False),
}


class FeatureGateError(ValueError):
    """A gate the operator does not know or cannot honour; the message says which."""


@dataclass(frozen=True)
class FeatureGates:
    values: Mapping[str, bool]

    def enabled(self, name: str) -> bool:
        return self.values[name]


def parse(text: str | None) -> FeatureGates:
    values = {name: default for name, (default, _) in KNOWN.items()}
    for raw_item in (text or "").split(","):
        item = raw_item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        if name not in KNOWN:
            raise FeatureGateError(
                f"--feature-gates: unknown gate {name!r}; known: {', '.join(sorted(KNOWN))}"
            )
        value = raw.strip().lower()
        if not sep or value not in ("true", "false"):
            raise FeatureGateError(f"--feature-gates: {name} needs =true or =false, got {item!r}")
        default, implemented = KNOWN[name]
        if (value == "true") != default and not implemented:
            raise FeatureGateError(
                f"--feature-gates: {name}={value} is not supported by this operator "
                f"(only its default, {str(default).lower()})"
            )
        if name == "vLLM" and value == "false":
            raise FeatureGateError(
                "--feature-gates: vLLM=false (the transformers runtime) is not supported; "
                "every preset is served by vLLM"
            )
        values[name] = value == "true"
    return FeatureGates(values)
