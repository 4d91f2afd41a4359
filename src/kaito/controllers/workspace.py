"""The workspace controller: nodes → workload → services → status, level-based.

Every decision is recomputed from the shared cache on each reconcile; API writes happen
only when the cached state differs from the desired one, so an idle operator issues no
requests. The parts live beside this module: ``claims`` (nodes), ``workload`` (the
StatefulSet and Services), ``tuning_run`` (the tuning Job), ``planning`` (the plan of each
spec), ``status`` and ``finalization``; this one holds the revision history and the order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kaito.api import WorkspaceBase, parse_workspace
from kaito.api import constants as C
from kaito.api.constants import ConditionType, Reason
from kaito.controllers import hub_models
from kaito.controllers import objects as o
from kaito.controllers.apply import Applier
from kaito.controllers.benchmark import Benchmarks
from kaito.controllers.claims import NodeClaims, NodeNeeds, Placement, node_needs
from kaito.controllers.common import (
    CONTROLLER_REVISION,
    WORKSPACE,
    Facts,
    WorkspaceSettings,
    all_of,
    requeue_on_conflict,
)
from kaito.controllers.finalization import Finalizer
from kaito.controllers.planning import AwaitingNodes, Planner
from kaito.controllers.status import StatusWriter
from kaito.controllers.tuning_run import TuningRun
from kaito.controllers.workload import Workload
from kaito.hub import HubClient, HubPresets
from kaito.presets import SpecError
from kaito.presets.errors import SourceUnavailable
from kaito.presets.plan import Plan
from kaito.presets.skus import LearnedSku
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.errors import AlreadyExists, Conflict, Forbidden, NotFound
from kaito.runtime.events import EventRecorder
from kaito.runtime.objects import to_dict
from kaito.runtime.request import Request, Result

log = logging.getLogger("kaito.controllers.workspace")


def spec_hash(ws: WorkspaceBase) -> str:
    spec = ws.model_dump(
        mode="json", by_alias=True, exclude_none=True, include={"resource", "inference", "tuning"}
    )
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class WorkspaceReconciler:
    """Reconciles one Workspace; see the module docstring."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        recorder: EventRecorder,
        settings: WorkspaceSettings,
        *,
        cloud_skus: Callable[[str], Awaitable[LearnedSku | None]] | None = None,
        hub: HubPresets | None = None,
    ) -> None:
        """`cloud_skus` sizes instance types the table lacks (Azure's resource SKU list);
        `hub` sizes models named by a hub id the catalog lacks (HF_ENDPOINT's hub by default).
        """
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.settings = settings
        self.applier = Applier(client, cache)
        self.claims = NodeClaims(client, cache, recorder, settings)
        self.planner = Planner(
            client,
            cache,
            recorder,
            settings,
            self.claims,
            cloud_skus=cloud_skus,
            hub=hub or HubPresets(HubClient(settings.hub_endpoint)),
        )
        self.workload = Workload(cache, recorder, settings, self.applier)
        self.tuning = TuningRun(client, cache, recorder, settings, self.applier)
        self.status = StatusWriter(client)
        self.finalizer = Finalizer(client, cache, settings)
        self.benchmarks = Benchmarks(client, cache)

    # ---------------------------------------------------------------- entry point
    async def __call__(self, request: Request) -> Result | None:
        try:
            return await requeue_on_conflict(log, request, self._reconcile_one)
        except Forbidden as exc:
            if "being terminated" not in exc.message:
                raise
            # the namespace is going away and takes the Workspace with it; its deletion
            # event brings the finalizer work
            log.debug("namespace of %s is terminating: %s", request, exc.message)
            return None

    async def _reconcile_one(self, request: Request) -> Result | None:
        cached = self.cache.get(WORKSPACE, request.namespace, request.name)
        if cached is None:
            return None
        ws = cached if isinstance(cached, WorkspaceBase) else parse_workspace(to_dict(cached))
        if ws.metadata.deletion_timestamp is not None:
            return await self._finalize(ws)
        digest = spec_hash(ws)
        try:
            revision = await self._ensure_metadata(ws, digest)
        except NotFound:
            return None  # gone meanwhile (our cached copy is behind); nothing left to do
        facts = Facts()
        plan, recheck_s = await self.planner.plan(ws, digest)
        result: Result | None = None
        learned = self.planner.learned.get(ws.metadata.uid or ws.name)
        if learned is not None:
            facts.set(
                ConditionType.INSTANCE_TYPE_RESOLVED,
                True,
                "FromNodeLabels" if learned.source.startswith("the labels") else "FromCloud",
                f"{learned.summary}; not in Kaito's table, figures from {learned.source}",
            )
        error: Exception | None = None
        try:
            if isinstance(plan, SpecError):
                raise plan
            needs = node_needs(ws, plan)
        except AwaitingNodes as exc:
            facts.set(ConditionType.NODES_READY, False, Reason.NODE_NOT_READY, exc.reason)
            facts.set(ConditionType.RESOURCE_READY, False, Reason.NODE_NOT_READY, exc.reason)
            facts.set(
                ConditionType.WORKSPACE_SUCCEEDED, False, Reason.WORKSPACE_PENDING, exc.reason
            )
        except SpecError as exc:
            unavailable = isinstance(exc, SourceUnavailable)
            reason = hub_models.HUB_UNAVAILABLE if unavailable else "InvalidSpec"
            facts.set(ConditionType.RESOURCE_READY, False, reason, str(exc))
            facts.set(ConditionType.WORKSPACE_SUCCEEDED, False, Reason.WORKSPACE_FAILED, str(exc))
            if recheck_s is not None:
                result = Result(requeue_after=recheck_s)
        else:
            try:
                result = await self._reconcile(ws, plan, needs, revision, facts)
            except (Conflict, NotFound):
                raise  # our copy is behind: retried, not a failure to show
            except Exception as exc:  # shown on the conditions, then retried with backoff
                error = exc
                facts.error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        wait = await self.status.write(ws, facts)
        if error is not None:
            raise error
        for after in (wait, facts.recheck_after):
            if after is not None and (result is None or not 0 < result.requeue_after <= after):
                result = Result(requeue_after=after)
        return result

    async def _reconcile(
        self, ws: WorkspaceBase, plan: Plan, needs: NodeNeeds, revision: str, facts: Facts
    ) -> Result | None:
        owner = self._owner(ws)
        tuning = plan.mode == "tuning"
        if tuning:
            finished = self.tuning.finished_job(ws, revision)
            if finished is not None:
                self.tuning.status_from_job(ws, finished, facts)
                return None
        pending_type = ConditionType.JOB_STARTED if tuning else ConditionType.INFERENCE_READY
        placement = await self.claims.reconcile(ws, owner, needs, facts)
        if tuning:
            if not placement.ready:
                self._waiting_for_nodes(pending_type, facts)
                return None
            return await self.tuning.reconcile(
                ws, plan, owner, revision, placement=placement, facts=facts
            )
        self.workload.note_first_sight(ws)
        # The Services need no node and nothing of the StatefulSet: written beside it, after
        # the claims (the long pole), so a new Workspace's first reconcile waits for one
        # round trip instead of three.
        await all_of(
            self.workload.reconcile_services(ws, owner),
            self._inference(
                ws,
                plan,
                needs=needs,
                revision=revision,
                owner=owner,
                placement=placement,
                facts=facts,
            ),
        )
        return None

    async def _inference(
        self,
        ws: WorkspaceBase,
        plan: Plan,
        *,
        needs: NodeNeeds,
        revision: str,
        owner: o.Owner,
        placement: Placement,
        facts: Facts,
    ) -> None:
        """The inference StatefulSet and its readiness, once its nodes allow."""
        pending_type = ConditionType.INFERENCE_READY
        # A new Workspace's inference pods, when they can only land on nodes being made for
        # them, are written ahead of those nodes, as a cluster autoscaler's users write
        # theirs: they wait in the scheduler and bind the moment a node registers, instead of
        # after a reconcile that finds it Ready (which queues behind the first reconciles of
        # every new Workspace). An existing StatefulSet is changed only on Ready nodes, so
        # its pods keep serving while the nodes of a new spec come up.
        ahead = not placement.ready and placement.only_own_nodes and not self.workload.exists(ws)
        if not placement.ready and not ahead:
            self._waiting_for_nodes(pending_type, facts)
            return
        await self.workload.migrate_deployment(ws)
        if plan.mode == "template":
            await self.workload.reconcile_template(
                ws, owner, revision, replicas=needs.target, placement=placement, facts=facts
            )
        else:
            await self.workload.reconcile_preset(
                ws, plan, owner, revision, placement=placement, facts=facts
            )
        if ahead:
            if facts.conditions.get(ConditionType.WORKSPACE_SUCCEEDED, ("",) * 3)[1] != (
                Reason.WORKSPACE_FAILED
            ):
                self._waiting_for_nodes(pending_type, facts)  # the pods' Pending is ours
            return
        if plan.mode != "template":
            await self.benchmarks.record(ws, plan, facts)

    @staticmethod
    def _waiting_for_nodes(pending_type: str, facts: Facts) -> None:
        facts.set(pending_type, None, Reason.INFERENCE_STATUS_PENDING, "waiting for nodes")
        facts.set(
            ConditionType.WORKSPACE_SUCCEEDED, False, Reason.WORKSPACE_PENDING, "waiting for nodes"
        )

    async def _finalize(self, ws: WorkspaceBase) -> Result | None:
        if self.finalizer.released(ws):
            return None  # its delete event is due; writing again would only meet a 404
        if C.FINALIZER_WORKSPACE in (ws.metadata.finalizers or ()):
            facts = Facts()
            facts.set(
                ConditionType.WORKSPACE_DELETING,
                True,
                Reason.WORKSPACE_DELETED,
                "deleting: releasing the Workspace's nodes before it goes",
            )
            await self.status.write(ws, facts)
        released, result = await self.finalizer.finalize(ws, self._owner(ws))
        if released:
            self._forget(ws.metadata.uid or ws.name)
        return result

    def _forget(self, uid: str) -> None:
        """Drop what was remembered of a deleted Workspace."""
        self.planner.forget(uid)
        self.tuning.forget(uid)
        self.workload.forget(uid)
        self.benchmarks.forget(uid)
        self.status.forget(uid)
        self.applier.forget(uid)

    # ---------------------------------------------------------------- metadata
    def _owner(self, ws: WorkspaceBase) -> o.Owner:
        return o.Owner(
            name=ws.name,
            namespace=ws.namespace,
            uid=ws.metadata.uid or "",
            api_version=ws.api_version,
        )

    async def _ensure_metadata(self, ws: WorkspaceBase, digest: str) -> str:
        """Finalizer, ControllerRevision and the hash/revision annotations: one patch at most.

        Returns the spec's revision number; the cached Workspace may still carry the old one.
        """
        annotations = ws.metadata.annotations or {}
        finalizers = list(ws.metadata.finalizers or [])
        revision = annotations.get(C.ANNOTATION_WORKSPACE_REVISION)
        if annotations.get(C.ANNOTATION_WORKSPACE_HASH) != digest or revision is None:
            revision = str(await self._ensure_revision(ws, digest))
        patch: dict[str, Any] = {}
        if C.FINALIZER_WORKSPACE not in finalizers:
            patch["finalizers"] = [*finalizers, C.FINALIZER_WORKSPACE]
        wanted = {C.ANNOTATION_WORKSPACE_HASH: digest, C.ANNOTATION_WORKSPACE_REVISION: revision}
        if any(annotations.get(k) != v for k, v in wanted.items()):
            patch["annotations"] = wanted
        if patch:
            patch["resourceVersion"] = ws.metadata.resource_version
            await self.client.patch(WORKSPACE, ws.namespace, ws.name, {"metadata": patch})
        return revision

    async def _ensure_revision(self, ws: WorkspaceBase, digest: str) -> int:
        """A ControllerRevision per distinct spec, as upstream keeps (history of 10)."""
        revisions = sorted(
            (
                to_dict(r)
                for r in self.cache.list(
                    CONTROLLER_REVISION,
                    namespace=ws.namespace,
                    labels={C.LABEL_REVISION_WORKSPACE_NAME: ws.name},
                )
            ),
            key=lambda r: int(r.get("revision", 0)),
        )
        for rev in revisions:
            if (rev["metadata"].get("annotations") or {}).get(
                C.ANNOTATION_WORKSPACE_HASH
            ) == digest:
                return int(rev.get("revision", 0))
        number = int(revisions[-1].get("revision", 0)) + 1 if revisions else 1
        owner = self._owner(ws)
        data = ws.model_dump(
            mode="json",
            by_alias=True,
            exclude_none=True,
            include={"resource", "inference", "tuning"},
        )
        body = {
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": f"{ws.name}-{digest[:5]}",
                "namespace": ws.namespace,
                "labels": {C.LABEL_REVISION_WORKSPACE_NAME: ws.name},
                "annotations": {C.ANNOTATION_WORKSPACE_HASH: digest},
                "ownerReferences": [owner.reference()],
            },
            "data": data,
            "revision": number,
        }
        with contextlib.suppress(AlreadyExists):
            await self.client.create(body)
        for old in revisions[: max(0, len(revisions) + 1 - C.MAX_REVISION_HISTORY)]:
            await self.client.delete(
                CONTROLLER_REVISION, ws.namespace, old["metadata"]["name"], ignore_not_found=True
            )
        return number
