"""A StatefulSet shaped like the one the workspace controller generates for a preset with one
image adapter: an init container per adapter running ``serving.fetch`` with the projected pull
secret, and the main container running ``python3 -m serving`` with vLLM flags."""

from __future__ import annotations

from typing import Any


def statefulset(image: str, secret: str) -> dict[str, Any]:
    docker_mount = "/root/.docker/config.d/adapter-a-inference-adapter"
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "ws-tiny",
            "namespace": "default",
            "labels": {"kaito.sh/workspace": "ws-tiny"},
        },
        "spec": {
            "replicas": 1,
            "serviceName": "ws-tiny-headless",
            "selector": {"matchLabels": {"kaito.sh/workspace": "ws-tiny"}},
            "template": {
                "metadata": {"labels": {"kaito.sh/workspace": "ws-tiny"}},
                "spec": {
                    "imagePullSecrets": [{"name": secret}],
                    "initContainers": [
                        {
                            "name": "puller-adapter-a",
                            "image": "kaito-serving:test",
                            "command": ["python3", "-m", "serving.fetch"],
                            "args": [
                                "--image",
                                image,
                                "--dest",
                                "/mnt/adapter/adapter-a",
                                "--docker-config",
                                docker_mount,
                            ],
                            "volumeMounts": [
                                {"name": "adapter-volume", "mountPath": "/mnt/adapter"},
                                {
                                    "name": "docker-config-adapter-a-inference-adapter",
                                    "mountPath": docker_mount,
                                    "readOnly": True,
                                },
                            ],
                        }
                    ],
                    "containers": [
                        {
                            "name": "ws-tiny",
                            "image": "kaito-serving:test",
                            "command": ["python3", "-m", "serving"],
                            "args": [
                                "--model",
                                "/workspace/weights",
                                "--served-model-name",
                                "tiny",
                                "--dtype",
                                "float32",
                                "--max-model-len",
                                "256",
                                "--enforce-eager",
                                "--port",
                                "5000",
                                "--enable-lora",
                                "--max-lora-rank",
                                "8",
                                "--adapter-strength",
                                "adapter-a=1.0",
                            ],
                            "env": [
                                {"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"},
                                {"name": "adapter-a", "value": "1.0"},
                                {
                                    "name": "HF_TOKEN",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": "hf",
                                            "key": "HF_TOKEN",
                                            "optional": True,
                                        }
                                    },
                                },
                            ],
                            "ports": [{"name": "http", "containerPort": 5000}],
                            "volumeMounts": [
                                {"name": "dshm", "mountPath": "/dev/shm"},
                                {"name": "model-weights-volume", "mountPath": "/workspace/weights"},
                                {"name": "adapter-volume", "mountPath": "/mnt/adapter"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                        {"name": "model-weights-volume", "emptyDir": {}},
                        {"name": "adapter-volume", "emptyDir": {}},
                        {
                            "name": "docker-config-adapter-a-inference-adapter",
                            "projected": {
                                "sources": [
                                    {
                                        "secret": {
                                            "name": secret,
                                            "items": [
                                                {
                                                    "key": ".dockerconfigjson",
                                                    "path": f"{secret}.json",
                                                }
                                            ],
                                        }
                                    }
                                ]
                            },
                        },
                    ],
                },
            },
        },
    }
