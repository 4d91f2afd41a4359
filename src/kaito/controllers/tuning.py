"""The tuning Job and its default training ConfigMap, built as plain dicts from plain inputs.

Pod layout (all stages run the serving image, ``python3 -m serving.tuning.*``):

- init ``data-downloader`` (input URLs) or ``data-puller`` (input image) fills ``/mnt/data``;
  an input ``volumeSource`` is mounted there instead;
- init ``model-weights-downloader`` fills ``/workspace/weights`` when weights ship as an image;
- ``trainer`` writes the peft adapter and ``fine_tuning_completed.txt`` to the output_dir;
- with an output image, ``pusher`` publishes the adapter with the push secret.

With an output image the trainer is the last *init* container and the pusher the only main
container: the kubelet runs them strictly in order and a failed trainer fails the pod, so no
sidecar has to watch for a marker that never comes (upstream's pusher + pause + shared process
namespace). With an output volume the trainer is the main container.

Stages exit 2 on bad input (unreachable URL, not parquet, rejected credentials, invalid
config); the pod failure policy fails the Job at once on that code instead of retrying, and
each stage writes its one-line reason to the termination log the controller reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaito.controllers.objects import (
    CONFIG_DIR,
    GPU_RESOURCE,
    GPU_TOLERATIONS,
    PULL_SECRET_ROOT,
    REVISION_ANNOTATION,
    TERMINATION_MESSAGE_POLICY,
    WEIGHTS_DIR,
    WEIGHTS_FETCHER,
    WORKSPACE_LABEL,
    Owner,
    node_affinity,
    owned_metadata,
    plain_http_flag,
)
from kaito.presets.tuning import CONFIG_KEY, DEFAULT_OUTPUT_DIR, check_method, default_config_yaml

DATA_DIR = "/mnt/data"
DOCKER_CONFIG_DIR = "/root/.docker"
BAD_INPUT_EXIT_CODE = 2  # serving.tuning.report.EXIT_BAD_INPUT
BACKOFF_LIMIT = 2
DOWNLOADER = "data-downloader"
PULLER = "data-puller"
TRAINER = "trainer"
PUSHER = "pusher"
PHI3_TARGET_MODULES = "k_proj,q_proj,v_proj,o_proj,gate_proj,down_proj,up_proj"


@dataclass(frozen=True)
class UrlInput:
    """Parquet files downloaded over http(s) into /mnt/data."""

    urls: tuple[str, ...]


@dataclass(frozen=True)
class ImageInput:
    """Training data shipped as an image whose layer holds /data, copied into /mnt/data."""

    image: str
    pull_secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class VolumeInput:
    """Training data already on a volume, mounted at /mnt/data."""

    volume_source: Mapping[str, Any]


@dataclass(frozen=True)
class ImageOutput:
    """Publish the adapter as ``image`` with the dockerconfigjson Secret ``push_secret``."""

    image: str
    push_secret: str


@dataclass(frozen=True)
class VolumeOutput:
    """Leave the adapter on a volume mounted at the output_dir."""

    volume_source: Mapping[str, Any]


@dataclass(frozen=True)
class TuningJob:
    """Everything the tuning Job depends on; the reconciler fills it from the Workspace."""

    owner: Owner
    image: str  # the serving image (it carries serving.tuning)
    revision: str
    method: str  # lora | qlora
    preset: str
    model: str  # Preset.model_ref: a path under /workspace/weights or a hub id
    config_map: str  # tuning.config, or the name from default_config_map()
    input: UrlInput | ImageInput | VolumeInput
    output: ImageOutput | VolumeOutput
    gpus: int
    node_selector_labels: Mapping[str, str] = field(default_factory=dict)
    provisioned: bool = True  # nodes made for this Workspace carry its ownership labels
    output_dir: str = DEFAULT_OUTPUT_DIR  # kaito.presets.tuning.output_dir(config)
    weights_image: str | None = None  # fetched into /workspace/weights when set
    model_access_secret: str | None = None  # HF_TOKEN for gated hub models
    image_pull_secrets: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    backoff_limit: int = BACKOFF_LIMIT
    plain_http_registries: frozenset[str] = frozenset()


def default_config_map_name(owner: Owner, method: str) -> str:
    return f"{owner.name}-{check_method(method)}-params"[:253]


def default_config_map(owner: Owner, method: str) -> dict[str, Any]:
    """The lora/qlora defaults as a Workspace-owned ConfigMap (when tuning.config is unset)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owned_metadata(owner, default_config_map_name(owner, method)),
        "data": {CONFIG_KEY: default_config_yaml(method)},
    }


def _container(
    name: str, image: str, module: str, args: list[str], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": ["python3", "-m", module],
        "args": args,
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "volumeMounts": mounts,
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }


def _data_mount() -> dict[str, Any]:
    return {"name": "data-volume", "mountPath": DATA_DIR}


def _input_stage(job: TuningJob) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Init containers and volumes that put the training data at /mnt/data."""
    source = job.input
    if isinstance(source, VolumeInput):
        return [], [{"name": "data-volume", **dict(source.volume_source)}]
    volumes: list[dict[str, Any]] = [{"name": "data-volume", "emptyDir": {}}]
    if isinstance(source, UrlInput):
        args = ["--urls", *source.urls, "--dest", DATA_DIR]
        stage = _container(DOWNLOADER, job.image, "serving.tuning.download", args, [_data_mount()])
        return [stage], volumes
    args = ["--image", source.image, "--dest", DATA_DIR]
    args += plain_http_flag(source.image, job.plain_http_registries)
    mounts = [_data_mount()]
    if source.pull_secrets:
        secret_dir = f"{PULL_SECRET_ROOT}/{job.owner.name}-tuning-input"
        args += ["--docker-config", secret_dir]
        mounts.append({"name": "input-docker-config", "mountPath": secret_dir, "readOnly": True})
        volumes.append(_dockerconfig_volume("input-docker-config", source.pull_secrets))
    return [_container(PULLER, job.image, "serving.fetch", args, mounts)], volumes


def _dockerconfig_volume(
    name: str, secrets: Sequence[str], *, single: bool = False
) -> dict[str, Any]:
    """Secrets' .dockerconfigjson as files: ``config.json`` for one, ``<secret>.json`` each else."""
    return {
        "name": name,
        "projected": {
            "sources": [
                {
                    "secret": {
                        "name": secret,
                        "items": [
                            {
                                "key": ".dockerconfigjson",
                                "path": "config.json" if single else f"{secret}.json",
                            }
                        ],
                    }
                }
                for secret in secrets
            ]
        },
    }


def _trainer(job: TuningJob) -> dict[str, Any]:
    env: dict[str, str] = {
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        "HF_HOME": f"{WEIGHTS_DIR}/.cache",
        "KAITO_MODEL": job.model,
        "PYTHONUNBUFFERED": "1",
    }
    if job.preset.lower().startswith("phi-3"):
        env["DEFAULT_TARGET_MODULES"] = PHI3_TARGET_MODULES
    env |= dict(job.env)
    args = [
        "--config",
        f"{CONFIG_DIR}/{CONFIG_KEY}",
        "--data",
        DATA_DIR,
        "--output",
        job.output_dir,
        "--model",
        job.model,
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "config-volume", "mountPath": CONFIG_DIR, "readOnly": True},
        _data_mount(),
        {"name": "results-volume", "mountPath": job.output_dir},
        {"name": "model-weights-volume", "mountPath": WEIGHTS_DIR},
    ]
    container = _container(TRAINER, job.image, "serving.tuning.train", args, mounts)
    if job.gpus > 1:  # one process per GPU (DDP); the module runs under torchrun
        container["command"] = ["torchrun", f"--nproc_per_node={job.gpus}", "-m"]
        container["args"] = ["serving.tuning.train", *args]
    container["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    if job.model_access_secret:
        container["env"].append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": job.model_access_secret,
                        "key": "HF_TOKEN",
                        "optional": True,
                    }
                },
            }
        )
    if job.gpus:
        gpu = {GPU_RESOURCE: str(job.gpus)}
        container["resources"] = {"requests": dict(gpu), "limits": dict(gpu)}
    return container


def _pusher(job: TuningJob, output: ImageOutput) -> dict[str, Any]:
    args = [
        "--source",
        job.output_dir,
        "--image",
        output.image,
        "--docker-config",
        f"{DOCKER_CONFIG_DIR}/config.json",
        "--model-name",
        job.preset,
        *plain_http_flag(output.image, job.plain_http_registries),
    ]
    mounts = [
        {"name": "results-volume", "mountPath": job.output_dir, "readOnly": True},
        {"name": "push-docker-config", "mountPath": DOCKER_CONFIG_DIR, "readOnly": True},
    ]
    return _container(PUSHER, job.image, "serving.tuning.push", args, mounts)


def job(spec: TuningJob) -> dict[str, Any]:
    """The batch/v1 Job ``<workspace>`` that downloads, trains and publishes one adapter."""
    check_method(spec.method)
    owner = spec.owner
    init_containers, volumes = _input_stage(spec)
    volumes += [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "config-volume", "configMap": {"name": spec.config_map}},
        {"name": "model-weights-volume", "emptyDir": {}},
    ]
    if spec.weights_image:
        args = ["--image", spec.weights_image, "--dest", WEIGHTS_DIR]
        args += plain_http_flag(spec.weights_image, spec.plain_http_registries)
        mounts: list[dict[str, Any]] = [{"name": "model-weights-volume", "mountPath": WEIGHTS_DIR}]
        if spec.image_pull_secrets:
            secret_dir = f"{PULL_SECRET_ROOT}/model-weights"
            args += ["--docker-config", secret_dir]
            mounts.append(
                {"name": "weights-docker-config", "mountPath": secret_dir, "readOnly": True}
            )
            volumes.append(_dockerconfig_volume("weights-docker-config", spec.image_pull_secrets))
        init_containers.append(
            _container(WEIGHTS_FETCHER, spec.image, "serving.fetch", args, mounts)
        )
    trainer = _trainer(spec)
    if isinstance(spec.output, ImageOutput):
        volumes.append({"name": "results-volume", "emptyDir": {}})
        volumes.append(
            _dockerconfig_volume("push-docker-config", [spec.output.push_secret], single=True)
        )
        init_containers.append(trainer)
        containers = [_pusher(spec, spec.output)]
    else:
        volumes.append({"name": "results-volume", **dict(spec.output.volume_source)})
        containers = [trainer]

    pod_labels = {WORKSPACE_LABEL: owner.name}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "initContainers": init_containers,
        "containers": containers,
        "volumes": volumes,
        "tolerations": [dict(t) for t in GPU_TOLERATIONS],
    }
    affinity = node_affinity(owner, spec.node_selector_labels, provisioned=spec.provisioned)
    if affinity:
        pod_spec["affinity"] = affinity
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in sorted(set(spec.image_pull_secrets))]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owned_metadata(owner, owner.name, spec.revision),
        "spec": {
            "backoffLimit": spec.backoff_limit,
            "podFailurePolicy": {
                "rules": [
                    {
                        # bad input: another pod would fail the same way
                        "action": "FailJob",
                        "onExitCodes": {"operator": "In", "values": [BAD_INPUT_EXIT_CODE]},
                    },
                    {
                        # node drained or preempted: not the Job's fault, not a retry spent
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget"}],
                    },
                ]
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        REVISION_ANNOTATION: spec.revision,
                        "kubectl.kubernetes.io/default-container": containers[0]["name"],
                    },
                },
                "spec": pod_spec,
            },
        },
    }
