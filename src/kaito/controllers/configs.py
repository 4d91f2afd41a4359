"""The user's ConfigMaps a Workspace names: ``inference.config`` and ``tuning.config``.

One reader for both, so a missing ConfigMap or key is explained the same way, naming the
Workspace field to fix.
"""

from __future__ import annotations

from typing import Any

import yaml

from kaito.controllers import objects as o
from kaito.presets import SpecError
from kaito.runtime.client import Client
from kaito.runtime.errors import NotFound
from kaito.runtime.gvk import CONFIGMAP
from kaito.runtime.objects import to_dict


async def config_text(client: Client, namespace: str, name: str, *, key: str, field: str) -> str:
    """The text under ``key`` of ConfigMap ``name``; SpecError on ``field`` when absent."""
    try:
        cm = to_dict(await client.get(CONFIGMAP, namespace, name))
    except NotFound:
        raise SpecError(field, f"ConfigMap {name!r} not found in {namespace}") from None
    text = (cm.get("data") or {}).get(key)
    if text is None:
        raise SpecError(field, f"ConfigMap {name!r} has no key {key}")
    return str(text)


def parse_inference_config(text: str) -> dict[str, Any]:
    """inference_config.yaml as a mapping; SpecError on ``inference.config`` otherwise."""
    try:
        parsed = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SpecError("inference.config", f"{o.CONFIG_KEY} is not valid YAML: {exc}") from None
    if not isinstance(parsed, dict):
        raise SpecError("inference.config", f"{o.CONFIG_KEY} must be a mapping")
    return parsed
