"""Azure's resource SKU list (Microsoft.Compute/skus) through the real async SDK.

It sizes VM sizes newer than Kaito's table: the admission webhook and the workspace controller
ask it for one size at a time, and it keeps the region's list for ``ttl_s`` (ARM throttles the
call, and the list changes when Azure ships a new size, not per Workspace).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.mgmt.compute.aio import ComputeManagementClient

from kaito.presets.skus import LearnedSku, learn_from_azure
from kaito.provisioner.azure.settings import AzureSettings

VIRTUAL_MACHINES = "virtualMachines"


class ResourceSkus:
    """Looks VM sizes up in the configured region's resource SKU list."""

    def __init__(
        self,
        settings: AzureSettings,
        credential: AsyncTokenCredential | None = None,
        *,
        ttl_s: float = 3600.0,
        **client_options: Any,
    ) -> None:
        verify = settings.connection_verify
        transport: dict[str, Any] = {} if verify is True else {"connection_verify": verify}
        self._owns_credential = credential is None
        if credential is None:
            from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415

            credential = DefaultAzureCredential(**transport)
        self._credential = credential
        self._client = ComputeManagementClient(
            credential,
            settings.subscription_id,
            base_url=settings.arm_endpoint or "https://management.azure.com",
            retry_total=settings.max_retries,
            **transport,
            **client_options,
        )
        self.location = settings.location
        self.ttl_s = ttl_s
        self._sizes: dict[str, dict[str, str]] = {}
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def describe(self, name: str) -> LearnedSku | None:
        """`name` sized from its capabilities; None when the region has no such size."""
        sizes = await self._list()
        capabilities = sizes.get(name.strip().lower())
        if capabilities is None:
            return None
        return learn_from_azure(name.strip(), capabilities)

    async def _list(self) -> dict[str, dict[str, str]]:
        async with self._lock:
            now = time.monotonic()
            if self._read_at is not None and now - self._read_at < self.ttl_s:
                return self._sizes
            sizes: dict[str, dict[str, str]] = {}
            pages = self._client.resource_skus.list(filter=f"location eq '{self.location}'")
            async for sku in pages:
                if sku.resource_type != VIRTUAL_MACHINES or not sku.name:
                    continue
                sizes[sku.name.lower()] = {
                    c.name: c.value for c in sku.capabilities or () if c.name and c.value
                }
            self._sizes, self._read_at = sizes, now
            return sizes

    async def close(self) -> None:
        await self._client.close()
        if self._owns_credential:
            await self._credential.close()
