"""The machine controller: a NodeClaim (or legacy Machine) becomes a node through a backend.

It plays Karpenter's part for Kaito's claims: ask the provisioner backend for a node, watch
it join, and report Launched → Registered → Initialized → Ready on the claim, with the
backend's reason and message when something fails (quota, throttling, unknown SKU).
On delete it removes the node first and only then releases the claim's finalizer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kaito.api import constants as C
from kaito.controllers import diagnosis
from kaito.controllers.claim_liveness import (
    REGISTRATION_TIMEOUT_REASON,
    REGISTRATION_TIMEOUT_S,
    BackendPolls,
    registration_left,
)
from kaito.controllers.common import remove_finalizer, requeue_on_conflict
from kaito.controllers.expectations import FinalWrites
from kaito.provisioner.base import (
    NODECLAIM_LABEL,
    NodeProvisioner,
    NodeRequest,
    NodeStatus,
    Phase,
    Taint,
)
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client, Preconditions
from kaito.runtime.errors import Conflict, NotFound
from kaito.runtime.events import EventRecorder
from kaito.runtime.gvk import GVK, NODE
from kaito.runtime.objects import to_dict
from kaito.runtime.request import Request, Result

log = logging.getLogger("kaito.controllers.machine")

LIFECYCLE = ("Launched", "Registered", "Initialized", "Ready")
RETRY_FAILED_LAUNCH_S = 15.0
STATUS_SETTLE_S = 5.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_request(claim: Mapping[str, Any]) -> NodeRequest:
    """The backend-neutral request a claim stands for."""
    meta = claim.get("metadata") or {}
    spec = claim.get("spec") or {}
    instance_type = ""
    for req in spec.get("requirements") or ():
        if req.get("key") == C.LABEL_INSTANCE_TYPE and req.get("values"):
            instance_type = str(req["values"][0])
    labels = dict(meta.get("labels") or {})
    labels[NODECLAIM_LABEL] = meta.get("name", "")
    taints = tuple(
        Taint(str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", "NoSchedule")))
        for t in spec.get("taints") or ()
    )
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    storage_gib = None
    if isinstance(storage, str) and storage.endswith("Gi") and storage[:-2].isdigit():
        storage_gib = int(storage[:-2])
    return NodeRequest(
        name=str(meta.get("name", "")),
        instance_type=instance_type,
        labels=labels,
        taints=taints,
        storage_gib=storage_gib,
        node_image_family=(meta.get("annotations") or {}).get(C.ANNOTATION_NODE_IMAGE_FAMILY),
        owner={
            "workspace": labels.get(C.LABEL_WORKSPACE_NAME, ""),
            "namespace": labels.get(C.LABEL_WORKSPACE_NAMESPACE, ""),
        },
    )


def claim_conditions(
    existing: Iterable[Mapping[str, Any]],
    backend: NodeStatus | None,
    node: Mapping[str, Any] | None,
    gpus: int,
) -> list[dict[str, Any]]:
    """Karpenter's lifecycle conditions from what the backend and the cluster say."""
    old = {c.get("type"): dict(c) for c in existing}
    wanted: dict[str, tuple[str, str, str]] = {}
    if backend is None or backend.phase is Phase.PENDING:
        # the backend's own words when it has them (a pool being created, replaced, deleted)
        wanted["Launched"] = (
            "Unknown",
            (backend and backend.reason) or "Launching",
            (backend and backend.message) or "asked the node provisioner for a node",
        )
    elif backend.phase is Phase.FAILED:
        wanted["Launched"] = ("False", backend.reason or "LaunchFailed", backend.message)
    elif backend.phase is Phase.THROTTLED:
        wanted["Launched"] = ("Unknown", backend.reason or "Throttled", backend.message)
    else:
        wanted["Launched"] = ("True", "Launched", "node launched")
    launched = wanted["Launched"][0] == "True"
    if not launched:
        wanted["Registered"] = ("Unknown", "AwaitingLaunch", "waiting for the launch")
    elif node is None:
        wanted["Registered"] = ("Unknown", "AwaitingNode", "waiting for the node to join")
    else:
        wanted["Registered"] = ("True", "Registered", "node joined the cluster")
    problem = (
        diagnosis.node_problem(node, str((node.get("metadata") or {}).get("name")), gpus)
        if node is not None
        else None
    )
    if node is None:
        wanted["Initialized"] = ("Unknown", "AwaitingRegistration", "waiting for the node")
    elif problem is not None:
        wanted["Initialized"] = ("False", problem.reason, problem.message)
    else:
        wanted["Initialized"] = ("True", "Initialized", "node is Ready with its GPUs")
    if all(wanted[t][0] == "True" for t in ("Launched", "Registered", "Initialized")):
        wanted["Ready"] = ("True", "Ready", "")
    else:
        first = next(t for t in ("Launched", "Registered", "Initialized") if wanted[t][0] != "True")
        wanted["Ready"] = (
            "False" if wanted[first][0] == "False" else "Unknown",
            *wanted[first][1:],
        )
    result = []
    for type_ in LIFECYCLE:
        status, reason, message = wanted[type_]
        prev = old.get(type_)
        changed_at = (
            prev.get("lastTransitionTime") if prev and prev.get("status") == status else _now()
        )
        result.append(
            {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": changed_at,
            }
        )
    return result


class MachineReconciler:
    """Reconciles NodeClaims (or Machines) of the kaito node pool into nodes."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        *,
        recorder: EventRecorder,
        provisioner: NodeProvisioner,
        claim_gvk: GVK,
        gpus_of: Callable[[str], int],
        registration_timeout_s: float = REGISTRATION_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.provisioner = provisioner
        self.claim_gvk = claim_gvk
        self.gpus_of = gpus_of  # instance type -> GPUs per node (0 when unknown)
        self.registration_timeout_s = registration_timeout_s
        self.enqueue: Callable[[Request], None] | None = None  # set by whoever runs us
        self._failed_at: dict[str, float] = {}  # claim name -> monotonic time of a failed launch
        self._polls = BackendPolls()
        self._released = FinalWrites()  # claims whose termination finalizer we removed

    def wake(self, claim_name: str) -> None:
        """The backend says something changed for ``claim_name``: ask it now, not at backoff."""
        self._polls.forget(claim_name)
        if self.enqueue is not None:
            self.enqueue(Request("", claim_name))

    async def __call__(self, request: Request) -> Result | None:
        return await requeue_on_conflict(log, request, self._reconcile_one)

    async def _reconcile_one(self, request: Request) -> Result | None:
        cached = self.cache.get(self.claim_gvk, None, request.name)
        if cached is None:
            return None
        claim = to_dict(cached)
        meta = claim["metadata"]
        if (meta.get("labels") or {}).get(C.LABEL_KARPENTER_NODEPOOL) != C.KAITO_NODEPOOL:
            return None  # someone else's claim (a real Karpenter may run beside us)
        if meta.get("deletionTimestamp"):
            return await self._terminate(claim)
        finalizers = list(meta.get("finalizers") or [])
        if C.FINALIZER_KARPENTER_TERMINATION not in finalizers:
            await self.client.patch(
                self.claim_gvk,
                None,
                request.name,
                {
                    "metadata": {
                        "finalizers": [*finalizers, C.FINALIZER_KARPENTER_TERMINATION],
                        "resourceVersion": meta.get("resourceVersion"),
                    }
                },
            )
            return None  # the update event brings us back
        req = node_request(claim)
        # A failed launch is retried after a pause: otherwise our own status write would
        # wake the claim and ask the cloud again at once, a burst per quota error.
        failed_at = self._failed_at.get(req.name)
        if (
            failed_at is not None
            and (left := failed_at + RETRY_FAILED_LAUNCH_S - time.monotonic()) > 0
        ):
            return Result(requeue_after=left)
        try:
            backend, asked = await self._backend_status(req, claim)
            if backend is None or backend.phase is Phase.FAILED:
                log.debug("creating node for %s (backend state %s)", req.name, backend)
                backend = await self.provisioner.create(req)
                self._polls.remember(req.name, backend)
                asked = True
        except Exception as exc:
            asked = True
            reason = getattr(exc, "reason", "ProvisioningFailed")
            backend = NodeStatus(
                Phase.FAILED,
                reason=str(reason),
                message=str(getattr(exc, "message", exc)),
                retry_after_s=getattr(exc, "retry_after_s", None),
            )
        if backend.phase is Phase.FAILED:
            self._failed_at[req.name] = time.monotonic()
        else:
            self._failed_at.pop(req.name, None)
        if backend.phase in (Phase.FAILED, Phase.THROTTLED):
            self.recorder.event(claim, "Warning", backend.reason or "LaunchFailed", backend.message)
        node_name = backend.node_name or req.name
        node_obj = self.cache.get(NODE, None, node_name)
        node = to_dict(node_obj) if node_obj is not None else None
        gpus = int(self.gpus_of(req.instance_type) or 0)
        status = dict(claim.get("status") or {})
        new_status = dict(status)
        new_status["conditions"] = claim_conditions(
            status.get("conditions") or (), backend, node, gpus
        )
        if backend.provider_id:
            new_status["providerID"] = backend.provider_id
        if node is not None:
            new_status["nodeName"] = node_name
            node_status = node.get("status") or {}
            for key in ("capacity", "allocatable"):
                if node_status.get(key):
                    new_status[key] = node_status[key]
        registration_due = registration_left(new_status, self.registration_timeout_s)
        if registration_due is not None and registration_due <= 0:
            return await self._delete_unregistered(claim)
        settle = self._settling(meta, backend, new_status)
        if settle is not None:
            return Result(requeue_after=settle)
        if new_status != status:
            with contextlib.suppress(NotFound):  # status is ours alone: no precondition
                await self.client.patch_status(
                    self.claim_gvk, None, request.name, {"status": new_status}
                )
        if backend.phase is Phase.THROTTLED:
            return Result(requeue_after=backend.retry_after_s or 5.0)
        if backend.phase is Phase.FAILED:
            return Result(requeue_after=backend.retry_after_s or RETRY_FAILED_LAUNCH_S)
        if backend.phase is Phase.PENDING or (node is None and asked is not None):
            wait = self._polls.next_read_in(req.name)
            if registration_due is not None:
                wait = min(wait, registration_due + 0.1)
            return Result(requeue_after=wait)
        return None

    async def _backend_status(
        self, req: NodeRequest, claim: Mapping[str, Any]
    ) -> tuple[NodeStatus | None, bool | None]:
        """The backend's view of the claim, asking the backend only when it is due.

        A launched claim whose node has joined is answered from its own status (no backend
        call at all); otherwise the backend is read at most on the backoff schedule, so the
        node events that wake every claim cost no cloud reads. Returns (status, asked), asked
        None for a claim that needs no more reads.
        """
        status = claim.get("status") or {}
        node_name = status.get("nodeName")
        if (
            status.get("providerID")
            and node_name
            and diagnosis.is_true(claim, "Launched")
            and self.cache.get(NODE, None, node_name) is not None
        ):
            self._polls.forget(req.name)
            return (
                NodeStatus(Phase.LAUNCHED, provider_id=status["providerID"], node_name=node_name),
                None,
            )
        fresh, last = self._polls.cached(req.name)
        if fresh:
            return last, False
        backend = await self.provisioner.get(req)
        self._polls.remember(req.name, backend)
        return backend, True

    async def _delete_unregistered(self, claim: dict[str, Any]) -> Result | None:
        """Karpenter's liveness rule: a node that never registers is given up; the claim goes.

        Its owner (the Workspace) asks for a new claim, which launches a fresh node; the
        termination finalizer removes what the backend made for this one first.
        """
        meta = claim["metadata"]
        name = meta["name"]
        message = (
            f"node did not register within {self.registration_timeout_s:.0f}s of its launch; "
            "deleting the claim so a new node is launched"
        )
        log.warning("%s: %s", name, message)
        self.recorder.event(claim, "Warning", REGISTRATION_TIMEOUT_REASON, message)
        with contextlib.suppress(NotFound, Conflict):
            await self.client.delete(
                self.claim_gvk, None, name, preconditions=Preconditions(uid=meta.get("uid"))
            )
        self._polls.forget(name)
        return None

    @staticmethod
    def _settling(
        meta: Mapping[str, Any], backend: NodeStatus, new_status: Mapping[str, Any]
    ) -> float | None:
        """Seconds to hold back an in-between status of a young claim (None: write now).

        A node that launches and joins within seconds (KWOK, a warm pool) would otherwise
        take three status writes on its way to Ready; for STATUS_SETTLE_S after creation only
        the Ready (or a failed) status is written.
        """
        if backend.phase not in (Phase.PENDING, Phase.LAUNCHED):
            return None
        if any(
            c["type"] == "Ready" and c["status"] == "True" for c in new_status.get("conditions", ())
        ):
            return None
        created = diagnosis.timestamp(meta.get("creationTimestamp"))
        if created is None:
            return None
        age = (dt.datetime.now(dt.UTC) - created).total_seconds()
        return STATUS_SETTLE_S - age if 0 <= age < STATUS_SETTLE_S else None

    async def _terminate(self, claim: dict[str, Any]) -> Result | None:
        meta = claim["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if C.FINALIZER_KARPENTER_TERMINATION not in finalizers:
            return None
        if self._released.sent(str(meta.get("uid") or "")):
            return None  # our cached copy predates the release; its delete event is due
        try:
            gone = await self.provisioner.delete(meta["name"])
        except Exception as exc:
            self.recorder.event(claim, "Warning", "TerminationFailed", str(exc))
            return Result(requeue_after=5.0)
        log.debug("terminating %s: backend resources gone=%s", meta["name"], gone)
        if not gone:
            return Result(requeue_after=1.0)
        self._polls.forget(meta["name"])
        self._failed_at.pop(meta["name"], None)
        # Any failure but NotFound (a 5xx, a 403 from a broken RBAC) propagates: the key is
        # retried with backoff and counted as an error, instead of the claim staying stuck
        # until the next resync. A Conflict (our copy is stale) is retried by the wrapper.
        await remove_finalizer(
            self.client,
            self.claim_gvk,
            None,
            meta["name"],
            finalizers=finalizers,
            finalizer=C.FINALIZER_KARPENTER_TERMINATION,
        )
        self._released.mark(str(meta.get("uid") or ""))
        return None


def requests_for_node(node: Mapping[str, Any]) -> Iterable[Request]:
    """Map a node back to the claim that made it."""
    name = ((node.get("metadata") or {}).get("labels") or {}).get(NODECLAIM_LABEL)
    if name:
        yield Request("", name)
