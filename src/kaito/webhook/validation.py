"""Admission rules that need the model catalog or the cluster (CEL in the CRD covers the rest).

Everything here is a pure function of the Workspace, the operator's :class:`Policy` and the
:class:`ClusterView` the server looked up, so the rules are unit-tested without a server.  Every
problem is a :class:`FieldError` naming the field path and saying what would be accepted.  An
update is held to the same rules as a create (immutable fields are CEL in the CRD), unless it
leaves resource/inference/tuning alone or the Workspace is being deleted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from kaito import presets
from kaito.api import WorkspaceBase, constants, parse_workspace
from kaito.api.workspace import DataSource
from kaito.presets.hub_sizing import is_hub_id
from kaito.webhook import configs, resources
from kaito.webhook.addresses import url_problem
from kaito.webhook.resources import names as _names
from kaito.webhook.view import ClusterView, FieldError, Policy

DEFAULT_POLICY = Policy()
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 63


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def parse(obj: Mapping[str, Any]) -> tuple[WorkspaceBase | None, list[FieldError]]:
    """Parse a Workspace; type errors come back as field errors instead of exceptions."""
    if not isinstance(obj, Mapping):
        return None, [FieldError("(root)", "the object must be a JSON object")]
    try:
        return parse_workspace(dict(obj)), []
    except ValidationError as exc:
        errors = [
            FieldError(_loc(tuple(e["loc"])), e["msg"].rstrip(".") + f" (got {_short(e)})")
            for e in exc.errors(include_url=False)[:20]
        ]
        return None, errors


def _short(err: Any) -> str:
    text = repr(err.get("input"))
    return text if len(text) <= 60 else text[:57] + "..."


def _preset_names(*, tunable: bool = False, near: str | None = None) -> list[str]:
    """Curated preset names, those closest to `near` (a mistyped name) first."""
    names = sorted(
        p.name
        for p in presets.list_presets(include_test=False)
        if not p.deprecated and (p.supports_tuning or not tunable)
    )
    if near:
        close = difflib.get_close_matches(near.lower(), names, n=5, cutoff=0.5)
        names = close + [n for n in names if n not in close]
    return names


def _check_annotations(ws: WorkspaceBase) -> list[FieldError]:
    errors: list[FieldError] = []
    annotations = ws.metadata.annotations or {}
    choices: dict[str, Sequence[str]] = {
        constants.ANNOTATION_NODE_IMAGE_FAMILY: constants.NODE_IMAGE_FAMILIES,
        constants.ANNOTATION_RUNTIME: constants.RUNTIMES,
        constants.ANNOTATION_PERFORMANCE_MODE: constants.PERFORMANCE_MODES,
        constants.ANNOTATION_USE_LOCAL_WEIGHTS: ("true", "false"),
    }
    for key, accepted in choices.items():
        value = annotations.get(key)
        if value is not None and value.lower() not in accepted:
            errors.append(
                FieldError(
                    f"metadata.annotations[{key}]",
                    f"unsupported value {value!r}; accepted: {', '.join(accepted)}",
                )
            )
    return errors


def _check_name(ws: WorkspaceBase) -> list[FieldError]:
    name = ws.metadata.name or ""
    if name and (len(name) > MAX_NAME or not DNS1035_LABEL.match(name)):
        return [
            FieldError(
                "metadata.name",
                f"{name!r} also names the Workspace's Service and pods, so it must be at most 63 "
                "lower-case letters, digits and '-', starting with a letter (e.g. "
                "workspace-phi-3-mini)",
            )
        ]
    return []


def _check_selector(ws: WorkspaceBase) -> list[FieldError]:
    selector = ws.resource.label_selector
    labels = selector.match_labels or {}
    if (
        labels
        and not selector.match_expressions
        and set(labels) <= constants.RESERVED_SELECTOR_KEYS
    ):
        return [
            FieldError(
                "resource.labelSelector.matchLabels",
                "only Kaito-reserved keys are set (" + ", ".join(sorted(labels)) + "); add a "
                "label of your own, e.g. apps: my-model",
            )
        ]
    return []


def _preset(
    name: str, field: str, *, tuning: bool, view: ClusterView | None
) -> tuple[presets.Preset | None, list[FieldError]]:
    hub_presets = (view.hub_presets if view is not None else None) or {}
    preset = presets.get_preset(name) or hub_presets.get(name.strip().lower())
    if preset is None and is_hub_id(name):
        return None, []  # a hub model the server could not read: the operator sizes it
    if preset is None:
        return None, [
            FieldError(
                field,
                f"unknown preset {name!r}; accepted: "
                f"{_names(_preset_names(tunable=tuning, near=name))}"
                + ("" if tuning else ", or a Hugging Face model id (owner/name)"),
            )
        ]
    if preset.deprecated:
        return None, [
            FieldError(
                field,
                f"preset {name!r} is deprecated; choose one of "
                f"{_names(_preset_names(tunable=tuning))}",
            )
        ]
    if tuning and not preset.supports_tuning:
        return None, [
            FieldError(
                field,
                f"preset {name!r} cannot be tuned; tunable presets: "
                f"{_names(_preset_names(tunable=True))}",
            )
        ]
    return preset, []


def _check_urls(prefix: str, source: DataSource | None, policy: Policy) -> list[FieldError]:
    if source is None or policy.allow_private_urls:
        return []
    errors = []
    for i, url in enumerate(source.urls or ()):
        problem = url_problem(url)
        if problem:
            errors.append(
                FieldError(
                    f"{prefix}.urls[{i}]",
                    f"{url[:200]!r} {problem}; use a public http(s) URL (or input.image / "
                    "input.volumeSource for data inside the cluster)",
                )
            )
    return errors


def _check_adapters(ws: WorkspaceBase, preset: presets.Preset | None) -> list[FieldError]:
    """Adapters come from an image or a volume (as upstream: never from URLs)."""
    inference = ws.inference
    assert inference is not None
    errors: list[FieldError] = []
    if inference.adapters and preset is not None and not preset.supports_lora:
        errors.append(
            FieldError(
                "inference.adapters",
                f"preset {preset.name!r} does not support LoRA adapters; remove "
                "inference.adapters or choose a preset that allows them",
            )
        )
    for i, adapter in enumerate(inference.adapters or ()):
        source = adapter.source
        if source is None:
            continue
        field = f"inference.adapters[{i}].source"
        if source.urls:
            errors.append(
                FieldError(
                    f"{field}.urls",
                    "adapters cannot be downloaded from URLs; ship the adapter as an image "
                    "(source.image) or on a volume (source.volumeSource)",
                )
            )
        elif not source.image and not source.volume_source:
            errors.append(
                FieldError(
                    field,
                    f"adapter {source.name!r} needs source.image (an adapter image) or "
                    "source.volumeSource (a volume holding adapter_config.json and "
                    "adapter_model.safetensors)",
                )
            )
    return errors


def check_spec(
    ws: WorkspaceBase, view: ClusterView | None = None, policy: Policy = DEFAULT_POLICY
) -> list[FieldError]:
    """Catalog and cluster rules for a parsed Workspace (see docs/api.md for the list)."""
    errors = _check_annotations(ws) + _check_selector(ws) + configs.check_images(ws)
    errors += resources.check_count(ws)
    sku, _, sku_errors = resources.resolve_instance_type(ws, view, policy)
    errors += sku_errors
    preset: presets.Preset | None = None
    if ws.inference is not None:
        if ws.inference.preset is not None:
            preset, preset_errors = _preset(
                ws.inference.preset.name, "inference.preset.name", tuning=False, view=view
            )
            errors += preset_errors
        errors += _check_adapters(ws, preset)
    if ws.tuning is not None:
        preset, preset_errors = _preset(
            ws.tuning.preset.name, "tuning.preset.name", tuning=True, view=view
        )
        errors += preset_errors + _check_urls("tuning.input", ws.tuning.input, policy)
        errors += configs.tuning_configmap(ws, view)
    available: int | None = None
    if ws.resource.instance_type is None and view is not None and view.selected_nodes is not None:
        sku, byo_errors = resources.byo_nodes(ws, view.selected_nodes, preset)
        errors += byo_errors
        available = len(view.selected_nodes)
    errors += resources.check_partition(ws, policy, sku)
    config, config_errors = configs.inference_config(ws, view)
    errors += config_errors
    if errors or preset is None or sku is None:
        return errors
    if ws.inference is not None and not resources.bypassed(ws):
        errors += resources.total_memory_fit(ws, preset, sku, config)
    return errors or resources.plan_fit(
        ws,
        sku,
        config,
        available_nodes=available,
        hub_presets=view.hub_presets if view is not None else None,
    )


def _spec(obj: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return obj.get("resource"), obj.get("inference"), obj.get("tuning")


def spec_changed(obj: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Did resource/inference/tuning change?  Metadata-only updates are never blocked."""
    return _spec(obj) != _spec(old)


def update_checked(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Is an update held to the rules?  Not while deleting, nor when the spec is unchanged.

    The server asks before it looks anything up (nodes, ConfigMaps, the cloud, the model hub).
    """
    meta = obj.get("metadata")
    if isinstance(meta, Mapping) and meta.get("deletionTimestamp"):
        return False
    return not (isinstance(old, Mapping) and not spec_changed(obj, old))


def validate_create(
    obj: Mapping[str, Any], view: ClusterView | None = None, policy: Policy = DEFAULT_POLICY
) -> list[FieldError]:
    """All webhook rules for a new Workspace."""
    ws, errors = parse(obj)
    if ws is None:
        return errors
    return _check_name(ws) + check_spec(ws, view, policy)


def validate_update(
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    policy: Policy = DEFAULT_POLICY,
    view: ClusterView | None = None,
) -> list[FieldError]:
    """The create rules for a changed spec; finalizer/label-only updates and deletions pass."""
    if not isinstance(obj, Mapping):
        return [FieldError("(root)", "the object must be a JSON object")]
    if not update_checked(obj, old):
        return []
    ws, errors = parse(obj)
    if ws is None:
        return errors
    return check_spec(ws, view, policy)


def default_patch(obj: Mapping[str, Any], api_version: str) -> list[dict[str, Any]]:
    """JSON Patch for v1alpha1 defaulting: upstream's instanceType when none is written.

    Only v1alpha1 creates get it (v1beta1 keeps "no instanceType" = bring-your-own nodes), and
    an explicit instanceType such as the seed's Standard_NC6s_v3 is never touched.
    """
    if api_version != f"{constants.GROUP}/{constants.V1ALPHA1}":
        return []
    resource = obj.get("resource")
    if not isinstance(resource, Mapping) or resource.get("instanceType"):
        return []
    if resource.get("preferredNodes"):
        return []  # explicitly bring-your-own
    return [
        {
            "op": "add",
            "path": "/resource/instanceType",
            "value": constants.V1ALPHA1_DEFAULT_INSTANCE_TYPE,
        }
    ]
