"""The inference workload of a Workspace: its StatefulSet and Services, and how ready they are."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kaito.api import WorkspaceBase, utcnow
from kaito.api import constants as C
from kaito.api.constants import ConditionType, Reason
from kaito.controllers import benchmark, diagnosis
from kaito.controllers import objects as o
from kaito.controllers.apply import Applier
from kaito.controllers.claims import Placement
from kaito.controllers.common import (
    Facts,
    WorkspaceSettings,
    all_of,
    gpu_resource,
    local_weights_args,
    weights_source,
)
from kaito.presets.plan import Plan
from kaito.runtime.cache import Cache
from kaito.runtime.client import Preconditions
from kaito.runtime.errors import Invalid, NotFound
from kaito.runtime.events import EventRecorder
from kaito.runtime.gvk import DEPLOYMENT, POD, SERVICE, STATEFULSET, STORAGE_CLASS
from kaito.runtime.objects import to_dict

log = logging.getLogger("kaito.controllers.workload")

SCHEDULER_GRACE_S = 10.0
"""How long after its nodes' Ready a pod's Unschedulable is taken for the scheduler's old
verdict: it retries a pending pod when a matching node arrives, within a second or two here,
and after at most its 10 s backoff."""


class Workload:
    """Applies a Workspace's inference StatefulSet and Services (called by its reconciler)."""

    def __init__(
        self, cache: Cache, recorder: EventRecorder, settings: WorkspaceSettings, applier: Applier
    ) -> None:
        self.cache = cache
        self.recorder = recorder
        self.settings = settings
        self.applier = applier
        self._migrated: set[str] = set()  # Workspace uids checked for an old Deployment

    def forget(self, uid: str) -> None:
        self._migrated.discard(uid)

    def exists(self, ws: WorkspaceBase) -> bool:
        """The Workspace's StatefulSet is in the cache."""
        return self.cache.get(STATEFULSET, ws.namespace, ws.name) is not None

    def note_first_sight(self, ws: WorkspaceBase) -> None:
        """A Workspace seen before any status was written has never been reconciled by an
        older Kaito, so it has no Deployment to migrate: no read is spent on it (a rollout
        of N new Workspaces would otherwise send N GETs, each answered 404)."""
        status = ws.status
        if status is None or not status.conditions:
            self._migrated.add(ws.metadata.uid or "")

    async def migrate_deployment(self, ws: WorkspaceBase) -> None:
        """Upstream's migration: the Deployment ``<ws>`` that Kaito before v0.8 ran some
        models in goes, with a Warning Event, and the StatefulSet takes over.

        Read once per Workspace and operator start, not watched: those Deployments carry
        no label to select them by, and none are made any more. Only one this Workspace
        controls is deleted (upstream deletes any of that name). Not read at all for a
        Workspace first seen without status (``note_first_sight``).
        """
        uid = ws.metadata.uid or ""
        if uid in self._migrated:
            return
        try:
            dep = to_dict(await self.applier.client.get(DEPLOYMENT, ws.namespace, ws.name))
        except NotFound:
            self._migrated.add(uid)
            return
        meta = dep["metadata"]
        owned = any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in meta.get("ownerReferences") or ()
        )
        if owned and not meta.get("deletionTimestamp"):
            self.recorder.event(
                ws,
                "Warning",
                "WorkloadMigration",
                f"Deployment {ws.name} (made by an older Kaito) is replaced by StatefulSet "
                f"{ws.name}; the model is unavailable until the StatefulSet is ready",
            )
            await self.applier.client.delete(
                DEPLOYMENT,
                ws.namespace,
                ws.name,
                preconditions=Preconditions(uid=meta.get("uid")),
                ignore_not_found=True,
            )
        self._migrated.add(uid)

    async def reconcile_services(self, ws: WorkspaceBase, owner: o.Owner) -> None:
        annotations = ws.metadata.annotations or {}
        load_balancer = annotations.get(C.ANNOTATION_ENABLE_LB, "").lower() == "true"
        await all_of(
            *(
                self.applier.apply_if_changed(SERVICE, svc, create_if_absent=True)
                for svc in o.services(owner, load_balancer=load_balancer)
            )
        )

    async def reconcile_preset(
        self,
        ws: WorkspaceBase,
        plan: Plan,
        owner: o.Owner,
        revision: str,
        *,
        placement: Placement,
        facts: Facts,
    ) -> None:
        """The StatefulSet that serves a catalog preset with vLLM."""
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
            gpu_resource=gpu_resource(ws),
            revision=revision,
            node_selector_labels=ws.resource.label_selector.match_labels or {},
            provisioned=placement.provisioned,
            pinned_nodes=placement.pinned_nodes,
            preferred_nodes=placement.preferred_nodes,
            spot_toleration=self.settings.spot_toleration,
            weights_claim_storage=self._local_nvme(ws, plan),
            benchmark_args=benchmark.probe_args(plan) if benchmark.enabled(ws, plan) else None,
            adapters=adapters,
            config_map=inference.config,
            model_access_secret=options.model_access_secret if options else None,
            weights_bytes=plan.preset.param_bytes,
            weights_image=weights_image,
            weights_pull_secrets=weights_secrets,
            plain_http_registries=self.settings.plain_http_registries,
            inference_set=inference_set_of(ws),
        )
        where = (
            f"model image {weights_image}"
            if weights_image
            else f"the model hub ({plan.preset.hf_id}) when the pod starts"
        )
        await self._apply(ws, o.statefulset(work), revision, f"model weights come from {where}")
        self.readiness(ws, work.replicas, facts, nodes_ready_at=placement.nodes_ready_at)

    async def reconcile_template(
        self,
        ws: WorkspaceBase,
        owner: o.Owner,
        revision: str,
        *,
        replicas: int,
        placement: Placement,
        facts: Facts,
    ) -> None:
        """The StatefulSet that runs the user's ``inference.template`` as written."""
        assert ws.inference is not None and ws.inference.template is not None
        problem = template_problem(ws.inference.template)
        if problem is not None:
            self._invalid_template(ws, problem, facts)
            return
        desired = o.template_statefulset(
            owner,
            ws.inference.template,
            replicas=replicas,
            revision=revision,
            node_selector_labels=ws.resource.label_selector.match_labels or {},
            provisioned=placement.provisioned,
            pinned_nodes=placement.pinned_nodes,
            preferred_nodes=placement.preferred_nodes,
            spot_toleration=self.settings.spot_toleration,
            inference_set=inference_set_of(ws),
        )
        try:
            await self._apply(ws, desired, revision, "it runs inference.template as written")
        except Invalid as exc:
            # the template is the user's: the API server's verdict names the field to fix
            self._invalid_template(ws, f"inference.template: {exc.message}", facts)
            return
        self.readiness(ws, replicas, facts, nodes_ready_at=placement.nodes_ready_at)

    def _local_nvme(self, ws: WorkspaceBase, plan: Plan) -> str | None:
        """The weights' PVC size when they go on the node's local NVMe, as upstream puts them:
        an instance type with NVMe, weights fetched at start (not a node-local directory) and
        the StorageClass kaito-local-nvme-disk in the cluster. Decided when the StatefulSet
        is made: its claim templates cannot change afterwards."""
        existing = self.cache.get(STATEFULSET, ws.namespace, ws.name)
        if existing is not None:
            templates = to_dict(existing).get("spec", {}).get("volumeClaimTemplates") or []
            for template in templates:
                if template.get("metadata", {}).get("name") == "model-weights-volume":
                    return str(template["spec"]["resources"]["requests"]["storage"])
            return None
        if plan.sku is None or plan.preset is None or not plan.sku.nvme:
            return None
        annotations = ws.metadata.annotations or {}
        if annotations.get(C.ANNOTATION_USE_LOCAL_WEIGHTS, "").lower() == "true":
            return None
        if self.cache.get(STORAGE_CLASS, None, C.LOCAL_NVME_STORAGE_CLASS) is None:
            return None
        return f"{plan.preset.node_disk_gib}Gi"

    def _invalid_template(self, ws: WorkspaceBase, message: str, facts: Facts) -> None:
        shown = ws.status.conditions if ws.status else None
        if not any(
            c.type == ConditionType.INFERENCE_READY and c.message == message for c in shown or ()
        ):
            self.recorder.event(ws, "Warning", "InvalidSpec", message)
        facts.set(ConditionType.INFERENCE_READY, False, "InvalidSpec", message)
        facts.set(ConditionType.WORKSPACE_SUCCEEDED, False, Reason.WORKSPACE_FAILED, message)

    async def _apply(
        self, ws: WorkspaceBase, desired: dict[str, Any], revision: str, created_note: str
    ) -> None:
        """Write the StatefulSet if it differs. A new revision is an Event on the Workspace;
        the first create only a log line, as upstream records none: that Event was a tenth of
        a new Workspace's API requests and told nothing its conditions do not."""
        first = not self.exists(ws)
        if not await self.applier.apply_if_changed(STATEFULSET, desired):
            return
        if first:
            log.info("StatefulSet %s/%s created; %s", ws.namespace, ws.name, created_note)
        else:
            self.recorder.event(
                ws, "Normal", "WorkloadUpdated", f"StatefulSet {ws.name} at revision {revision}"
            )

    def readiness(
        self,
        ws: WorkspaceBase,
        replicas: int,
        facts: Facts,
        *,
        nodes_ready_at: dt.datetime | None = None,
    ) -> None:
        """InferenceReady from the StatefulSet's rollout, or the pods' most telling problem.

        A pod written ahead of its node was refused by the scheduler while no node matched;
        for SCHEDULER_GRACE_S after the Workspace's own nodes became Ready an Unschedulable
        pod is taken for that stale verdict (the scheduler retries on the node's arrival) and
        not shown, whichever way the pod came; the reconcile looks again when the grace ends.

        Ready once ``replicas`` pods of the StatefulSet's current revision are Ready in the
        cache, or once its status says so. The pods' own Ready is what the Service's
        endpoints follow; the StatefulSet controller reports it in ``readyReplicas`` seconds
        later when many StatefulSets change at once (11-12 s at 100 Workspaces here).
        """
        sts_obj = self.cache.get(STATEFULSET, ws.namespace, ws.name)
        sts = to_dict(sts_obj) if sts_obj is not None else {}
        status = sts.get("status") or {}
        pods = [
            to_dict(p)
            for p in self.cache.list(
                POD, namespace=ws.namespace, labels={C.LABEL_WORKSPACE_NAME: ws.name}
            )
        ]
        rolled = (
            status.get("observedGeneration", 0) >= sts.get("metadata", {}).get("generation", 1)
            and status.get("updatedReplicas", 0) >= replicas
            and (
                status.get("updateRevision") in (None, status.get("currentRevision"))
                or status.get("updatedReplicas", 0) >= replicas
            )
        )
        current = current_ready_pods(sts, pods)
        ready = bool(sts) and (
            current >= replicas or (status.get("readyReplicas", 0) >= replicas and rolled)
        )
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
        problem = diagnosis.pods_problem(pods)
        if problem is not None and problem.reason == Reason.UNSCHEDULABLE and nodes_ready_at:
            left = SCHEDULER_GRACE_S - (utcnow() - nodes_ready_at).total_seconds()
            if left > 0:
                problem, facts.recheck_after = None, left
        if problem is None:
            problem = diagnosis.Diagnosis(
                Reason.INFERENCE_STATUS_PENDING,
                f"{min(current, replicas)}/{replicas} inference pod(s) ready",
            )
        facts.set(ConditionType.INFERENCE_READY, False, problem.reason, problem.message)
        facts.set(
            ConditionType.WORKSPACE_SUCCEEDED, False, Reason.WORKSPACE_PENDING, problem.message
        )


def current_ready_pods(sts: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> int:
    """Ready pods, not being deleted, of the StatefulSet's update revision.

    0 until the StatefulSet controller has observed the StatefulSet's generation: before
    that ``updateRevision`` may name the revision a rollout is leaving.
    """
    status = sts.get("status") or {}
    revision = status.get("updateRevision")
    generation = (sts.get("metadata") or {}).get("generation", 1)
    if not revision or status.get("observedGeneration", 0) < generation:
        return 0
    return sum(
        1
        for pod in pods
        if (pod.get("metadata") or {}).get("labels", {}).get(o.REVISION_LABEL) == revision
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
        and diagnosis.is_true(pod, "Ready")
    )


def inference_set_of(ws: WorkspaceBase) -> str | None:
    """The InferenceSet this Workspace is a replica of (its pods then carry the set's label)."""
    return (ws.metadata.labels or {}).get(C.LABEL_INFERENCESET_CREATED_BY)


def template_problem(template: Mapping[str, Any]) -> str | None:
    """What makes ``inference.template`` unusable as a pod template, naming the field."""
    spec = template.get("spec")
    if not isinstance(spec, Mapping):
        return "inference.template.spec: a pod template needs a spec with its containers"
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return "inference.template.spec.containers: a pod template needs at least one container"
    for path, value, kind in (
        ("metadata", template.get("metadata"), Mapping),
        ("metadata.labels", (template.get("metadata") or {}).get("labels"), Mapping),
        ("metadata.annotations", (template.get("metadata") or {}).get("annotations"), Mapping),
        ("spec.tolerations", spec.get("tolerations"), list),
        ("spec.affinity", spec.get("affinity"), Mapping),
    ):
        if value is not None and not isinstance(value, kind):
            what = "a list" if kind is list else "a mapping"
            return f"inference.template.{path}: expected {what}"
    return None
