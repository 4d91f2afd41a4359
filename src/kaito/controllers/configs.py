"""The user's ConfigMaps a Workspace names: ``inference.config`` and ``tuning.config``.

They are watched, not read once: an edit changes the generated vLLM arguments (and may
change the node count) at once, as an operator restart would. ConfigMaps are read from the
cache (one informer for all ConfigMaps, shared with the ones Workspaces own); an index from
ConfigMap name to the Workspaces that name it maps each change back to them. One reader
serves both fields, so a missing ConfigMap or key is explained the same way, naming the
Workspace field to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kaito.controllers.common import WORKSPACE
from kaito.presets import SpecError
from kaito.runtime.cache import Cache
from kaito.runtime.gvk import CONFIGMAP
from kaito.runtime.objects import KObject, meta_of, to_dict
from kaito.runtime.request import Request

CONFIG_INDEX = "configMaps"


def config_map_names(workspace: Mapping[str, Any]) -> list[str]:
    """Index a Workspace by the ConfigMaps it reads (same namespace)."""
    names = []
    for section in ("inference", "tuning"):
        name = (workspace.get(section) or {}).get("config")
        if name:
            names.append(str(name))
    return names


def workspaces_using(cache: Cache) -> Callable[[KObject], list[Request]]:
    """A ConfigMap change wakes the Workspaces of its namespace that name it."""

    def requests(cm: KObject) -> list[Request]:
        entries = cache.entries(WORKSPACE, namespace=cm.namespace, index=(CONFIG_INDEX, cm.name))
        return [Request(e.namespace, e.name) for e in entries]

    return requests


def config_text(
    cache: Cache, namespace: str, name: str, *, key: str, field: str
) -> tuple[str, str]:
    """The text under ``key`` of ConfigMap ``name`` and the ConfigMap's resourceVersion;
    SpecError on ``field`` when either is missing."""
    found = cache.get(CONFIGMAP, namespace, name)
    if found is None:
        raise SpecError(
            field,
            f"ConfigMap {name!r} not found in namespace {namespace!r}; create it with key "
            f"{key} first, or remove {field}",
        )
    data = to_dict(found).get("data") or {}
    text = data.get(key)
    if text is None:
        raise SpecError(
            field,
            f"ConfigMap {name!r} has no key {key} (it has: "
            f"{', '.join(sorted(data)) or 'no keys'}); put the settings under that key",
        )
    return str(text), str(meta_of(found).get("resourceVersion") or "")
