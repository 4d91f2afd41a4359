"""Object representations: pydantic models for registered kinds, ``KObject`` dicts otherwise.

A ``Scheme`` maps a GVK to a pydantic model class. Anything without one is handed out as a
``KObject``: a plain ``dict`` (so it costs nothing extra to decode) with typed accessors for the
metadata fields every controller reads.
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias, cast

from pydantic import BaseModel

from kaito.runtime.gvk import GVK


class KObject(dict[str, Any]):
    """A Kubernetes object as decoded JSON, with typed accessors for common metadata."""

    __slots__ = ()

    @property
    def gvk(self) -> GVK:
        return GVK.from_api_version(str(self.get("apiVersion", "")), str(self.get("kind", "")))

    @property
    def metadata(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.setdefault("metadata", {}))

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", "") or "")

    @property
    def uid(self) -> str:
        return str(self.metadata.get("uid", ""))

    @property
    def resource_version(self) -> str:
        return str(self.metadata.get("resourceVersion", ""))

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation", 0) or 0)

    @property
    def labels(self) -> dict[str, str]:
        return cast(dict[str, str], self.metadata.get("labels") or {})

    @property
    def annotations(self) -> dict[str, str]:
        return cast(dict[str, str], self.metadata.get("annotations") or {})

    @property
    def owner_references(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.metadata.get("ownerReferences") or [])

    @property
    def finalizers(self) -> list[str]:
        return cast(list[str], self.metadata.get("finalizers") or [])

    @property
    def deletion_timestamp(self) -> str | None:
        value = self.metadata.get("deletionTimestamp")
        return str(value) if value else None

    @property
    def spec(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.get("spec") or {})

    @property
    def status(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.get("status") or {})


Obj: TypeAlias = KObject | BaseModel
"""What the client and cache hand out."""


def to_dict(obj: Obj | dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready dict of any object the runtime accepts."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    return obj


def meta_of(obj: Obj | dict[str, Any]) -> dict[str, Any]:
    """The metadata mapping of any object (pydantic objects are dumped first)."""
    return cast(dict[str, Any], to_dict(obj).get("metadata") or {})


def gvk_of(obj: Obj | dict[str, Any]) -> GVK:
    data = to_dict(obj)
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if not api_version or not kind:
        raise ValueError("object has no apiVersion/kind; set both so its type is known")
    return GVK.from_api_version(str(api_version), str(kind))


class Scheme:
    """Which pydantic model decodes which GVK; unregistered kinds decode to ``KObject``."""

    def __init__(self) -> None:
        self._models: dict[GVK, type[BaseModel]] = {}

    def register(self, gvk: GVK, model: type[BaseModel]) -> None:
        self._models[gvk] = model

    def model_for(self, gvk: GVK) -> type[BaseModel] | None:
        return self._models.get(gvk)

    def decode(self, gvk: GVK, data: dict[str, Any]) -> Obj:
        """Turn freshly decoded JSON (owned by the caller) into the typed object."""
        model = self._models.get(gvk)
        if model is None:
            return KObject(data)
        return model.model_validate(data)

    def decode_json(self, gvk: GVK, raw: str | bytes) -> Obj:
        """Decode a stored JSON document; every call yields an independent object."""
        model = self._models.get(gvk)
        if model is None:
            return KObject(json.loads(raw))
        return model.model_validate_json(raw)
