"""From a Workspace manifest to the decision the operator would take: preset, SKU, nodes, container.

The manifest is read as plain data (kaito.sh v1alpha1 or v1beta1: `resource`, `inference`, `tuning`
at the top level) so this works before, and independently of, the API models. A preset name that is
not in the catalog but is a hub id (owner/model) is looked up in `hub_presets`, which the caller
fills from the hub (:mod:`kaito.hub`) beforehand; :func:`hub_model` says which name that is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from kaito.presets.catalog import Preset, get_preset
from kaito.presets.errors import SpecError
from kaito.presets.estimator import Estimate, estimate
from kaito.presets.hub_sizing import is_hub_id
from kaito.presets.skus import Sku, get_sku
from kaito.presets.vllm import AdapterSpec, Launch, user_max_model_len, vllm_launch

API_VERSIONS = ("kaito.sh/v1alpha1", "kaito.sh/v1beta1")
DEFAULT_INSTANCE_TYPE = "Standard_NC24ads_A100_v4"
TUNING_METHODS = ("lora", "qlora")


class Plan(BaseModel):
    """What a Workspace would get; `launch` is None for tuning and pod-template workspaces."""

    model_config = ConfigDict(frozen=True)

    name: str
    namespace: str
    api_version: str
    mode: Literal["inference", "tuning", "template"]
    preset: Preset | None = None
    sku: Sku | None = None
    estimate: Estimate | None = None
    launch: Launch | None = None
    adapters: tuple[AdapterSpec, ...] = ()
    tuning_method: str | None = None
    notes: tuple[str, ...] = ()


def _mapping(value: Any, field: str, *, required: bool = False) -> Mapping[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(field, "expected a mapping" if value is not None else "is required")
    return value


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(field, "is required and must be a non-empty string")
    return value.strip()


def _preset(name: Any, field: str, hub_presets: Mapping[str, Preset]) -> Preset:
    text = _text(name, field)
    preset = get_preset(text) or hub_presets.get(text.lower())
    if preset is None:
        if is_hub_id(text):
            raise SpecError(
                field, f"{text!r} is not a curated preset and was not read from the model hub"
            )
        raise SpecError(
            field,
            f"unknown preset {name!r}; `kaito presets` lists the curated ones, and a Hugging Face "
            "model id (owner/name) is sized from the hub",
        )
    if preset.deprecated:
        raise SpecError(field, f"preset {preset.name} is deprecated and no longer served")
    return preset


def _adapters(raw: Any) -> tuple[AdapterSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError("inference.adapters", "expected a list")
    result = []
    for index, item in enumerate(raw):
        field = f"inference.adapters[{index}]"
        source = _mapping(
            _mapping(item, field, required=True).get("source"), f"{field}.source", required=True
        )
        name = _text(source.get("name"), f"{field}.source.name")
        strength_raw = item.get("strength", "1.0")
        try:
            strength = float(strength_raw)
        except (TypeError, ValueError):
            raise SpecError(
                f"{field}.strength", f"expected a decimal in [0, 1], got {strength_raw!r}"
            ) from None
        try:
            result.append(AdapterSpec(name=name, strength=strength))
        except ValueError:
            raise SpecError(
                field,
                f"adapter {name!r} with strength {strength_raw!r}: the name must be DNS-1123 "
                "(lowercase letters, digits, '-') and the strength a decimal in [0, 1]",
            ) from None
    return tuple(result)


def _sku(resource: Mapping[str, Any], api_version: str, notes: list[str], known: Sku | None) -> Sku:
    if known is not None:
        return known
    name = resource.get("instanceType")
    if name is None:
        if resource.get("labelSelector") and api_version.endswith("v1beta1"):
            raise SpecError(
                "resource.instanceType",
                "not set: bring-your-own nodes are sized in the cluster from their "
                "nvidia.com/gpu.count and nvidia.com/gpu.memory labels; "
                "set an instance type to plan",
            )
        name = DEFAULT_INSTANCE_TYPE
        notes.append(f"resource.instanceType not set; defaulted to {DEFAULT_INSTANCE_TYPE}")
    sku = get_sku(_text(name, "resource.instanceType"))
    if sku is None:
        raise SpecError(
            "resource.instanceType",
            f"unknown instance type {name!r}; `kaito skus` lists the known ones",
        )
    return sku


def _count(resource: Mapping[str, Any], notes: list[str]) -> int | None:
    """The node count the user asked for; 0 means "size it for me", as upstream reads it."""
    count = resource.get("count")
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise SpecError("resource.count", f"expected 0 or a positive integer, got {count!r}")
    if count == 0:
        notes.append("resource.count 0: the node count is Kaito's estimate")
        return None
    return count


def hub_model(doc: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, field) of the Workspace's preset when it must be read from the hub.

    That is a hub id (owner/model) the catalog does not know; None for curated presets and
    anything else.
    """
    for section in ("inference", "tuning"):
        field = f"{section}.preset.name"
        part = doc.get(section)
        preset = part.get("preset") if isinstance(part, Mapping) else None
        name = preset.get("name") if isinstance(preset, Mapping) else None
        if isinstance(name, str) and get_preset(name) is None and is_hub_id(name):
            return name.strip(), field
    return None


def plan_workspace(
    doc: Mapping[str, Any],
    *,
    inference_config: Mapping[str, Any] | None = None,
    sku: Sku | None = None,
    hub_presets: Mapping[str, Preset] | None = None,
    hub_endpoint: str | None = None,
) -> Plan:
    """Decide what `doc` (a Workspace) would run; SpecError/FitError name the field to fix.

    `inference_config` is the parsed inference_config.yaml from the ConfigMap that
    `inference.config` names, when the caller has it.  `sku` describes the nodes when the
    caller learned them elsewhere (bring-your-own nodes, an instance type newer than the table).
    `hub_presets` maps lowercased hub ids to presets sized from the hub; `hub_endpoint`
    (HF_ENDPOINT) is passed to the serving container so its weight download uses the same hub.
    """
    hubs = {key.lower(): value for key, value in (hub_presets or {}).items()}
    api_version = doc.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise SpecError(
            "apiVersion", f"expected one of {', '.join(API_VERSIONS)}, got {api_version!r}"
        )
    if doc.get("kind") != "Workspace":
        raise SpecError("kind", f"expected Workspace, got {doc.get('kind')!r}")
    metadata = _mapping(doc.get("metadata"), "metadata", required=True)
    name = _text(metadata.get("name"), "metadata.name")
    namespace = str(metadata.get("namespace") or "default")
    resource = _mapping(doc.get("resource"), "resource")
    inference = _mapping(doc.get("inference"), "inference")
    tuning = _mapping(doc.get("tuning"), "tuning")
    if bool(inference) == bool(tuning):
        raise SpecError("inference", "set exactly one of inference or tuning")
    notes: list[str] = []
    common = {"name": name, "namespace": namespace, "api_version": api_version}

    if tuning:
        preset = _preset(
            _mapping(tuning.get("preset"), "tuning.preset", required=True).get("name"),
            "tuning.preset.name",
            hubs,
        )
        method = tuning.get("method", "lora")
        if method not in TUNING_METHODS:
            raise SpecError("tuning.method", f"expected lora or qlora, got {method!r}")
        if not preset.supports_tuning:
            raise SpecError("tuning.preset.name", f"{preset.name} does not support tuning")
        node_sku = _sku(resource, api_version, notes, sku)
        sized = estimate(preset, node_sku, requested_count=_count(resource, notes))
        return Plan(
            **common,
            mode="tuning",
            preset=preset,
            sku=node_sku,
            estimate=sized,
            tuning_method=method,
            notes=(*notes, *sized.notes),
        )

    if "template" in inference and "preset" not in inference:
        return Plan(**common, mode="template", notes=("runs the user's pod template as written",))
    preset = _preset(
        _mapping(inference.get("preset"), "inference.preset", required=True).get("name"),
        "inference.preset.name",
        hubs,
    )
    adapters = _adapters(inference.get("adapters"))
    node_sku = _sku(resource, api_version, notes, sku)
    config = inference_config
    if config is None and inference.get("config"):
        config = {}
        notes.append(
            f"inference.config {inference['config']!r} is read from the cluster; its vllm: flags "
            "are not shown (pass its inference_config.yaml to see them)"
        )
    sized = estimate(
        preset,
        node_sku,
        max_model_len=user_max_model_len(config),
        requested_count=_count(resource, notes),
    )
    launch = vllm_launch(
        preset, node_sku, sized, adapters=adapters, user_config=config, hub_endpoint=hub_endpoint
    )
    return Plan(
        **common,
        mode="inference",
        preset=preset,
        sku=node_sku,
        estimate=sized,
        launch=launch,
        adapters=adapters,
        notes=(*notes, *sized.notes),
    )
