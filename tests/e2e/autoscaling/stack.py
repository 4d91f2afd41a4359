"""Everything an InferenceSet autoscaling run needs, real parts only, started in order.

* a control plane of its own: kube-apiserver with the aggregation layer's front-proxy flags,
  kube-controller-manager with a 2 s HorizontalPodAutoscaler sync (both through hack/cluster's
  per-component ``KAITO_<COMPONENT>_EXTRA_ARGS``);
* the operator (KWOK backend; the set's replicas land on the process node below, as BYO nodes);
* a registry holding the tiny test model as the preset image (the seed's way of shipping weights);
* Prometheus discovering the replicas' pods from the API server (kubernetes_sd) and scraping
  vLLM's /metrics on each pod IP;
* prometheus-adapter serving those series as custom.metrics.k8s.io through an APIService;
* a process node running each pod as a real vLLM CPU server on its own loopback IP.

The e2e test and ``bench/inferenceset_autoscale.py`` use it alike.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hack.registry import LocalRegistry

from ..conftest import REPO, Cluster, hack_cluster
from ..controllers.conftest import Operator, install_crds
from ..kube_http import KubeHttp
from ..metrics_adapter import MetricsAdapter, front_proxy_args
from ..process_node import ProcessNode
from ..prometheus_support import Prometheus, free_port
from ..serving_support import push_tiny_model, serving_python

HPA_SYNC = "--horizontal-pod-autoscaler-sync-period=2s"
INSTANCE_TYPE = "Standard_D4s_v5"  # a CPU size: the tiny preset runs on vLLM's CPU build
NODE_LABEL = "kaito-autoscaling"
CONFIG_MAP = "tiny-vllm"
PULL_SECRET = "tiny-registry"
CREATED_BY = "inferenceset.kaito.sh/created-by"
# the HPA: 1..2 replicas on the queue, threshold 2 waiting per replica, steps a few seconds apart
AUTOSCALING = {
    "scaledobject.kaito.sh/auto-provision": "true",
    "scaledobject.kaito.sh/metricName": "vllm:num_requests_waiting",
    "scaledobject.kaito.sh/threshold": "2",
    "scaledobject.kaito.sh/max-replicas": "2",
    "scaledobject.kaito.sh/evaluationwindow": "0",
    "scaledobject.kaito.sh/scaleupcooldown": "5",
    "scaledobject.kaito.sh/scaledowncooldown": "20",
}
# one sequence at a time, so concurrent requests queue and vllm:num_requests_waiting moves;
# eager mode skips torch.compile, the longest part of a CPU server's start on a busy machine
VLLM_CONFIG = "vllm:\n  max-num-seqs: 1\n  enforce-eager: true\n"


def missing_tools() -> str | None:
    """Why this stack cannot run here, or None."""
    if serving_python() is None:
        return "serving venv absent: run hack/serving-env"
    for tool in ("docker-registry", "skopeo", "prometheus", "go", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (hack/setup installs it)"
    return None


def scrape_config(targets: Path) -> dict[str, Any]:
    """vLLM on every pod the process node runs, labelled with the pod's namespace and name.

    Debian's Prometheus is built without Kubernetes service discovery, so the process node
    writes the pod targets to a file_sd file, as a PodMonitor's discovery would find them.
    """
    return {
        "job_name": "kaito-inference-pods",
        "scrape_interval": "1s",
        "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
    }


@dataclass
class Stack:
    cluster: Cluster
    api: KubeHttp
    operator: Operator
    prometheus: Prometheus
    adapter: MetricsAdapter
    node: ProcessNode
    registry: LocalRegistry
    namespace: str
    activator_port: int

    def inference_set(self, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        """A set of the tiny preset on the process node (derived from upstream's examples)."""
        return {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "InferenceSet",
            "metadata": {"name": name, "namespace": self.namespace, "annotations": annotations},
            "spec": {
                "replicas": 1,
                "labelSelector": {"matchLabels": {"apps": NODE_LABEL}},
                "template": {
                    "resource": {"instanceType": INSTANCE_TYPE},
                    "inference": {
                        "preset": {
                            "name": "tiny-llama-test",
                            "presetOptions": {"imagePullSecrets": [PULL_SECRET]},
                        },
                        "config": CONFIG_MAP,
                    },
                },
            },
        }

    def delete_set(self, name: str, timeout: float = 120) -> None:
        """Delete a set and wait until its replicas' servers have stopped."""
        self.api.delete(f"/apis/kaito.sh/v1beta1/namespaces/{self.namespace}/inferencesets/{name}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mine = [p for p in self.node.history if p.labels.get(CREATED_BY) == name]
            if all(p.proc.poll() is not None for p in mine):
                return
            time.sleep(0.5)
        raise AssertionError(f"the replicas of {name} did not stop within {timeout:.0f}s")

    def get_set(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.api.get(
            f"/apis/kaito.sh/v1beta1/namespaces/{self.namespace}/inferencesets/{name}"
        )
        return result


def _prepare_namespace(cluster: Cluster, api: KubeHttp, registry: LocalRegistry) -> str:
    namespace = f"scale-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    api.post(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": PULL_SECRET},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {
                ".dockerconfigjson": base64.b64encode(registry.docker_config.read_bytes()).decode()
            },
        },
    )
    api.post(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP},
            "data": {"inference_config.yaml": VLLM_CONFIG},
        },
    )
    return namespace


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def autoscaling_stack(directory: Path) -> Iterator[Stack]:
    """Start the stack under `directory`; everything is stopped (by PID) on exit."""
    with contextlib.ExitStack() as stack:
        with _env(
            KAITO_KUBE_APISERVER_EXTRA_ARGS=front_proxy_args(directory / "front-proxy"),
            KAITO_KUBE_CONTROLLER_MANAGER_EXTRA_ARGS=HPA_SYNC,
        ):
            state = hack_cluster.up(directory / "cluster", quiet=True)
        stack.callback(hack_cluster.down, Path(state.directory), quiet=True)
        cluster = Cluster(kubeconfig=Path(state.kubeconfig), directory=Path(state.directory))
        api = KubeHttp(cluster.kubeconfig)
        install_crds(cluster)

        registry = LocalRegistry.start(directory / "registry")
        stack.callback(registry.stop)
        push_tiny_model(registry.host, registry.docker_config)

        activator_port = free_port()
        operator = Operator(
            cluster,
            directory,
            ["--workers=4", f"--activator-port={activator_port}"],
            {"PRESET_REGISTRY_NAME": registry.host},
        )
        operator.start()
        stack.callback(operator.stop)

        (directory / "prometheus").mkdir()
        targets = directory / "prometheus" / "pods.json"
        targets.write_text("[]")
        prometheus = Prometheus(directory / "prometheus", {}, [scrape_config(targets)])
        stack.callback(prometheus.stop)
        prometheus.wait_ready()
        adapter = MetricsAdapter(cluster, prometheus.url, directory / "adapter")
        stack.callback(adapter.stop)
        adapter.wait_available()

        node = ProcessNode(
            api,
            f"proc-{uuid.uuid4().hex[:6]}",
            instance_type=INSTANCE_TYPE,
            labels={"apps": NODE_LABEL},
            kubeconfig=cluster.kubeconfig,
            kubectl=cluster.kubectl_path,
            work_dir=directory / "pods",
            # no kubelet cpuset here: let the OS spread the servers over the cores instead of
            # vLLM pinning every one of them to core 0
            env={
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                "OMP_NUM_THREADS": "1",
            },
            targets_file=targets,
        )
        node.start()
        stack.callback(node.stop)
        cluster.kubectl("wait", "--for=condition=Ready", f"node/{node.name}", "--timeout=30s")

        namespace = _prepare_namespace(cluster, api, registry)
        yield Stack(
            cluster, api, operator, prometheus, adapter, node, registry, namespace, activator_port
        )
        # replicas first, while the operator still runs to finalize them
        cluster.kubectl("-n", namespace, "delete", "inferencesets", "--all", "--timeout=120s")
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline
            and api.get(f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces")["items"]
        ):
            time.sleep(0.5)


__all__ = ["AUTOSCALING", "REPO", "Stack", "autoscaling_stack", "missing_tools"]
