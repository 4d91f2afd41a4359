"""The tuning path of a Workspace: a Job per spec revision whose outcome is the Workspace's.

The Job downloads the data, fetches the weights, trains and publishes the adapter (see
``controllers.tuning`` for its shape); this part decides when to (re)create it, which
training config it reads, and what its state means for the Workspace's conditions.
"""

from __future__ import annotations

import contextlib
from typing import Any

from kaito.api import TuningSpec, WorkspaceBase
from kaito.api import constants as C
from kaito.api.constants import ConditionType, Reason, WorkspaceState
from kaito.controllers import configs, diagnosis, tuning
from kaito.controllers import objects as o
from kaito.controllers.apply import Applier
from kaito.controllers.common import Facts, WorkspaceSettings, weights_source
from kaito.presets import SpecError
from kaito.presets import tuning as tuning_config
from kaito.presets.plan import Plan
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.errors import AlreadyExists
from kaito.runtime.events import EventRecorder
from kaito.runtime.gvk import CONFIGMAP, JOB, POD
from kaito.runtime.objects import to_dict
from kaito.runtime.request import Result


class TuningRun:
    """Reconciles the tuning Job of one Workspace (called by the workspace reconciler)."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        recorder: EventRecorder,
        settings: WorkspaceSettings,
        applier: Applier,
    ) -> None:
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.settings = settings
        self.applier = applier
        # (uid, spec revision, ConfigMap resourceVersion) -> (ConfigMap, output_dir)
        self._configs: dict[tuple[str, str, str], tuple[str, str]] = {}

    async def reconcile(
        self,
        ws: WorkspaceBase,
        plan: Plan,
        owner: o.Owner,
        revision: str,
        *,
        byo: bool,
        facts: Facts,
    ) -> Result | None:
        """The tuning Job: (re)created per spec revision; its outcome is the Workspace's."""
        spec = ws.tuning
        assert spec is not None and plan.preset is not None and plan.sku is not None
        try:
            config_map, out_dir = await self._config_for(ws, owner, revision)
            job_input, job_output = tuning_io(spec)
        except SpecError as exc:
            facts.set(ConditionType.JOB_STARTED, False, "InvalidSpec", str(exc))
            facts.set(ConditionType.WORKSPACE_SUCCEEDED, False, Reason.WORKSPACE_FAILED, str(exc))
            return None  # a fix to the spec or to its ConfigMap wakes the Workspace
        options = spec.preset.preset_options
        weights_image, weights_secrets = weights_source(
            plan.preset.image_repository,
            plan.preset.image_tag,
            options,
            self.settings.preset_registry,
        )
        desired = tuning.job(
            tuning.TuningJob(
                owner=owner,
                image=self.settings.serving_image,
                revision=revision,
                method=spec.method,
                preset=plan.preset.name,
                model=plan.preset.model_ref,
                config_map=config_map,
                input=job_input,
                output=job_output,
                gpus=plan.sku.gpu_count,
                node_selector_labels=ws.resource.label_selector.match_labels or {},
                provisioned=not byo,
                output_dir=out_dir,
                model_access_secret=options.model_access_secret if options else None,
                weights_image=weights_image,
                image_pull_secrets=weights_secrets,
                plain_http_registries=self.settings.plain_http_registries,
                env=(
                    {"HF_ENDPOINT": self.settings.hub_endpoint}
                    if self.settings.hub_endpoint and not weights_image
                    else {}
                ),
            )
        )
        current_obj = self.cache.get(JOB, ws.namespace, ws.name)
        current = to_dict(current_obj) if current_obj is not None else None
        if current is not None:
            have = (current["metadata"].get("annotations") or {}).get(
                C.ANNOTATION_WORKSPACE_REVISION
            )
            if have != revision and not current["metadata"].get("deletionTimestamp"):
                # a Job's pod template is immutable: a new spec means a new Job
                await self.client.delete(
                    JOB,
                    ws.namespace,
                    ws.name,
                    propagation_policy="Foreground",
                    ignore_not_found=True,
                )
                self.recorder.event(ws, "Normal", "TuningJobReplaced", f"spec revision {revision}")
            if have != revision:
                facts.set(
                    ConditionType.JOB_STARTED,
                    None,
                    Reason.TUNING_JOB_PENDING,
                    "replacing the tuning Job",
                )
                facts.set(
                    ConditionType.WORKSPACE_SUCCEEDED,
                    False,
                    Reason.WORKSPACE_PENDING,
                    "replacing the tuning Job",
                )
                return Result(requeue_after=1.0)
        else:
            with contextlib.suppress(AlreadyExists):
                await self.client.create(desired)
                self.recorder.event(ws, "Normal", "TuningJobCreated", f"Job {ws.name} created")
            current = desired
        self.status_from_job(ws, current, facts)
        return None

    def forget(self, uid: str) -> None:
        """Drop what was remembered of a deleted Workspace."""
        self._configs = {k: v for k, v in self._configs.items() if k[0] != uid}

    async def _config_for(
        self, ws: WorkspaceBase, owner: o.Owner, revision: str
    ) -> tuple[str, str]:
        """The ConfigMap the trainer reads (the user's, validated, or our default) and the
        output_dir it sets; worked out once per spec revision and ConfigMap version."""
        spec = ws.tuning
        assert spec is not None
        text, version = None, ""
        if spec.config:
            text, version = configs.config_text(
                self.cache,
                ws.namespace,
                spec.config,
                key=tuning_config.CONFIG_KEY,
                field="tuning.config",
            )
        uid = ws.metadata.uid or ws.name
        key = (uid, revision, version)
        found = self._configs.get(key)
        if found is not None:
            return found
        if spec.config and text is not None:
            parsed = tuning_config.parse_training_config(text, spec.method)
            found = (spec.config, tuning_config.output_dir(parsed))
        else:
            default = tuning.default_config_map(owner, spec.method)
            await self.applier.apply_if_changed(CONFIGMAP, default)
            found = (default["metadata"]["name"], tuning_config.DEFAULT_OUTPUT_DIR)
        self._configs = {k: v for k, v in self._configs.items() if k[0] != uid}
        self._configs[key] = found
        return found

    def status_from_job(self, ws: WorkspaceBase, job: dict[str, Any], facts: Facts) -> None:
        status = job.get("status") or {}
        failed = diagnosis.condition_of(job, "Failed")
        if diagnosis.is_true(job, "Complete") or diagnosis.is_true(job, "SuccessCriteriaMet"):
            facts.set(ConditionType.JOB_STARTED, True, Reason.TUNING_JOB_STARTED, "tuning Job ran")
            facts.set(
                ConditionType.WORKSPACE_SUCCEEDED,
                True,
                Reason.WORKSPACE_SUCCEEDED,
                "tuning Job succeeded; the adapter is published",
            )
            facts.state = WorkspaceState.SUCCEEDED
            return
        if failed is not None and failed.get("status") == "True":
            why = (
                self._tuning_failure(ws) or failed.get("message") or failed.get("reason", "failed")
            )
            facts.set(ConditionType.JOB_STARTED, False, Reason.TUNING_JOB_FAILED, why)
            facts.set(ConditionType.WORKSPACE_SUCCEEDED, False, Reason.WORKSPACE_FAILED, why)
            facts.state = WorkspaceState.FAILED
            return
        if status.get("active") or status.get("ready") or status.get("succeeded"):
            facts.set(
                ConditionType.JOB_STARTED, True, Reason.TUNING_JOB_STARTED, "tuning Job is running"
            )
            facts.state = WorkspaceState.RUNNING
        else:
            pods = [
                to_dict(p)
                for p in self.cache.list(
                    POD, namespace=ws.namespace, labels={C.LABEL_WORKSPACE_NAME: ws.name}
                )
            ]
            problem = diagnosis.pods_problem(pods)
            reason, message = (
                (problem.reason, problem.message)
                if problem
                else (Reason.TUNING_JOB_PENDING, "tuning Job is pending")
            )
            facts.set(ConditionType.JOB_STARTED, False, reason, message)
        facts.set(
            ConditionType.WORKSPACE_SUCCEEDED,
            False,
            Reason.WORKSPACE_PENDING,
            "tuning is in progress",
        )

    def _tuning_failure(self, ws: WorkspaceBase) -> str | None:
        """The one-line reason a failed stage wrote to its termination log."""
        for obj in self.cache.list(
            POD, namespace=ws.namespace, labels={C.LABEL_WORKSPACE_NAME: ws.name}
        ):
            pod = to_dict(obj)
            status = pod.get("status") or {}
            for cs in [
                *(status.get("initContainerStatuses") or ()),
                *(status.get("containerStatuses") or ()),
            ]:
                term = (cs.get("state") or {}).get("terminated") or {}
                if term.get("exitCode") not in (None, 0):
                    text = (term.get("message") or term.get("reason") or "").strip()
                    return f"{cs.get('name')} failed (exit code {term['exitCode']}): {text}"
        return None


def tuning_io(
    spec: TuningSpec,
) -> tuple[
    tuning.UrlInput | tuning.ImageInput | tuning.VolumeInput,
    tuning.ImageOutput | tuning.VolumeOutput,
]:
    """The Job's input and output stages from ``tuning.input`` / ``tuning.output``."""
    src, dst = spec.input, spec.output
    job_input: tuning.UrlInput | tuning.ImageInput | tuning.VolumeInput
    if src.urls:
        job_input = tuning.UrlInput(tuple(src.urls))
    elif src.image:
        job_input = tuning.ImageInput(src.image, tuple(src.image_pull_secrets or ()))
    elif src.volume_source:
        job_input = tuning.VolumeInput(dict(src.volume_source))
    else:
        raise SpecError("tuning.input", "set one of urls, image or volumeSource")
    job_output: tuning.ImageOutput | tuning.VolumeOutput
    if dst.image:
        if not dst.image_push_secret:
            raise SpecError("tuning.output.imagePushSecret", "required with tuning.output.image")
        job_output = tuning.ImageOutput(dst.image, dst.image_push_secret)
    elif dst.volume_source:
        job_output = tuning.VolumeOutput(dict(dst.volume_source))
    else:
        raise SpecError("tuning.output", "set one of image (+ imagePushSecret) or volumeSource")
    return job_input, job_output
