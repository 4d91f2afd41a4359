"""What a validation may know besides the Workspace: the operator's settings and the cluster.

The server looks these up (asynchronously) before it calls the pure rules, so every rule is a
function of the Workspace, a :class:`Policy` and a :class:`ClusterView`.  A field left at None
was not looked up (no API access, e.g. in unit tests); rules that need it are skipped then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kaito.presets.catalog import Preset
from kaito.presets.skus import LearnedSku

Node = Mapping[str, Any]


@dataclass(frozen=True)
class FieldError:
    """One rejected field: where, and what to write instead."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Policy:
    """Operator-wide settings the rules follow (they match the operator's own flags)."""

    allow_private_urls: bool = False
    """Accept data URLs on loopback/private addresses (a local registry in tests)."""
    node_provisioner: str = "kwok"
    """``byo`` is upstream's disableNodeAutoProvisioning: no instance types at all."""
    enable_mig: bool = False
    """Feature gate enableMIG: resource.partition mode mig."""
    enable_accelerator: bool = False
    """Feature gate enableAccelerator: resource.partition mode accelerator."""
    azure_location: str | None = None
    """Set when the Azure provisioner is on: unknown sizes are looked up in this region."""


@dataclass(frozen=True)
class ClusterView:
    """Cluster (and cloud) facts looked up for one admission request."""

    selected_nodes: Sequence[Node] | None = None
    """Nodes matching a bring-your-own Workspace's selector."""
    typed_nodes: Sequence[Node] | None = None
    """Nodes labelled with an instance type the table does not know."""
    cloud_sku: LearnedSku | None = None
    """That instance type as Azure's resource SKU list describes it."""
    cloud_error: str | None = None
    """Why Azure could not be asked (shown in the rejection, never a silent pass)."""
    config_maps: Mapping[str, Mapping[str, str] | None] | None = None
    """ConfigMap name → data (None: it does not exist); the map itself None: not looked up."""
    hub_presets: Mapping[str, Preset] | None = None
    """A model named by a hub id the catalog lacks, sized from the hub (lowercased id →
    preset); the id missing: the hub was not read, and the operator sizes it."""
