"""Names that tie a NodeRequest to its AKS agent pool and to the node that joins from it.

AKS requires Linux agent-pool names to match ``^[a-z][a-z0-9]{0,11}$``.  Kaito's own
NodeClaim names (``ws`` + 9 hex) already fit and are kept verbatim, so a pool is easy to
find in the portal; any other name is folded into exactly 12 characters ending in a hash,
so the two forms never collide with each other.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

POOL_NAME_MAX = 12
_VALID_POOL = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_VERBATIM = re.compile(r"^[a-z][a-z0-9]{0,10}$")  # ≤ 11: never the 12-char hashed form
_HASH_CHARS = 8
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"

#: ``azure:///subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.Compute/
#: virtualMachineScaleSets/aks-<pool>-<n>-vmss/virtualMachines/<i>``
_PROVIDER_ID = re.compile(
    r"^azure:///subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<resource_group>[^/]+)"
    r"/providers/Microsoft\.Compute/virtualMachineScaleSets/(?P<vmss>[^/]+)"
    r"/virtualMachines/(?P<instance>[^/]+)$",
    re.IGNORECASE,
)
_AKS_VMSS = re.compile(r"^aks-(?P<pool>[a-z][a-z0-9]{0,11})-(?P<suffix>[0-9]+)-vmss$")


def is_valid_pool_name(name: str) -> bool:
    return bool(_VALID_POOL.match(name))


def _base36(digest: bytes, length: int) -> str:
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, rest = divmod(number, 36)
        chars.append(_ALPHABET[rest])
    return "".join(chars)


def pool_name(request_name: str) -> str:
    """The agent-pool name for a request: deterministic, valid for AKS, collision-resistant."""
    if _VERBATIM.match(request_name):
        return request_name
    alnum = re.sub(r"[^a-z0-9]", "", request_name.lower()).lstrip("0123456789")
    prefix = (alnum or "k")[: POOL_NAME_MAX - _HASH_CHARS]
    digest = hashlib.sha256(request_name.encode()).digest()
    return prefix + _base36(digest, POOL_NAME_MAX - len(prefix))


@dataclass(frozen=True)
class AzureProviderID:
    """The parts of an AKS node's ``spec.providerID``."""

    subscription: str
    resource_group: str
    vmss: str
    instance: str

    @property
    def pool(self) -> str | None:
        """The agent pool the node belongs to, when the scale set follows AKS naming."""
        match = _AKS_VMSS.match(self.vmss.lower())
        return match.group("pool") if match else None


def parse_provider_id(provider_id: str) -> AzureProviderID | None:
    """Parse a VMSS node's provider ID; None for anything else (kwok://, VMs, garbage)."""
    match = _PROVIDER_ID.match(provider_id.strip())
    if match is None:
        return None
    return AzureProviderID(**match.groupdict())


def provider_id_from_resource_id(resource_id: str) -> str:
    """Kubernetes writes ``azure://`` in front of the VM's ARM resource ID."""
    return "azure://" + (resource_id if resource_id.startswith("/") else "/" + resource_id)
