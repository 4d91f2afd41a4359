"""The workspace controller: nodes → workload → services → status, level-based.

Every decision is recomputed from the shared cache on each reconcile; API writes happen
only when the cached state differs from the desired one (a content hash on each applied
object makes "unchanged" a dictionary lookup), so an idle operator issues no requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from kaito.api import (
    WorkspaceBase,
    parse_workspace,
    set_condition,
    utcnow,
)
from kaito.api import constants as C
from kaito.api.constants import ConditionType, Reason, WorkspaceState
from kaito.controllers import diagnosis, hub_models
from kaito.controllers import objects as o
from kaito.controllers.common import (
    APPLIED_HASH,
    CONFIG_RETRY_S,
    CONFIGMAP,
    CONTROLLER_REVISION,
    FIELD_MANAGER,
    JOB,
    MACHINE,
    NODECLAIM,
    TERMINATION_FINALIZER,
    WORKSPACE,
    Facts,
    WorkspaceSettings,
    content_hash,
    local_weights_args,
    weights_source,
)
from kaito.controllers.tuning_run import TuningRun
from kaito.hub import HubClient, HubPresets
from kaito.presets import FitError, SpecError
from kaito.presets.errors import SourceUnavailable
from kaito.presets.plan import Plan, plan_workspace
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.errors import AlreadyExists, Conflict, Forbidden, NotFound
from kaito.runtime.events import EventRecorder
from kaito.runtime.gvk import GVK, NODE, POD, SERVICE, STATEFULSET
from kaito.runtime.objects import to_dict
from kaito.runtime.request import Request, Result

log = logging.getLogger("kaito.controllers.workspace")

WAIT_FOR_NODES_S = 2.0
STATUS_SETTLE_S = 3.0
HUB_UNAVAILABLE = "ModelHubUnavailable"  # the model hub could not be read; retried
HUB_RETRY_S = 10.0
# reasons that mean "on its way", not "something is wrong"
PROGRESS_REASONS = frozenset(
    {
        Reason.WORKSPACE_PENDING,
        Reason.INFERENCE_STATUS_PENDING,
        Reason.INFERENCE_STATUS_SUCCESS,
        Reason.NODE_CLAIM_NOT_READY,
        Reason.NODE_CLAIMS_READY,
        Reason.NODE_NOT_READY,
        Reason.NODES_READY,
        Reason.RESOURCE_STATUS_SUCCESS,
        Reason.TUNING_JOB_PENDING,
        Reason.TUNING_JOB_STARTED,
        "Launching",
        "AwaitingLaunch",
        "AwaitingNode",
        "AwaitingRegistration",
    }
)


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
        hub: HubPresets | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.settings = settings
        self.hub = hub or HubPresets(HubClient(settings.hub_endpoint))
        self._plans: dict[tuple[str, str], Plan | SpecError] = {}
        self._tuning = TuningRun(client, cache, recorder, settings, self._apply_if_changed)

    # ---------------------------------------------------------------- entry point
    async def __call__(self, request: Request) -> Result | None:
        try:
            return await self._reconcile_one(request)
        except Conflict:
            # Our cached copy is older than the server's (often our own write just moved it):
            # not an error, the event carrying the new version is on its way.
            log.debug("conflict on %s; retrying once the cache has caught up", request)
            return Result(requeue=True)
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
        revision = await self._ensure_metadata(ws, digest)
        facts = Facts()
        plan = await self._plan(ws, digest)
        result: Result | None = None
        if isinstance(plan, SpecError):
            reason = HUB_UNAVAILABLE if isinstance(plan, SourceUnavailable) else "InvalidSpec"
            facts.set(ConditionType.RESOURCE_READY, False, reason, str(plan))
            facts.set(ConditionType.WORKSPACE_SUCCEEDED, False, Reason.WORKSPACE_FAILED, str(plan))
            if isinstance(plan, SourceUnavailable):
                result = Result(requeue_after=HUB_RETRY_S)
            elif self._plans.get((ws.metadata.uid or ws.name, digest)) is not plan:
                # not settled by the spec alone (the user's ConfigMap or Secret, the model hub):
                # look again in a while, it may be fixed
                result = Result(requeue_after=CONFIG_RETRY_S)
        else:
            result = await self._reconcile(ws, plan, revision, facts)
        wait = await self._write_status(ws, facts)
        if wait is not None and (result is None or not 0 < result.requeue_after <= wait):
            result = Result(requeue_after=wait)
        return result

    async def _reconcile(
        self, ws: WorkspaceBase, plan: Plan, revision: str, facts: Facts
    ) -> Result | None:
        owner = self._owner(ws)
        assert plan.estimate is not None and plan.sku is not None
        if plan.mode == "tuning":
            # a tuning Job runs on one node with all of its GPUs
            target, gpus = 1, plan.sku.gpu_count
            pending_type = ConditionType.JOB_STARTED
        else:
            target, gpus = plan.estimate.node_count, plan.estimate.gpus_per_node
            pending_type = ConditionType.INFERENCE_READY
        nodes_ready, byo, wait = await self._reconcile_nodes(
            ws, plan, owner, facts, target=target, gpus=gpus
        )
        if not nodes_ready:
            facts.set(pending_type, None, Reason.INFERENCE_STATUS_PENDING, "waiting for nodes")
            facts.set(
                ConditionType.WORKSPACE_SUCCEEDED,
                False,
                Reason.WORKSPACE_PENDING,
                "waiting for nodes",
            )
            return Result(requeue_after=WAIT_FOR_NODES_S) if wait else None
        if plan.mode == "tuning":
            return await self._tuning.reconcile(ws, plan, owner, revision, byo=byo, facts=facts)
        await self._reconcile_services(owner)
        await self._reconcile_workload(ws, plan, owner, revision, byo=byo, facts=facts)
        return None

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

    # ---------------------------------------------------------------- planning
    async def _plan(self, ws: WorkspaceBase, digest: str) -> Plan | SpecError:
        key = (ws.metadata.uid or ws.name, digest)
        found = self._plans.get(key)
        if found is not None:
            return found
        doc = ws.model_dump(mode="json", by_alias=True, exclude_none=True)
        config: dict[str, Any] | None = None
        if ws.inference is not None and ws.inference.config:
            try:
                config = await self._inference_config(ws.namespace, ws.inference.config)
            except SpecError as exc:
                return exc  # not memoised: the ConfigMap may appear later
        try:
            hub_presets = await hub_models.presets_for(self.client, self.hub, ws, doc)
        except SpecError as exc:
            return exc  # not memoised: the hub, the model or the Secret may change
        try:
            plan: Plan | SpecError = plan_workspace(
                doc,
                inference_config=config,
                hub_presets=hub_presets,
                hub_endpoint=self.settings.hub_endpoint,
            )
        except (SpecError, FitError) as exc:
            plan = (
                exc if isinstance(exc, SpecError) else SpecError("resource.instanceType", str(exc))
            )
            self.recorder.event(ws, "Warning", "InvalidSpec", str(plan))
        self._plans = {k: v for k, v in self._plans.items() if k[0] != key[0]}
        self._plans[key] = plan
        return plan

    async def _inference_config(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            cm = to_dict(await self.client.get(CONFIGMAP, namespace, name))
        except NotFound:
            raise SpecError(
                "inference.config", f"ConfigMap {name!r} not found in {namespace}"
            ) from None
        text = (cm.get("data") or {}).get(o.CONFIG_KEY)
        if text is None:
            raise SpecError("inference.config", f"ConfigMap {name!r} has no key {o.CONFIG_KEY}")
        try:
            parsed = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise SpecError(
                "inference.config", f"{o.CONFIG_KEY} is not valid YAML: {exc}"
            ) from None
        if not isinstance(parsed, dict):
            raise SpecError("inference.config", f"{o.CONFIG_KEY} must be a mapping")
        return parsed

    # ---------------------------------------------------------------- nodes
    def _byo_nodes(self, ws: WorkspaceBase, gpus: int) -> list[dict[str, Any]]:
        """Ready nodes the user labelled for this Workspace, not made by any provisioner.

        Filters on the cache's compact entries first, so the many nodes provisioned for
        other Workspaces (which carry the same user labels) are never decoded.
        """
        wanted = o.sanitized_selector(ws.resource.label_selector.match_labels)
        if not wanted:
            return []
        found = []
        for entry in self.cache.entries(NODE, labels=wanted):
            labels = entry.labels or {}
            if C.LABEL_WORKSPACE_NAME in labels or C.LABEL_KARPENTER_NODEPOOL in labels:
                continue
            instance = labels.get(C.LABEL_INSTANCE_TYPE)
            if ws.resource.instance_type and instance not in (None, ws.resource.instance_type):
                continue
            obj = self.cache.get(NODE, None, entry.name)
            if obj is None:
                continue
            node = to_dict(obj)
            if diagnosis.node_problem(node, entry.name, gpus) is None:
                found.append(node)
        return found

    async def _reconcile_nodes(
        self,
        ws: WorkspaceBase,
        plan: Plan,
        owner: o.Owner,
        facts: Facts,
        *,
        target: int,
        gpus: int,
    ) -> tuple[bool, bool, bool]:
        """(ready, byo, requeue): make sure `target` Ready nodes with `gpus` GPUs exist."""
        facts.target = target
        byo = self._byo_nodes(ws, gpus)
        if len(byo) >= target or self.settings.node_provisioner == "byo":
            chosen = byo[:target]
            facts.worker_nodes = sorted(n["metadata"]["name"] for n in chosen)
            if len(chosen) < target:
                msg = (
                    f"{len(chosen)}/{target} Ready nodes match resource.labelSelector with "
                    f"{gpus} GPU(s) each; label more nodes or let the operator provision them"
                )
                facts.set(ConditionType.RESOURCE_READY, False, Reason.NODE_NOT_READY, msg)
                return False, True, False
            facts.set(
                ConditionType.NODES_READY,
                True,
                Reason.NODES_READY,
                f"{target} bring-your-own node(s) ready",
            )
            facts.set(
                ConditionType.RESOURCE_READY,
                True,
                Reason.RESOURCE_STATUS_SUCCESS,
                "bring-your-own nodes are ready",
            )
            return True, True, False

        claim_gvk = self.settings.claim_gvk
        existing = {
            to_dict(c)["metadata"]["name"]: to_dict(c)
            for c in self.cache.list(claim_gvk, labels=o.ownership_labels(owner))
        }
        assert plan.sku is not None
        problems: list[diagnosis.Diagnosis] = []
        ready_nodes: list[str] = []
        for index in range(target):
            name = o.nodeclaim_name(owner, index)
            claim = existing.get(name)
            if claim is None:
                body = o.nodeclaim(
                    owner,
                    index,
                    instance_type=plan.sku.name,
                    match_labels=ws.resource.label_selector.match_labels,
                    node_image_family=(ws.metadata.annotations or {}).get(
                        C.ANNOTATION_NODE_IMAGE_FAMILY, self.settings.node_image_family
                    ),
                    api_version=claim_gvk.api_version,
                )
                if self.settings.claims_finalized_by_us:
                    # saves the machine controller a patch per claim
                    body["metadata"]["finalizers"] = [TERMINATION_FINALIZER]
                try:
                    await self.client.create(body)
                    self.recorder.event(
                        ws,
                        "Normal",
                        "NodeClaimCreated",
                        f"created {claim_gvk.kind} {name} ({plan.sku.name})",
                    )
                except AlreadyExists:
                    pass
                problems.append(
                    diagnosis.Diagnosis(
                        Reason.NODE_CLAIM_NOT_READY,
                        f"{claim_gvk.kind} {name} created, waiting for its node",
                    )
                )
                continue
            if not diagnosis.is_true(claim, "Ready"):
                problems.append(diagnosis.claim_problem(claim))
                continue
            node_name = (claim.get("status") or {}).get("nodeName") or name
            node = self.cache.get(NODE, None, node_name)
            problem = diagnosis.node_problem(
                None if node is None else to_dict(node), node_name, gpus
            )
            if problem is not None:
                problems.append(problem)
                continue
            ready_nodes.append(node_name)
        facts.worker_nodes = sorted(ready_nodes)
        claims_ready = all(
            diagnosis.is_true(existing.get(o.nodeclaim_name(owner, i), {}), "Ready")
            for i in range(target)
        )
        facts.set(
            ConditionType.NODE_CLAIM_READY,
            claims_ready,
            Reason.NODE_CLAIMS_READY if claims_ready else Reason.NODE_CLAIM_NOT_READY,
            f"{sum(diagnosis.is_true(c, 'Ready') for c in existing.values())}/{target} "
            f"{claim_gvk.kind}s ready",
        )
        if problems:
            first = problems[0]
            facts.set(
                ConditionType.NODES_READY,
                False,
                Reason.NODE_NOT_READY,
                f"{len(ready_nodes)}/{target} nodes ready",
            )
            facts.set(ConditionType.RESOURCE_READY, False, first.reason, first.message)
            return False, False, False
        facts.set(ConditionType.NODES_READY, True, Reason.NODES_READY, f"{target} node(s) ready")
        facts.set(
            ConditionType.RESOURCE_READY,
            True,
            Reason.RESOURCE_STATUS_SUCCESS,
            f"{target} {plan.sku.name} node(s) ready",
        )
        return True, False, False

    # ---------------------------------------------------------------- workload
    async def _apply_if_changed(self, gvk: GVK, desired: dict[str, Any]) -> bool:
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

    async def _reconcile_services(self, owner: o.Owner) -> None:
        for svc in o.services(owner):
            await self._apply_if_changed(SERVICE, svc)

    async def _reconcile_workload(
        self,
        ws: WorkspaceBase,
        plan: Plan,
        owner: o.Owner,
        revision: str,
        *,
        byo: bool,
        facts: Facts,
    ) -> None:
        assert plan.estimate is not None and plan.launch is not None and plan.preset is not None
        inference = ws.inference
        assert inference is not None
        adapters: list[o.ImageAdapter | o.VolumeAdapter] = []
        for adapter in inference.adapters or ():
            source = adapter.source
            if source is None or not source.name:
                continue
            if source.image:
                adapters.append(
                    o.ImageAdapter(
                        source.name, source.image, tuple(source.image_pull_secrets or ())
                    )
                )
            elif source.volume_source:
                adapters.append(o.VolumeAdapter(source.name, dict(source.volume_source)))
        options = inference.preset.preset_options if inference.preset else None
        weights_image, weights_secrets = weights_source(
            plan.preset.image_repository,
            plan.preset.image_tag,
            options,
            self.settings.preset_registry,
        )
        args = list(plan.launch.args)
        if weights_image and options is not None and options.image:
            args = local_weights_args(args)
        work = o.InferenceWorkload(
            owner=owner,
            replicas=plan.estimate.node_count,
            image=self.settings.serving_image,
            command=plan.launch.command,
            args=args,
            env=plan.launch.env,
            gpus_per_node=plan.estimate.gpus_per_node,
            revision=revision,
            node_selector_labels=ws.resource.label_selector.match_labels or {},
            provisioned=not byo,
            adapters=adapters,
            config_map=inference.config,
            model_access_secret=options.model_access_secret if options else None,
            weights_bytes=plan.preset.param_bytes,
            weights_image=weights_image,
            weights_pull_secrets=weights_secrets,
        )
        desired = o.statefulset(work)
        first = self.cache.get(STATEFULSET, ws.namespace, ws.name) is None
        if await self._apply_if_changed(STATEFULSET, desired):
            if first:
                where = (
                    f"model image {weights_image}"
                    if weights_image
                    else f"the model hub ({plan.preset.hf_id}) when the pod starts"
                )
                self.recorder.event(
                    ws,
                    "Normal",
                    "WorkloadCreated",
                    f"StatefulSet {ws.name} created; model weights come from {where}",
                )
            else:
                self.recorder.event(
                    ws, "Normal", "WorkloadUpdated", f"StatefulSet {ws.name} at revision {revision}"
                )
        sts_obj = self.cache.get(STATEFULSET, ws.namespace, ws.name)
        sts = to_dict(sts_obj) if sts_obj is not None else {}
        status = sts.get("status") or {}
        replicas = work.replicas
        rolled = (
            status.get("observedGeneration", 0) >= sts.get("metadata", {}).get("generation", 1)
            and status.get("updatedReplicas", 0) >= replicas
            and (
                status.get("updateRevision") in (None, status.get("currentRevision"))
                or status.get("updatedReplicas", 0) >= replicas
            )
        )
        ready = bool(sts) and status.get("readyReplicas", 0) >= replicas and rolled
        if ready:
            facts.set(
                ConditionType.INFERENCE_READY,
                True,
                Reason.INFERENCE_STATUS_SUCCESS,
                f"{replicas}/{replicas} inference pod(s) ready",
            )
            facts.set(
                ConditionType.WORKSPACE_SUCCEEDED,
                True,
                Reason.WORKSPACE_SUCCEEDED,
                "workspace is ready to serve",
            )
            return
        pods = [
            to_dict(p)
            for p in self.cache.list(
                POD, namespace=ws.namespace, labels={C.LABEL_WORKSPACE_NAME: ws.name}
            )
        ]
        problem = diagnosis.pods_problem(pods)
        if problem is None:
            problem = diagnosis.Diagnosis(
                Reason.INFERENCE_STATUS_PENDING,
                f"{status.get('readyReplicas', 0)}/{replicas} inference pod(s) ready",
            )
        facts.set(ConditionType.INFERENCE_READY, False, problem.reason, problem.message)
        facts.set(
            ConditionType.WORKSPACE_SUCCEEDED, False, Reason.WORKSPACE_PENDING, problem.message
        )

    # ---------------------------------------------------------------- status
    async def _write_status(self, ws: WorkspaceBase, facts: Facts) -> float | None:
        """Write the status when it changed; returns seconds to wait when it held a write back.

        A Workspace that is moving fast (KWOK nodes, a cached model) would otherwise pass
        through two or three "still pending" statuses within its first seconds; those are
        held back for STATUS_SETTLE_S after creation, so the first status a user sees is
        often the final one.  Failures are written at once.
        """
        current = ws.status
        conditions = list(current.conditions or []) if current else []
        for type_, (status, reason, message) in facts.conditions.items():
            conditions = set_condition(
                conditions,
                type_,
                status,  # type: ignore[arg-type]
                reason,
                message,
                observed_generation=ws.metadata.generation,
            )
        by_type = {c.type: c.status for c in conditions}
        if facts.state is not None:
            state: str = facts.state
        elif by_type.get(ConditionType.WORKSPACE_SUCCEEDED) == "True":
            state = WorkspaceState.READY
        elif current is not None and current.state in (
            WorkspaceState.READY,
            WorkspaceState.NOT_READY,
        ):
            state = WorkspaceState.NOT_READY
        else:
            state = WorkspaceState.PENDING
        new = {
            "conditions": [
                c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions
            ],
            "state": str(state),
            "workerNodes": facts.worker_nodes or None,
            "targetNodeCount": facts.target
            if facts.target is not None
            else (current.target_node_count if current else None),
        }
        new = {k: v for k, v in new.items() if v is not None}
        old = current.model_dump(mode="json", by_alias=True, exclude_none=True) if current else {}
        old_cmp = {k: old.get(k) for k in new}
        if old_cmp == new and set(old) <= set(new) | {"performance"}:
            return None
        if state == WorkspaceState.PENDING and all(
            reason in PROGRESS_REASONS for _, reason, _ in facts.conditions.values()
        ):
            created = ws.metadata.creation_timestamp
            age = (utcnow() - created).total_seconds() if created else STATUS_SETTLE_S
            if 0 <= age < STATUS_SETTLE_S:
                return STATUS_SETTLE_S - age
        # Status belongs to this controller alone and is recomputed in full each time, so it
        # is written without a resourceVersion precondition (no 409 after our own metadata
        # patch); a reconcile from a stale cache is corrected by the event that follows.
        with contextlib.suppress(NotFound):
            await self.client.patch_status(
                WORKSPACE,
                ws.namespace,
                ws.name,
                {"status": new},
            )
        return None

    # ---------------------------------------------------------------- deletion
    async def _finalize(self, ws: WorkspaceBase) -> Result | None:
        finalizers = list(ws.metadata.finalizers or [])
        if C.FINALIZER_WORKSPACE not in finalizers:
            return None
        owner = self._owner(ws)
        claims = [
            to_dict(c)
            for c in self.cache.list(self.settings.claim_gvk, labels=o.ownership_labels(owner))
        ]
        for claim in claims:
            if not claim["metadata"].get("deletionTimestamp"):
                await self.client.delete(
                    self.settings.claim_gvk, None, claim["metadata"]["name"], ignore_not_found=True
                )
        if claims:
            return Result(requeue_after=1.0)  # NodeClaim events also wake us
        index = finalizers.index(C.FINALIZER_WORKSPACE)
        try:
            await self.client.patch(
                WORKSPACE,
                ws.namespace,
                ws.name,
                [
                    {
                        "op": "test",
                        "path": f"/metadata/finalizers/{index}",
                        "value": C.FINALIZER_WORKSPACE,
                    },
                    {"op": "remove", "path": f"/metadata/finalizers/{index}"},
                ],
                patch_type="json",
            )
        except NotFound:
            return None
        self._plans = {k: v for k, v in self._plans.items() if k[0] != (ws.metadata.uid or ws.name)}
        self._tuning.forget(ws.metadata.uid or ws.name)
        return None


def requests_for_labels(labels: Mapping[str, str]) -> Iterable[Request]:
    """Map an object carrying the ownership labels back to its Workspace."""
    name = labels.get(C.LABEL_WORKSPACE_NAME)
    namespace = labels.get(C.LABEL_WORKSPACE_NAMESPACE)
    if name and namespace:
        yield Request(namespace, name)


__all__ = [
    "CONFIGMAP",
    "CONTROLLER_REVISION",
    "JOB",
    "MACHINE",
    "NODECLAIM",
    "TERMINATION_FINALIZER",
    "WORKSPACE",
    "WorkspaceReconciler",
    "WorkspaceSettings",
    "local_weights_args",
    "requests_for_labels",
    "spec_hash",
    "weights_source",
]
