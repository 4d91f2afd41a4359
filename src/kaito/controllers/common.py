"""What the workspace controller's parts share: resource kinds, settings, the facts a
reconcile gathers, and where a model's weights come from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kaito.api import PresetOptions
from kaito.api import constants as C
from kaito.controllers import objects as o
from kaito.runtime.gvk import GVK

WORKSPACE = GVK(C.GROUP, C.V1BETA1, C.WORKSPACE_KIND)
CONTROLLER_REVISION = GVK("apps", "v1", "ControllerRevision")
CONFIGMAP = GVK("", "v1", "ConfigMap")
NODECLAIM = GVK(C.KARPENTER_GROUP, C.NODECLAIM_VERSION, "NodeClaim")
MACHINE = GVK(C.KARPENTER_GROUP, C.MACHINE_VERSION, "Machine")
JOB = GVK("batch", "v1", "Job")
FIELD_MANAGER = "kaito-workspace"
APPLIED_HASH = "kaito.sh/applied-hash"
# a user's ConfigMap is read, not watched: while it is missing or wrong, look again this often
CONFIG_RETRY_S = 30.0
TERMINATION_FINALIZER = "karpenter.sh/termination"  # Karpenter's, honoured by our machine ctrl


@dataclass(frozen=True)
class WorkspaceSettings:
    """Operator-wide choices the workspace controller follows."""

    node_provisioner: Literal["kwok", "azure", "byo"] = "kwok"
    claim_gvk: GVK = NODECLAIM
    serving_image: str = "kaito-py/serving:0.1.0"
    node_image_family: str = "ubuntu"
    claims_finalized_by_us: bool = True  # our machine controller handles the claims
    preset_registry: str = "kaito-py"  # where preset model images live (PRESET_REGISTRY_NAME)
    hub_endpoint: str | None = None  # HF_ENDPOINT: the model hub to size and download from


@dataclass
class Facts:
    """What the reconcile found out, folded into status at the end."""

    conditions: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    worker_nodes: list[str] = field(default_factory=list)
    target: int | None = None
    state: str | None = None  # tuning sets Running/Succeeded/Failed itself

    def set(self, type_: str, ok: bool | None, reason: str, message: str) -> None:
        status = "Unknown" if ok is None else ("True" if ok else "False")
        self.conditions[type_] = (status, reason, message)


def content_hash(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def weights_source(
    repository: str | None,
    tag: str | None,
    options: PresetOptions | None,
    registry: str,
) -> tuple[str | None, tuple[str, ...]]:
    """The image the model files come from (None: vLLM downloads them from the hub).

    ``presetOptions.image`` (a private preset) wins over the catalog's image, which lives in
    the operator's preset registry.
    """
    secrets = tuple(options.image_pull_secrets or ()) if options else ()
    if options is not None and options.image:
        return options.image, secrets
    if repository and tag:
        return f"{registry.rstrip('/')}/{repository}:{tag}", secrets
    return None, ()


def local_weights_args(args: list[str]) -> list[str]:
    """vLLM flags rewritten to load /workspace/weights instead of downloading from the hub."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "--download-dir":
            skip = True
            continue
        if i > 0 and args[i - 1] == "--model":
            out.append(o.WEIGHTS_DIR)
            continue
        out.append(arg)
    return out
