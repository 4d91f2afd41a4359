"""Server-side apply of the objects a Workspace owns, only when they differ from the wanted ones.

A content hash of the desired object rides on it as an annotation, so "unchanged" is a
dictionary lookup in the cache and an idle operator sends nothing.
"""

from __future__ import annotations

from typing import Any

from kaito.controllers.common import FIELD_MANAGER, content_hash
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.gvk import GVK
from kaito.runtime.objects import to_dict

APPLIED_HASH = "kaito.sh/applied-hash"


class Applier:
    """Applies owned objects (StatefulSet, Services, default ConfigMaps) on change."""

    def __init__(self, client: Client, cache: Cache) -> None:
        self.client = client
        self.cache = cache

    async def apply_if_changed(self, gvk: GVK, desired: dict[str, Any]) -> bool:
        """Apply ``desired`` unless the cached object already carries its hash; True if sent."""
        digest = content_hash(desired)
        meta = desired["metadata"]
        current = self.cache.get(gvk, meta.get("namespace"), meta["name"])
        if (
            current is not None
            and to_dict(current)["metadata"].get("annotations", {}).get(APPLIED_HASH) == digest
        ):
            return False
        meta.setdefault("annotations", {})[APPLIED_HASH] = digest
        await self.client.apply(desired, field_manager=FIELD_MANAGER, force=True)
        return True
