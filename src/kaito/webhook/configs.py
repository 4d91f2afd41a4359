"""The ConfigMaps a Workspace names (inference.config, tuning.config) and its image references.

Parsing is the controller's own (:mod:`kaito.presets.vllm_config`, :mod:`kaito.presets.tuning`),
so what passes here is what the controller and the serving and training containers accept.
"""

from __future__ import annotations

import re
from typing import Any

from kaito import presets
from kaito.api import WorkspaceBase
from kaito.presets import tuning as tuning_config
from kaito.presets.vllm_config import check_vllm_flags, inference_config_from_data
from kaito.webhook.view import ClusterView, FieldError

# The distribution/reference grammar (what `docker pull` accepts), without digest algorithms
# other than sha256: [host[:port]/]path[:tag][@sha256:hex], path components lower-case.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
# a registry host has a dot or a port, or is localhost; otherwise it is the first path component
_REGISTRY = rf"(?:(?:{_LABEL}(?:\.{_LABEL})+|localhost)(?::[0-9]+)?|{_LABEL}:[0-9]+)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?:{_REGISTRY}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)


def image_problem(reference: str) -> str | None:
    """Why `reference` is not an image reference (None: it is one)."""
    if len(reference) > 255 or not _IMAGE.match(reference):
        return (
            f"{reference[:200]!r} is not an image reference; write [registry/]repository[:tag], "
            "lower-case, e.g. myregistry.azurecr.io/adapters/phi-3:0.1"
        )
    return None


def check_images(ws: WorkspaceBase) -> list[FieldError]:
    refs: list[tuple[str, str | None]] = []
    if ws.inference is not None:
        refs += [
            (f"inference.adapters[{i}].source.image", a.source.image if a.source else None)
            for i, a in enumerate(ws.inference.adapters or ())
        ]
    if ws.tuning is not None:
        refs += [
            ("tuning.input.image", ws.tuning.input.image),
            ("tuning.output.image", ws.tuning.output.image),
        ]
    errors = []
    for field, ref in refs:
        problem = image_problem(ref) if ref else None
        if problem:
            errors.append(FieldError(field, problem))
    return errors


def inference_config(
    ws: WorkspaceBase, view: ClusterView | None
) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """The parsed inference_config.yaml, checked flag by flag (None: none, or not looked up)."""
    name = ws.inference.config if ws.inference is not None else None
    if not name or view is None or view.config_maps is None:
        return None, []
    if ws.inference is not None and ws.inference.preset is None:
        return None, []  # a pod template reads its config itself
    try:
        config = inference_config_from_data(name, ws.namespace, view.config_maps.get(name))
        presets.user_max_model_len(config)
        check_vllm_flags(config)
    except presets.SpecError as exc:
        return None, [FieldError(exc.field, exc.reason)]
    return config, []


def tuning_configmap(ws: WorkspaceBase, view: ClusterView | None) -> list[FieldError]:
    """A named training ConfigMap exists, has training_config.yaml, and every key checks out."""
    spec = ws.tuning
    if spec is None:
        return []
    try:
        method = tuning_config.check_method(spec.method)
        if spec.config and view is not None and view.config_maps is not None:
            tuning_config.training_config_from_data(
                spec.config, ws.namespace, view.config_maps.get(spec.config), method
            )
    except presets.SpecError as exc:
        field = exc.field if exc.field.startswith("tuning.") else f"tuning.config ({exc.field})"
        return [FieldError(field, exc.reason)]
    return []


def config_map_names(ws: WorkspaceBase) -> list[str]:
    """The ConfigMaps the rules need to read."""
    wanted = []
    if ws.inference is not None and ws.inference.config and ws.inference.preset is not None:
        wanted.append(ws.inference.config)
    if ws.tuning is not None and ws.tuning.config:
        wanted.append(ws.tuning.config)
    return wanted
