"""Shapes of the tuning Job and of the default training ConfigMap."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kaito.controllers import tuning as tj
from kaito.controllers.objects import WEIGHTS_FETCHER, Owner
from kaito.presets import tuning as t
from kaito.presets.errors import SpecError

OWNER = Owner(name="workspace-tuning-phi-3", namespace="default", uid="u-9")
URLS = ("https://example.com/data/train.parquet", "https://example.com/more.parquet")


def spec(**overrides: Any) -> tj.TuningJob:
    base: dict[str, Any] = {
        "owner": OWNER,
        "image": "kaito/serving:1",
        "revision": "3",
        "method": "qlora",
        "preset": "phi-3-mini-4k-instruct",
        "model": "microsoft/Phi-3-mini-4k-instruct",
        "config_map": "workspace-tuning-phi-3-qlora-params",
        "input": tj.UrlInput(URLS),
        "output": tj.ImageOutput("registry.example.com/adapters/phi-3:v1", "push-secret"),
        "gpus": 1,
        "node_selector_labels": {"apps": "tuning", "kaito.sh/workspace": "spoofed"},
    }
    base.update(overrides)
    return tj.TuningJob(**base)


def pod(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = job["spec"]["template"]["spec"]
    return result


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container["volumeMounts"]}


def test_job_metadata_owner_and_retry_policy() -> None:
    job = tj.job(spec())
    meta = job["metadata"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert meta["name"] == OWNER.name and meta["namespace"] == "default"
    assert meta["labels"] == {"kaito.sh/workspace": OWNER.name}
    assert meta["annotations"] == {"workspace.kaito.io/revision": "3"}
    ref = meta["ownerReferences"][0]
    assert (ref["uid"], ref["controller"], ref["kind"]) == ("u-9", True, "Workspace")
    assert job["spec"]["backoffLimit"] == tj.BACKOFF_LIMIT
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"operator": "In", "values": [2]},
    }
    template = job["spec"]["template"]
    assert template["metadata"]["labels"] == {"kaito.sh/workspace": OWNER.name}
    assert template["metadata"]["annotations"]["workspace.kaito.io/revision"] == "3"
    assert pod(job)["restartPolicy"] == "Never"


def test_url_input_then_trainer_then_pusher() -> None:
    p = pod(tj.job(spec()))
    assert [c["name"] for c in p["initContainers"]] == [tj.DOWNLOADER, tj.TRAINER]
    assert [c["name"] for c in p["containers"]] == [tj.PUSHER]
    downloader, trainer = p["initContainers"]
    assert downloader["command"] == ["python3", "-m", "serving.tuning.download"]
    assert downloader["args"] == ["--urls", *URLS, "--dest", "/mnt/data"]
    assert downloader["image"] == trainer["image"] == "kaito/serving:1"
    assert mounts(downloader) == {"data-volume": "/mnt/data"}
    assert trainer["command"] == ["python3", "-m", "serving.tuning.train"]
    assert trainer["args"] == [
        "--config",
        "/mnt/config/training_config.yaml",
        "--data",
        "/mnt/data",
        "--output",
        "/mnt/results",
        "--model",
        "microsoft/Phi-3-mini-4k-instruct",
    ]
    assert mounts(trainer) == {
        "dshm": "/dev/shm",
        "config-volume": "/mnt/config",
        "data-volume": "/mnt/data",
        "results-volume": "/mnt/results",
        "model-weights-volume": "/workspace/weights",
    }
    assert trainer["resources"] == {
        "requests": {"nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }
    env = {e["name"]: e.get("value") for e in trainer["env"]}
    assert env["DEFAULT_TARGET_MODULES"] == tj.PHI3_TARGET_MODULES
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert all(
        c["terminationMessagePolicy"] == "FallbackToLogsOnError" for c in p["initContainers"]
    )


def test_pusher_gets_the_push_secret_as_docker_config_json() -> None:
    p = pod(tj.job(spec()))
    pusher = p["containers"][0]
    assert pusher["command"] == ["python3", "-m", "serving.tuning.push"]
    assert pusher["args"] == [
        "--source",
        "/mnt/results",
        "--image",
        "registry.example.com/adapters/phi-3:v1",
        "--docker-config",
        "/root/.docker/config.json",
        "--model-name",
        "phi-3-mini-4k-instruct",
    ]
    assert mounts(pusher) == {
        "results-volume": "/mnt/results",
        "push-docker-config": "/root/.docker",
    }
    assert "resources" not in pusher  # no GPU held while pushing
    volumes = by_name(p["volumes"])
    secret = volumes["push-docker-config"]["projected"]["sources"][0]["secret"]
    assert secret == {
        "name": "push-secret",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
    }
    assert volumes["results-volume"] == {"name": "results-volume", "emptyDir": {}}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    assert volumes["config-volume"]["configMap"] == {"name": "workspace-tuning-phi-3-qlora-params"}
    annotations = tj.job(spec())["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/default-container"] == tj.PUSHER


def test_image_input_with_pull_secrets() -> None:
    source = tj.ImageInput("registry.example.com/data/train:1", ("pull-a", "pull-b"))
    p = pod(tj.job(spec(input=source)))
    puller = p["initContainers"][0]
    secret_dir = f"/root/.docker/config.d/{OWNER.name}-tuning-input"
    assert puller["name"] == tj.PULLER
    assert puller["command"] == ["python3", "-m", "serving.fetch"]
    assert puller["args"] == [
        "--image",
        "registry.example.com/data/train:1",
        "--dest",
        "/mnt/data",
        "--docker-config",
        secret_dir,
    ]
    assert mounts(puller)["input-docker-config"] == secret_dir
    sources = by_name(p["volumes"])["input-docker-config"]["projected"]["sources"]
    assert [s["secret"]["items"][0]["path"] for s in sources] == ["pull-a.json", "pull-b.json"]
    no_secret = pod(tj.job(spec(input=tj.ImageInput("r.example.com/d:1"))))
    assert "--docker-config" not in no_secret["initContainers"][0]["args"]


def test_volume_input_and_volume_output_need_no_stage_containers() -> None:
    pvc_in = {"persistentVolumeClaim": {"claimName": "train-data"}}
    pvc_out = {"persistentVolumeClaim": {"claimName": "adapters"}}
    p = pod(
        tj.job(
            spec(
                input=tj.VolumeInput(pvc_in),
                output=tj.VolumeOutput(pvc_out),
                output_dir="/mnt/output",
            )
        )
    )
    assert p["initContainers"] == []
    assert [c["name"] for c in p["containers"]] == [tj.TRAINER]
    volumes = by_name(p["volumes"])
    assert volumes["data-volume"] == {"name": "data-volume", **pvc_in}
    assert volumes["results-volume"] == {"name": "results-volume", **pvc_out}
    assert "push-docker-config" not in volumes
    trainer = p["containers"][0]
    assert mounts(trainer)["results-volume"] == "/mnt/output"
    assert trainer["args"][trainer["args"].index("--output") + 1] == "/mnt/output"


def test_affinity_tolerations_and_reserved_labels() -> None:
    p = pod(tj.job(spec()))
    terms = p["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    wanted = {e["key"]: e["values"] for e in terms["nodeSelectorTerms"][0]["matchExpressions"]}
    assert wanted == {
        "apps": ["tuning"],
        "kaito.sh/workspace": [OWNER.name],  # the user's spoofed value is replaced
        "kaito.sh/workspacenamespace": ["default"],
    }
    byo = pod(tj.job(spec(provisioned=False)))
    terms = byo["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    keys = [e["key"] for e in terms["nodeSelectorTerms"][0]["matchExpressions"]]
    assert keys == ["apps"]
    assert "affinity" not in pod(tj.job(spec(provisioned=False, node_selector_labels={})))
    tolerations = {tol["key"] for tol in p["tolerations"]}
    assert tolerations == {"nvidia.com/gpu", "sku"}


def test_multi_gpu_runs_under_torchrun_and_cpu_requests_nothing() -> None:
    trainer = pod(tj.job(spec(gpus=4)))["initContainers"][-1]
    assert trainer["command"] == ["torchrun", "--nproc_per_node=4", "-m"]
    assert trainer["args"][0] == "serving.tuning.train"
    assert trainer["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    cpu = pod(tj.job(spec(gpus=0)))["initContainers"][-1]
    assert "resources" not in cpu


def test_weights_image_secret_env_and_pull_secrets() -> None:
    job = tj.job(
        spec(
            weights_image="registry.example.com/kaito-phi-3:0.1",
            model="/workspace/weights",
            model_access_secret="hf-token",
            image_pull_secrets=("acr", "acr"),
            env={"EXTRA": "1"},
            preset="llama-3.1-8b-instruct",
        )
    )
    p = pod(job)
    names = [c["name"] for c in p["initContainers"]]
    assert names == [tj.DOWNLOADER, WEIGHTS_FETCHER, tj.TRAINER]
    weights = p["initContainers"][1]
    assert weights["args"] == [
        "--image",
        "registry.example.com/kaito-phi-3:0.1",
        "--dest",
        "/workspace/weights",
        "--docker-config",  # the pull secret is the weights fetcher's credential
        "/root/.docker/config.d/model-weights",
    ]
    assert any(v["name"] == "weights-docker-config" for v in p["volumes"])
    trainer = p["initContainers"][2]
    env = {e["name"]: e for e in trainer["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    assert env["EXTRA"]["value"] == "1"
    assert "DEFAULT_TARGET_MODULES" not in env  # only phi-3 needs explicit modules
    assert p["imagePullSecrets"] == [{"name": "acr"}]


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(SpecError):
        tj.job(spec(method="full"))


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_default_config_map(method: str) -> None:
    cm = tj.default_config_map(OWNER, method)
    assert cm["metadata"]["name"] == f"{OWNER.name}-{method}-params"
    assert cm["metadata"]["name"] == tj.default_config_map_name(OWNER, method.upper())
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "u-9"
    assert cm["metadata"]["labels"] == {"kaito.sh/workspace": OWNER.name}
    parsed = yaml.safe_load(cm["data"]["training_config.yaml"])
    assert parsed == t.default_config(method)
    assert t.validate_training_config(parsed, method) == parsed


def test_every_stage_that_talks_to_a_plain_http_registry_says_so() -> None:
    local = "10.250.0.1:5000"
    job = tj.job(
        spec(
            input=tj.ImageInput(f"{local}/data/train:1"),
            output=tj.ImageOutput(f"{local}/adapters/phi-3:v1", "push-secret"),
            weights_image="registry.example.com/weights:1",
            plain_http_registries=frozenset({local}),
        )
    )
    p = pod(job)
    stages = by_name([*p["initContainers"], *p["containers"]])
    assert "--plain-http" in stages[tj.PULLER]["args"]
    assert "--plain-http" in stages[tj.PUSHER]["args"]
    assert "--plain-http" not in stages[tj.WEIGHTS_FETCHER]["args"]  # another registry
