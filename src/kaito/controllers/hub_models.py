"""Presets for Workspaces that name a model by hub id: sized from the hub, as curated ones plan.

The workspace controller asks :func:`presets_for` before planning; the HF_TOKEN comes from the
Workspace's presetOptions.modelAccessSecret. Like the serving pod's optional secretKeyRef, a
Secret the operator cannot read (absent, or not allowed by RBAC) only matters when the hub then
refuses the model: an open model is sized without it, a gated one reports why there was no token.
"""

from __future__ import annotations

import base64
from typing import Any

from kaito.api import WorkspaceBase
from kaito.hub import ACCESS_FIELD, HubPresets
from kaito.presets import Preset, SpecError
from kaito.presets.errors import SourceUnavailable
from kaito.presets.plan import hub_model
from kaito.runtime.client import Client
from kaito.runtime.errors import Forbidden, NotFound
from kaito.runtime.gvk import SECRET
from kaito.runtime.objects import to_dict

HUB_UNAVAILABLE = "ModelHubUnavailable"  # condition reason: the model hub could not be read
HUB_RETRY_S = 10.0  # an outage: ask the hub again soon
SECRET_RETRY_S = 30.0  # a refusal: the Secret (not watched) or the user's access may change


def recheck_after(exc: SpecError) -> float:
    """When to ask the hub again after `presets_for` raised `exc`."""
    return HUB_RETRY_S if isinstance(exc, SourceUnavailable) else SECRET_RETRY_S


async def presets_for(
    client: Client, hub: HubPresets, ws: WorkspaceBase, doc: dict[str, Any]
) -> dict[str, Preset]:
    """{hub id: preset} for a Workspace naming a hub id the catalog lacks; {} otherwise.

    SpecError names the field to fix; SourceUnavailable means the hub could not be read.
    """
    found = hub_model(doc)
    if found is None:
        return {}
    section = ws.inference if ws.inference is not None else ws.tuning
    options = section.preset.preset_options if section and section.preset else None
    secret = options.model_access_secret if options else None
    token, why_not = await hub_token(client, ws.namespace, secret) if secret else (None, None)
    try:
        return {found[0]: await hub.preset(found[0], token=token)}
    except SpecError as exc:
        if why_not and exc.field == ACCESS_FIELD and not isinstance(exc, SourceUnavailable):
            raise SpecError(ACCESS_FIELD, f"{exc.reason}; {why_not}") from None
        raise


async def hub_token(client: Client, namespace: str, name: str) -> tuple[str | None, str | None]:
    """(HF_TOKEN, why there is none) from a Secret; Secrets are read, never cached."""
    try:
        secret = to_dict(await client.get(SECRET, namespace, name))
    except NotFound:
        return None, f"Secret {name!r} does not exist in {namespace} (key HF_TOKEN)"
    except Forbidden:
        return None, (
            f"the operator may not read Secret {name!r}: install it with the chart value "
            "modelHub.readAccessSecrets=true"
        )
    raw = (secret.get("data") or {}).get("HF_TOKEN")
    if raw is None:
        return None, f"Secret {name!r} has no key HF_TOKEN"
    try:
        return base64.b64decode(raw).decode().strip() or None, None
    except (ValueError, UnicodeDecodeError):
        return None, f"Secret {name!r}: HF_TOKEN is not base64-encoded text"
