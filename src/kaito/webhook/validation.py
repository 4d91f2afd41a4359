"""Admission rules that need the model catalog or the cluster (CEL in the CRD covers the rest).

Everything here is a pure function of the Workspace (and, for bring-your-own nodes, of the
nodes the caller looked up), so the rules are unit-tested without a server.  Every problem is a
:class:`FieldError` naming the field path and saying what would be accepted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kaito import presets
from kaito.api import LabelSelector, WorkspaceBase, constants, parse_workspace
from kaito.api.workspace import DataSource
from kaito.presets.hub_sizing import is_hub_id
from kaito.webhook.addresses import url_problem

DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 63
_SHOWN = 40


@dataclass(frozen=True)
class FieldError:
    """One rejected field: where, and what to write instead."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Policy:
    """Switches for environments that legitimately differ (local test clusters)."""

    allow_private_urls: bool = False
    """Accept data URLs on loopback/private addresses (a local registry in tests)."""


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


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


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


def _check_instance_type(ws: WorkspaceBase) -> tuple[presets.Sku | None, list[FieldError]]:
    name = ws.resource.instance_type
    if name is None:
        return None, []
    sku = presets.get_sku(name)
    if sku is None:
        known = sorted(s.name for s in presets.list_skus())
        return None, [
            FieldError(
                "resource.instanceType",
                f"unknown instance type {name!r}; accepted: {_names(known)} (or omit "
                "instanceType and select your own GPU nodes with labelSelector)",
            )
        ]
    return sku, []


HubPresets = Mapping[str, presets.Preset]
"""Presets sized from the hub for the Workspace's hub id (lowercased), read by the caller."""


def _preset(
    name: str, field: str, *, tuning: bool, hub_presets: HubPresets
) -> tuple[presets.Preset | None, list[FieldError]]:
    preset = presets.get_preset(name) or hub_presets.get(name.strip().lower())
    if preset is None and is_hub_id(name):
        return None, []  # a hub model the caller could not read: the operator sizes it
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


def _bypass(ws: WorkspaceBase) -> bool:
    return constants.ANNOTATION_BYPASS_RESOURCE_CHECKS in (ws.metadata.annotations or {})


def _fit(preset: presets.Preset, sku: presets.Sku | None, ws: WorkspaceBase) -> list[FieldError]:
    if sku is None or _bypass(ws):
        return []
    try:
        presets.estimate(preset, sku)
    except presets.SpecError as exc:
        hint = " (or annotate kaito.sh/bypass-resource-checks to skip this check)"
        return [FieldError(exc.field, exc.reason + hint)]
    return []


def check_spec(
    ws: WorkspaceBase, policy: Policy = Policy(), hub_presets: HubPresets | None = None
) -> list[FieldError]:
    """Catalog rules for a parsed Workspace: presets, instance type, fit, adapters, data URLs.

    A preset named by hub id is checked like a curated one when `hub_presets` has it.
    """
    hubs = hub_presets or {}
    errors = _check_annotations(ws) + _check_selector(ws)
    sku, sku_errors = _check_instance_type(ws)
    errors += sku_errors
    if ws.inference is not None:
        inference = ws.inference
        if inference.preset is not None:
            preset, preset_errors = _preset(
                inference.preset.name, "inference.preset.name", tuning=False, hub_presets=hubs
            )
            errors += preset_errors
            if preset is not None:
                errors += _fit(preset, sku, ws)
                if inference.adapters and not preset.supports_lora:
                    errors.append(
                        FieldError(
                            "inference.adapters",
                            f"preset {preset.name!r} does not support LoRA adapters; remove "
                            "inference.adapters or choose a preset that allows them",
                        )
                    )
        for i, adapter in enumerate(inference.adapters or ()):
            errors += _check_urls(f"inference.adapters[{i}].source", adapter.source, policy)
    if ws.tuning is not None:
        _, preset_errors = _preset(
            ws.tuning.preset.name, "tuning.preset.name", tuning=True, hub_presets=hubs
        )
        errors += preset_errors
        errors += _check_urls("tuning.input", ws.tuning.input, policy)
    return errors


def byo_selector(ws: WorkspaceBase) -> LabelSelector | None:
    """The node selector to check when the Workspace brings its own nodes (no instanceType)."""
    if ws.resource.instance_type is not None:
        return None
    return ws.resource.label_selector


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Does a node with `labels` match (reserved Kaito keys in matchLabels are ignored)?"""
    for key, value in (selector.match_labels or {}).items():
        if key not in constants.RESERVED_SELECTOR_KEYS and labels.get(key) != value:
            return False
    for req in selector.match_expressions or ():
        present = req.key in labels
        values = req.values or []
        ok = {
            "In": present and labels.get(req.key) in values,
            "NotIn": not present or labels.get(req.key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[req.operator]
        if not ok:
            return False
    return True


def label_query(selector: LabelSelector) -> str:
    """matchLabels as an API label selector string (expressions are filtered client-side)."""
    return ",".join(
        f"{k}={v}"
        for k, v in sorted((selector.match_labels or {}).items())
        if k not in constants.RESERVED_SELECTOR_KEYS
    )


def check_byo_nodes(
    ws: WorkspaceBase, nodes: Sequence[Mapping[str, Any]], hub_presets: HubPresets | None = None
) -> list[FieldError]:
    """Bring-your-own nodes must exist and carry GPU Feature Discovery labels."""
    selector = byo_selector(ws)
    if selector is None:
        return []
    field = "resource.labelSelector"
    matching = [
        n
        for n in nodes
        if selector_matches(selector, (n.get("metadata") or {}).get("labels") or {})
    ]
    names = sorted(str((n.get("metadata") or {}).get("name")) for n in matching)
    errors: list[FieldError] = []
    for i, wanted in enumerate(ws.resource.preferred_nodes or ()):
        if wanted not in names:
            errors.append(
                FieldError(
                    f"resource.preferredNodes[{i}]",
                    f"node {wanted!r} does not exist or does not match resource.labelSelector; "
                    "list only selected nodes",
                )
            )
    if not matching:
        return [
            *errors,
            FieldError(
                field,
                "no node matches the selector; label your GPU nodes with it, or set "
                "resource.instanceType so Kaito provisions nodes",
            ),
        ]
    preset_name = ws.inference.preset.name if ws.inference and ws.inference.preset else None
    if ws.tuning is not None:
        preset_name = ws.tuning.preset.name
    preset = (
        presets.get_preset(preset_name) or (hub_presets or {}).get(preset_name.strip().lower())
        if preset_name
        else None
    )
    if preset is not None and "vllm" not in preset.runtimes:
        return errors  # a CPU-only model needs no GPU labels
    missing = [
        str(n["metadata"].get("name"))
        for n in matching
        if not all(k in (n["metadata"].get("labels") or {}) for k in constants.GPU_LABELS)
    ]
    if missing:
        errors.append(
            FieldError(
                field,
                f"selected node(s) {_names(sorted(missing))} lack the GPU labels "
                f"{', '.join(constants.GPU_LABELS)}; install NVIDIA GPU Feature Discovery or "
                "add the labels, or set resource.instanceType so Kaito provisions nodes",
            )
        )
        return errors
    if preset is not None and ws.inference is not None and not _bypass(ws):
        labels = matching[0]["metadata"].get("labels") or {}
        sku = presets.sku_from_node_labels(labels)
        if sku is not None:
            try:
                presets.estimate_byo(
                    preset,
                    sku.gpu_count,
                    sku.gpu_memory_gib,
                    compute_capability=sku.compute_capability,
                    available_nodes=len(matching),
                )
            except presets.SpecError as exc:
                errors.append(
                    FieldError(
                        exc.field,
                        exc.reason + " (or annotate kaito.sh/bypass-resource-checks)",
                    )
                )
    return errors


def _spec(obj: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return obj.get("resource"), obj.get("inference"), obj.get("tuning")


def spec_changed(obj: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Did resource/inference/tuning change?  Metadata-only updates are never blocked."""
    return _spec(obj) != _spec(old)


def validate_create(
    obj: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]] | None,
    policy: Policy = Policy(),
    hub_presets: HubPresets | None = None,
) -> list[FieldError]:
    """All webhook rules for a new Workspace; `nodes` are those matching its BYO selector."""
    ws, errors = parse(obj)
    if ws is None:
        return errors
    errors = _check_name(ws) + check_spec(ws, policy, hub_presets)
    if nodes is not None:
        errors += check_byo_nodes(ws, nodes, hub_presets)
    return errors


def validate_update(
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    policy: Policy = Policy(),
    hub_presets: HubPresets | None = None,
) -> list[FieldError]:
    """Rules for a changed Workspace; finalizer/label-only updates and deletions pass."""
    if not isinstance(obj, Mapping):
        return [FieldError("(root)", "the object must be a JSON object")]
    meta = obj.get("metadata")
    if isinstance(meta, Mapping) and meta.get("deletionTimestamp"):
        return []
    if isinstance(old, Mapping) and not spec_changed(obj, old):
        return []
    ws, errors = parse(obj)
    if ws is None:
        return errors
    return check_spec(ws, policy, hub_presets)


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
