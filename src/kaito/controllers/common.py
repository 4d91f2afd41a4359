"""What the workspace and machine controllers share: resource kinds, settings, the facts a
reconcile gathers, where a model's weights come from, and two API idioms (a 409 is a retry;
a finalizer is removed only if it is still where we saw it)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kaito.api import PresetOptions, WorkspaceBase
from kaito.api import constants as C
from kaito.controllers import objects as o
from kaito.presets.partition import mig_resource
from kaito.runtime.client import Client
from kaito.runtime.errors import Conflict, NotFound
from kaito.runtime.gvk import GVK
from kaito.runtime.request import Request, Result

WORKSPACE = GVK(C.GROUP, C.V1BETA1, C.WORKSPACE_KIND)
CONTROLLER_REVISION = GVK("apps", "v1", "ControllerRevision")
NODECLAIM = GVK(C.KARPENTER_GROUP, C.NODECLAIM_VERSION, "NodeClaim")
MACHINE = GVK(C.KARPENTER_GROUP, C.MACHINE_VERSION, "Machine")
FIELD_MANAGER = "kaito-workspace"


@dataclass(frozen=True)
class WorkspaceSettings:
    """Operator-wide choices the workspace controller follows."""

    node_provisioner: Literal["kwok", "azure", "byo", "external"] = "kwok"
    claim_gvk: GVK = NODECLAIM
    serving_image: str = "kaito-py/serving:0.1.0"
    node_image_family: str = "ubuntu"
    claims_finalized_by_us: bool = True  # our machine controller handles the claims
    preset_registry: str = "kaito-py"  # where preset model images live (PRESET_REGISTRY_NAME)
    plain_http_registries: frozenset[str] = frozenset()  # reached over HTTP, not HTTPS
    spot_toleration: bool = False  # on Azure, pods tolerate spot node pools' taint
    hub_endpoint: str | None = None  # HF_ENDPOINT: the model hub to size and download from


@dataclass
class Facts:
    """What the reconcile found out, folded into status at the end."""

    conditions: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    worker_nodes: list[str] = field(default_factory=list)
    target: int | None = None
    state: str | None = None  # tuning sets Running/Succeeded/Failed itself
    error: str | None = None  # the reconcile failed: upstream appends it to every message
    performance: dict[str, Any] | None = None  # a benchmark result read this reconcile
    recheck_after: float | None = None  # seconds after which what was found is stale

    def set(self, type_: str, ok: bool | None, reason: str, message: str) -> None:
        status = "Unknown" if ok is None else ("True" if ok else "False")
        self.conditions[type_] = (status, reason, message)


def content_hash(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


async def all_of(*writes: Awaitable[Any]) -> None:
    """Run independent writes of one reconcile at once; raise the first failure once all
    have ended (none is left running behind the reconcile, none is cancelled half-sent)."""
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def requeue_on_conflict(
    log: logging.Logger,
    request: Request,
    reconcile: Callable[[Request], Awaitable[Result | None]],
) -> Result | None:
    """Run one reconcile; a 409 Conflict means our cached copy was older than the server's
    (often our own write just moved it): not an error, the event carrying the new version is
    on its way, so the key is retried with backoff instead of being logged as a failure."""
    try:
        return await reconcile(request)
    except Conflict:
        log.debug("conflict on %s; retrying once the cache has caught up", request)
        return Result(requeue=True)


async def remove_finalizer(
    client: Client,
    gvk: GVK,
    namespace: str | None,
    name: str,
    *,
    finalizers: Sequence[str],
    finalizer: str,
) -> bool:
    """Remove ``finalizer`` if it still sits where ``finalizers`` (our cached copy) has it.

    A JSON patch with a ``test`` first: someone else's finalizer added meanwhile is never
    dropped (Conflict-free, unlike a merge patch of the whole list). Returns False when the
    object is already gone; every other API error propagates, so the caller retries.
    """
    if finalizer not in finalizers:
        return True
    index = list(finalizers).index(finalizer)
    path = f"/metadata/finalizers/{index}"
    try:
        await client.patch(
            gvk,
            namespace,
            name,
            [{"op": "test", "path": path, "value": finalizer}, {"op": "remove", "path": path}],
            patch_type="json",
        )
    except NotFound:
        return False
    return True


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


def gpu_resource(ws: WorkspaceBase) -> str:
    """What a Workspace's pods ask for: whole GPUs, or MIG slices of its partition's profile."""
    part = ws.resource.partition
    if part is not None and part.mode == "mig" and part.profile:
        return mig_resource(part.profile)
    return C.RESOURCE_NVIDIA_GPU
