"""The kaito.sh/v1beta1 Workspace, the storage version."""

from __future__ import annotations

from typing import Literal

from kaito.api.workspace import WorkspaceBase

API_VERSION = "kaito.sh/v1beta1"


class Workspace(WorkspaceBase):
    """A model served (inference) or fine-tuned (tuning) on GPU nodes Kaito provides."""

    api_version: Literal["kaito.sh/v1beta1"] = "kaito.sh/v1beta1"
    """kaito.sh/v1beta1."""
