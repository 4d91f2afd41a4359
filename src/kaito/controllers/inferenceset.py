"""The InferenceSet controller: `replicas` Workspaces from a template, one Service, an HPA.

Level-based like the Workspace controller: each reconcile reads the set and its replica
Workspaces from the shared cache, asks :mod:`kaito.controllers.replicas` what to change, acts,
and writes status only when it changed.  Replicas are owned by the set (controller reference),
so deleting the set lets the garbage collector delete them, and each replica's own finalizer
releases its nodes.  The set's Service ``<set>`` selects the leader pod (pod index 0) of every
replica, so the endpoints controller spreads requests over the ready replicas.  With the
``scaledobject.kaito.sh/auto-provision`` annotation the set also owns a HorizontalPodAutoscaler
(:mod:`kaito.controllers.autoscaler`).

A just-issued patch or delete is remembered until the cache shows it, so a reconcile that runs
on a stale cache cannot roll or delete a second replica past maxUnavailable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kaito.api import Workspace, WorkspaceBase, utcnow
from kaito.api import constants as C
from kaito.api.inferenceset import (
    InferenceSet,
    child_workspace,
    desired_replicas,
    owner_reference,
    parse_inferenceset,
    template_hash,
    update_strategy,
)
from kaito.controllers import autoscaler
from kaito.controllers.activator import Activator, scale
from kaito.controllers.apply import Applier
from kaito.controllers.common import WORKSPACE
from kaito.controllers.inferenceset_metrics import InferenceSetCollector
from kaito.controllers.inferenceset_objects import (
    patchable,
    replica_ready,
    service,
    serving_since,
)
from kaito.controllers.inferenceset_status import desired_status
from kaito.controllers.replicas import Replica, ReplicaPlan, plan_replicas
from kaito.presets import FitError, SpecError
from kaito.presets.plan import plan_workspace
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client, Preconditions
from kaito.runtime.controller import Controller
from kaito.runtime.errors import AlreadyExists, ApiError, Conflict, Invalid, NotFound
from kaito.runtime.events import EventRecorder
from kaito.runtime.gvk import GVK, SERVICE
from kaito.runtime.handlers import EnqueueForOwner
from kaito.runtime.manager import Manager
from kaito.runtime.objects import to_dict
from kaito.runtime.predicates import (
    annotations_changed,
    any_of,
    generation_changed,
    labels_changed,
)
from kaito.runtime.request import Request, Result

log = logging.getLogger("kaito.controllers.inferenceset")

INFERENCESET = GVK(C.GROUP, C.V1BETA1, C.INFERENCESET_KIND)
FIELD_MANAGER = "kaito-inferenceset"
REJECTED_RETRY_S = 30.0


@dataclass(frozen=True)
class InferenceSetSettings:
    """Operator-wide choices: with bring-your-own nodes replicas carry no instance type;
    `activator_host` is the DNS name of the activator's Service (None: no scale to zero)."""

    byo: bool = False
    activator_host: str | None = None


@dataclass
class _Memory:
    """Writes this controller made that the cache may not show yet (per set uid)."""

    deleted: set[str] = field(default_factory=set)
    """uids of replicas we deleted."""
    patched: dict[str, int] = field(default_factory=dict)
    """uid -> the generation our in-place patch gave the replica."""


class InferenceSetReconciler:
    """Reconciles one InferenceSet; see the module docstring."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        recorder: EventRecorder,
        settings: InferenceSetSettings | None = None,
        activator: Activator | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.settings = settings or InferenceSetSettings()
        self.activator = activator
        self._memory: dict[str, _Memory] = {}
        self._uids: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid, to forget
        # the set's Service and HPA: applied on change, set back after a hand edit
        self.applier = Applier(client, cache, field_manager=FIELD_MANAGER)
        self._nodes: dict[str, int] = {}  # template hash -> nodes per replica

    async def __call__(self, request: Request) -> Result | None:
        try:
            return await self._reconcile(request)
        except Conflict:
            log.debug("conflict on %s; retrying once the cache has caught up", request)
            return Result(requeue=True)

    # ---------------------------------------------------------------- reconcile
    async def _reconcile(self, request: Request) -> Result | None:
        cached = self.cache.get(INFERENCESET, request.namespace, request.name)
        if cached is None:
            if self.activator is not None:
                self.activator.forget(request.namespace, request.name)
            self._forget(self._uids.pop((request.namespace, request.name), None))
            return None
        iset = cached if isinstance(cached, InferenceSet) else parse_inferenceset(to_dict(cached))
        uid = iset.metadata.uid or ""
        if iset.metadata.deletion_timestamp is not None:
            self._forget(uid)
            return None  # the garbage collector deletes the replicas
        previous = self._uids.get((request.namespace, request.name))
        if previous != uid:
            self._forget(previous)  # a set deleted and created again under the same name
            self._uids[(request.namespace, request.name)] = uid
        digest = template_hash(iset)
        desired_child = child_workspace(iset, "", byo=self.settings.byo, digest=digest)
        children = {
            ws.name: ws
            for ws in (self._workspace(o) for o in self.cache.list(WORKSPACE, owner_uid=uid))
            if ws.namespace == iset.namespace
        }
        memory = self._memory.setdefault(uid, _Memory())
        replicas = [self._replica(ws, digest, desired_child, memory) for ws in children.values()]
        per_replica = self._nodes_per_replica(digest, desired_child, children.values())
        kind, limit = update_strategy(iset)
        plan = plan_replicas(
            replicas,
            set_name=iset.name,
            desired=desired_replicas(iset),
            nodes_per_replica=per_replica,
            node_limit=iset.spec.node_count_limit or None,
            strategy=kind,
            max_unavailable_value=limit,
            taken_names={e.name for e in self.cache.entries(WORKSPACE, namespace=iset.namespace)},
        )
        rejected = await self._act(iset, plan, children, desired_child, memory)
        service_problem = await self._reconcile_service(iset)
        scaling = await self._reconcile_autoscaler(iset, plan, per_replica)
        idle_wait = await self._scale_to_zero_when_idle(iset, serving_since(children.values()))
        await self._write_status(
            iset,
            list(children.values()),
            digest=digest,
            plan=plan,
            per_replica=per_replica,
            problem=rejected or service_problem,
            scaling=scaling,
        )
        waits = [w for w in (REJECTED_RETRY_S if rejected else None, idle_wait) if w]
        return Result(requeue_after=min(waits)) if waits else None

    def _workspace(self, obj: Any) -> WorkspaceBase:
        return obj if isinstance(obj, WorkspaceBase) else Workspace.model_validate(to_dict(obj))

    def _replica(
        self, ws: WorkspaceBase, digest: str, desired: Mapping[str, Any], memory: _Memory
    ) -> Replica:
        uid = ws.metadata.uid or ""
        deleting = ws.metadata.deletion_timestamp is not None or uid in memory.deleted
        if ws.metadata.deletion_timestamp is not None:
            memory.deleted.discard(uid)
        hashed = (ws.metadata.annotations or {}).get(C.ANNOTATION_INFERENCESET_TEMPLATE_HASH)
        patched_to = memory.patched.get(uid)
        catching_up = patched_to is not None and (ws.metadata.generation or 0) < patched_to
        if patched_to is not None and not catching_up:
            memory.patched.pop(uid, None)
        created = ws.metadata.creation_timestamp
        return Replica(
            name=ws.name,
            created=created.isoformat() if created else "",
            up_to_date=hashed == digest or catching_up,
            ready=replica_ready(ws) and not catching_up,
            deleting=deleting,
            nodes=max(1, (ws.status.target_node_count or 1) if ws.status else 1),
            in_place=patchable(ws, desired),
        )

    def _nodes_per_replica(self, digest: str, desired: Mapping[str, Any], children: Any) -> int:
        """Nodes one replica needs: the estimator's answer for the template, memoised."""
        found = self._nodes.get(digest)
        if found is not None:
            return found
        doc = {**desired, "metadata": {**desired["metadata"], "name": "replica"}}
        try:
            plan = plan_workspace(doc)
            nodes = plan.estimate.node_count if plan.estimate is not None else 1
        except (SpecError, FitError):
            # the replicas report why; count what they say they need, else one node each
            nodes = max(
                (ws.status.target_node_count or 1 for ws in children if ws.status), default=1
            )
            return nodes
        if len(self._nodes) > 1000:
            self._nodes.clear()
        self._nodes[digest] = nodes
        return nodes

    # ---------------------------------------------------------------- acting
    async def _act(
        self,
        iset: InferenceSet,
        plan: ReplicaPlan,
        children: Mapping[str, WorkspaceBase],
        desired: Mapping[str, Any],
        memory: _Memory,
    ) -> str | None:
        """Carry out the plan; returns the API's refusal of a new replica, if any."""
        for name in [*plan.delete, *plan.replace]:
            ws = children[name]
            uid = ws.metadata.uid or ""
            with contextlib.suppress(NotFound, Conflict):
                await self.client.delete(
                    WORKSPACE, iset.namespace, name, preconditions=Preconditions(uid=uid)
                )
            memory.deleted.add(uid)
            why = "replaced by the new template" if name in plan.replace else "scaled down"
            self.recorder.event(
                iset, "Normal", "SuccessfulDelete", f"deleted replica {name} ({why})"
            )
        for name in plan.update:
            ws = children[name]
            updated = await self._patch_replica(ws, desired)
            memory.patched[ws.metadata.uid or ""] = updated
            self.recorder.event(
                iset, "Normal", "RollingUpdate", f"updated replica {name} to the new template"
            )
        for name in plan.create:
            body = child_workspace(
                iset,
                name,
                byo=self.settings.byo,
                digest=desired["metadata"]["annotations"][C.ANNOTATION_INFERENCESET_TEMPLATE_HASH],
            )
            try:
                await self.client.create(body)
            except AlreadyExists:
                continue
            except Invalid as exc:
                # CEL or the webhook refused the template: say so on the set, retry later
                message = f"replica {name} was refused: {exc.message}"
                self.recorder.event(iset, "Warning", "FailedCreate", message)
                return message
            self.recorder.event(iset, "Normal", "SuccessfulCreate", f"created replica {name}")
        return None

    async def _patch_replica(self, ws: WorkspaceBase, desired: Mapping[str, Any]) -> int:
        """JSON-patch the template's inference and metadata into a replica; its new generation."""
        meta = desired["metadata"]
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/uid", "value": ws.metadata.uid},
            {"op": "replace", "path": "/inference", "value": desired["inference"]},
        ]
        for section in ("labels", "annotations"):
            current = getattr(ws.metadata, section) or {}
            if not current:
                ops.append({"op": "add", "path": f"/metadata/{section}", "value": meta[section]})
                continue
            for key, value in meta[section].items():
                if current.get(key) != value:
                    path = f"/metadata/{section}/" + key.replace("~", "~0").replace("/", "~1")
                    ops.append({"op": "add", "path": path, "value": value})
        updated = await self.client.patch(WORKSPACE, ws.namespace, ws.name, ops, patch_type="json")
        return int(to_dict(updated).get("metadata", {}).get("generation") or 0)

    async def _live(self, gvk: GVK, namespace: str, name: str) -> Any | None:
        """The object from the cache, or from the API server when the cache has none.

        The set's informers see only objects with its label; a user's own Service or HPA
        of the set's name is found by the read, so it is reported, never taken over. The
        read happens only while the cache shows nothing (before the first apply).
        """
        cached = self.cache.get(gvk, namespace, name)
        if cached is not None:
            return cached
        try:
            return await self.client.get(gvk, namespace, name)
        except NotFound:
            return None

    def _forget(self, uid: str | None) -> None:
        """Drop what was remembered of a set that is gone."""
        if uid is not None:
            self._memory.pop(uid, None)
            self.applier.forget(uid)

    def _scales_to_zero(self, iset: InferenceSet) -> bool:
        return (
            self.activator is not None
            and bool(self.settings.activator_host)
            and autoscaler.to_zero(iset.metadata.annotations or {})
        )

    async def _reconcile_service(self, iset: InferenceSet) -> str | None:
        """Apply the set's Service; a Service of that name owned by someone else is left alone.

        Switching to or from scale to zero changes the Service's type to or from ExternalName,
        which an update cannot do (the cluster IP stays), so the old Service is deleted first.
        """
        desired = service(
            iset, self.settings.activator_host if self._scales_to_zero(iset) else None
        )
        existing = await self._live(SERVICE, iset.namespace, iset.name)
        if existing is not None:
            current = to_dict(existing)
            owners = current["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == iset.metadata.uid for o in owners):
                return (
                    f"Service {iset.name} already exists and does not belong to this set; "
                    "rename the InferenceSet or remove that Service"
                )
            external = (current.get("spec") or {}).get("type") == "ExternalName"
            if external != (desired["spec"]["type"] == "ExternalName"):
                with contextlib.suppress(NotFound, Conflict):
                    await self.client.delete(
                        SERVICE,
                        iset.namespace,
                        iset.name,
                        preconditions=Preconditions(uid=current["metadata"].get("uid")),
                    )
        await self.applier.apply_if_changed(SERVICE, desired)
        return None

    async def _scale_to_zero_when_idle(
        self, iset: InferenceSet, serving: dt.datetime | None
    ) -> float | None:
        """Scale an idle scale-to-zero set to 0; seconds until it would be idle, if not yet.

        A set is idle only while it could serve: idle time counts from the later of its last
        request and the moment a replica became ready (`serving`, None while none is), so a
        new or waking set whose model load outlasts idle-seconds is not parked before it
        ever answered.
        """
        if self.activator is None or not self._scales_to_zero(iset):
            return None
        if desired_replicas(iset) == 0:
            return None
        try:
            limit = autoscaler.idle_seconds(iset.metadata.annotations or {})
        except autoscaler.AnnotationError:
            return None
        if serving is None:
            return None  # the replica's readiness wakes this reconcile
        idle = min(
            self.activator.idle_for(iset.namespace, iset.name),
            (utcnow() - serving).total_seconds(),
        )
        if idle < limit:
            return max(1.0, limit - idle)
        await scale(self.client, INFERENCESET, iset.namespace, iset.name, 0)
        self.recorder.event(
            iset,
            "Normal",
            "ScaledToZero",
            f"no request for {idle:.0f}s: scaled to zero; the activator wakes it on the next one",
        )
        return None

    async def _reconcile_autoscaler(
        self, iset: InferenceSet, plan: ReplicaPlan, per_replica: int
    ) -> tuple[bool, str, str] | None:
        """Own the HPA the annotations ask for; (ok, reason, message) for AutoscalerReady."""
        annotations = iset.metadata.annotations or {}
        current = await self._live(autoscaler.HPA, iset.namespace, iset.name)
        ours = (
            current is not None
            and (to_dict(current)["metadata"].get("annotations") or {}).get(
                C.ANNOTATION_SCALE_MANAGED_BY
            )
            == autoscaler.MANAGER
        )
        if not autoscaler.enabled(annotations):
            if ours:
                with contextlib.suppress(NotFound):
                    await self.client.delete(autoscaler.HPA, iset.namespace, iset.name)
            return None
        limit = iset.spec.node_count_limit or 0
        try:
            settings = autoscaler.parse(
                annotations, limit_replicas=limit // per_replica if limit else None
            )
        except autoscaler.AnnotationError as exc:
            return False, "InvalidAnnotation", str(exc)
        if current is not None and not ours:
            return (
                False,
                "HPAExists",
                f"HorizontalPodAutoscaler {iset.name} exists and is not managed by Kaito; "
                f"remove it or the {C.ANNOTATION_SCALE_AUTO_PROVISION} annotation",
            )
        try:
            await self.applier.apply_if_changed(
                autoscaler.HPA,
                autoscaler.hpa(iset.name, iset.namespace, owner_reference(iset), settings),
            )
        except ApiError as exc:
            return False, "HPAFailed", f"cannot write the HorizontalPodAutoscaler: {exc.message}"
        problem = autoscaler.hpa_problem(to_dict(current)) if current is not None else None
        if problem is not None:
            return False, problem[0], problem[1]
        if settings.to_zero and not self._scales_to_zero(iset):
            return (
                False,
                "ActivatorDisabled",
                "min-replicas 0 needs the operator's activator (--activator-port and its "
                "Service); until then the set keeps at least one replica",
            )
        return True, "AutoscalerReady", autoscaler.describe(settings)

    # ---------------------------------------------------------------- status
    async def _write_status(
        self,
        iset: InferenceSet,
        children: list[WorkspaceBase],
        *,
        digest: str,
        plan: ReplicaPlan,
        per_replica: int,
        problem: str | None,
        scaling: tuple[bool, str, str] | None,
    ) -> None:
        new = desired_status(
            iset,
            children,
            digest=digest,
            allowed=plan.allowed,
            blocked_by_nodes=plan.blocked_by_nodes,
            per_replica=per_replica,
            problem=problem,
            scaling=scaling,
        )
        current = iset.status
        old = current.model_dump(mode="json", by_alias=True, exclude_none=True) if current else {}
        if {k: old.get(k) for k in new} == new:
            return
        # the whole status is this controller's and recomputed each time (a merge patch
        # replaces the conditions list), so no resourceVersion precondition is needed
        with contextlib.suppress(NotFound):
            await self.client.patch_status(INFERENCESET, iset.namespace, iset.name, {"status": new})


def register(
    mgr: Manager,
    *,
    byo: bool,
    workers: int = 5,
    activator: Activator | None = None,
    activator_host: str | None = None,
) -> Controller:
    """The InferenceSet controller and its watches on `mgr` (the operator's one registration).

    Replica Workspaces come through the Workspace controller's informer (one informer per
    kind and scope), Services and HPAs through informers limited to the sets' label.
    """
    mgr.scheme.register(INFERENCESET, InferenceSet)
    reconciler = InferenceSetReconciler(
        mgr.client,
        mgr.cache,
        mgr.event_recorder("kaito-inferenceset"),
        InferenceSetSettings(byo=byo, activator_host=activator_host),
        activator,
    )
    owned = EnqueueForOwner(INFERENCESET)
    mgr.metrics.registry.register(InferenceSetCollector(mgr.cache, INFERENCESET))
    return (
        mgr.controller("inferenceset", reconciler, workers=min(workers, 5))
        .watches(
            INFERENCESET,
            predicates=[any_of(generation_changed, labels_changed, annotations_changed)],
        )
        .watches(WORKSPACE, owned)
        .watches(SERVICE, owned, label_selector=C.LABEL_INFERENCESET_CREATED_BY)
        .watches(autoscaler.HPA, owned, label_selector=C.LABEL_INFERENCESET_CREATED_BY)
    )
