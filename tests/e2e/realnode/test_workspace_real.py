"""The operator's pods run under a real kubelet: images, init containers, probes, Services.

Everything the user meets first on a real cluster, for real: the serving image (built here,
pulled by containerd from the node's registry), the weights and adapter images pulled by the
init containers with the Workspace's pull secrets, vLLM's CPU build behind the readiness probe,
the Service's port 80 in front of container port 5000 through kube-proxy, and the seed's
``kubectl run curl ... http://$CLUSTERIP/chat`` from a pod. Failures a kubelet produces reach
the Workspace's conditions in words.
"""

from __future__ import annotations

import functools
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hack import realnode
from hack.registry import LocalRegistry

from ..controllers.conftest import Operator, condition
from ..serving_support import serving_python
from .conftest import (
    INSTANCE_TYPE,
    NODE_LABELS,
    RealCluster,
    pull_secret,
    wrong_pull_secret,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.real_node]

READY_TIMEOUT = 900  # a fresh machine pulls and unpacks the 6 GB serving image first
SEED_PROMPT = "What is Kubernetes?"


def tiny_workspace(name: str, secret: str, adapter: str | None = None) -> dict[str, Any]:
    """The tiny preset on the real node's instance type, weights from the private registry."""
    inference: dict[str, Any] = {
        "preset": {"name": "tiny-llama-test", "presetOptions": {"imagePullSecrets": [secret]}}
    }
    if adapter:
        inference["adapters"] = [
            {
                "source": {"name": "tiny-adapter", "image": adapter, "imagePullSecrets": [secret]},
                "strength": "1.0",
            }
        ]
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {
            "instanceType": INSTANCE_TYPE,
            "labelSelector": {"matchLabels": dict(NODE_LABELS)},
        },
        "inference": inference,
    }


def workspace_condition(
    cluster: RealCluster, ns: str, name: str, type_: str
) -> dict[str, Any] | None:
    return condition(cluster.get("workspace", name, ns), type_)


def wait_succeeded(cluster: RealCluster, ns: str, name: str, operator: Operator) -> None:
    def succeeded() -> bool:
        cond = workspace_condition(cluster, ns, name, "WorkspaceSucceeded")
        return bool(cond and cond["status"] == "True")

    try:
        cluster.wait_for(f"Workspace {name} to succeed", succeeded, READY_TIMEOUT)
    except AssertionError:
        ws = cluster.get("workspace", name, ns)
        pods = cluster.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False).stdout
        raise AssertionError(
            f"{json.dumps((ws or {}).get('status'), indent=1)}\n{pods}\n"
            f"{operator.log_text()[-3000:]}"
        ) from None


def wait_condition_says(
    cluster: RealCluster, ns: str, name: str, *words: str, timeout: float = 300
) -> str:
    """Wait until some condition's message of the Workspace holds every one of `words`."""

    def says() -> str | None:
        ws = cluster.get("workspace", name, ns) or {}
        for cond in (ws.get("status") or {}).get("conditions") or ():
            message = f"{cond.get('reason', '')}: {cond.get('message', '')}"
            if all(w.lower() in message.lower() for w in words):
                return message
        return None

    try:
        found: str = cluster.wait_for(f"a condition of {name} naming {words}", says, timeout)
    except AssertionError:
        ws = cluster.get("workspace", name, ns) or {}
        raise AssertionError(json.dumps(ws.get("status"), indent=1)) from None
    return found


def test_tiny_workspace_runs_and_the_seed_curl_gets_an_answer(
    real_cluster: RealCluster,
    ns: str,
    private_registry: LocalRegistry,
    tiny_images: dict[str, str],
    real_operator: Operator,
) -> None:
    pull_secret(real_cluster, ns, "tiny-registry", private_registry.docker_config.read_bytes())
    real_cluster.apply(tiny_workspace("tiny", "tiny-registry", tiny_images["adapter"]), ns)
    wait_succeeded(real_cluster, ns, "tiny", real_operator)

    pod = real_cluster.get("pod", "tiny-0", ns)
    assert pod is not None
    assert pod["spec"]["nodeName"] == real_cluster.node
    inits = pod["status"]["initContainerStatuses"]
    assert [c["name"] for c in inits] == ["model-weights-downloader", "adapter-tiny-adapter"]
    assert all(c["state"]["terminated"]["exitCode"] == 0 for c in inits)
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"  # the readiness probe passed on the real process

    svc = real_cluster.get("service", "tiny", ns)
    assert svc is not None
    ports = {(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert (80, 5000) in ports
    cluster_ip = svc["spec"]["clusterIP"]

    # the seed's request, verbatim, from a pod, through kube-proxy
    out = real_cluster.run_curl(
        ns, "-sS", "-X", "POST", f"http://{cluster_ip}/chat",
        "-H", "accept: application/json", "-H", "Content-Type: application/json",
        "-d", json.dumps({"prompt": SEED_PROMPT, "generate_kwargs": {"max_new_tokens": 8}}),
    )  # fmt: skip
    answer = json.loads(out)
    assert isinstance(answer["Result"], str) and answer["Result"]

    # the adapter answers through the Service too, and differently from the base model
    greedy = {"do_sample": False, "max_new_tokens": 8, "min_new_tokens": 8}
    results = {}
    for model in ("tiny-llama-test", "tiny-adapter"):
        body = {"prompt": "hello world", "model": model, "generate_kwargs": greedy}
        out = real_cluster.run_curl(
            ns, "-sS", "-X", "POST", f"http://{cluster_ip}/chat",
            "-H", "Content-Type: application/json", "-d", json.dumps(body),
        )  # fmt: skip
        results[model] = json.loads(out)["Result"]
    assert results["tiny-adapter"] != results["tiny-llama-test"]

    # the official OpenAI client, from the host, through the ClusterIP
    py = serving_python()
    assert py is not None
    script = (
        "import sys, openai\n"
        "c = openai.OpenAI(base_url=sys.argv[1], api_key='unused', timeout=60)\n"
        "r = c.chat.completions.create(model='tiny-llama-test', max_tokens=8,\n"
        "    messages=[{'role': 'user', 'content': 'What is Kaito?'}])\n"
        "print(r.model, r.usage.completion_tokens)\n"
    )
    done = subprocess.run(
        [str(py), "-c", script, f"http://{cluster_ip}/v1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    model, tokens = done.stdout.split()
    assert model == "tiny-llama-test" and int(tokens) > 0


def test_a_wrong_pull_secret_is_named_on_the_workspace(
    real_cluster: RealCluster,
    ns: str,
    private_registry: LocalRegistry,
    tiny_images: dict[str, str],
    real_operator: Operator,
) -> None:
    pull_secret(real_cluster, ns, "wrong-secret", wrong_pull_secret(private_registry))
    real_cluster.apply(tiny_workspace("wrong", "wrong-secret"), ns)
    message = wait_condition_says(real_cluster, ns, "wrong", "model-weights-downloader")
    assert private_registry.host in message
    assert any(w in message.lower() for w in ("401", "unauthorized", "credential", "denied"))


def test_a_container_killed_for_memory_is_named_on_the_workspace(
    real_cluster: RealCluster,
    ns: str,
    private_registry: LocalRegistry,
    tiny_images: dict[str, str],
    real_operator: Operator,
) -> None:
    # the namespace's default limit is far below what vLLM needs: the kernel kills it
    real_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "small"},
            "spec": {"limits": [{"type": "Container", "default": {"memory": "400Mi"}}]},
        },
        ns,
    )
    pull_secret(real_cluster, ns, "tiny-registry", private_registry.docker_config.read_bytes())
    real_cluster.apply(tiny_workspace("small", "tiny-registry"), ns)
    message = wait_condition_says(real_cluster, ns, "small", "OOMKilled")
    assert "small-0" in message


def test_a_crash_loop_shows_its_termination_message(
    real_cluster: RealCluster,
    ns: str,
    private_registry: LocalRegistry,
    tmp_path: Path,
    real_operator: Operator,
) -> None:
    # weights without a config.json: the serving pre-flight check refuses and says why
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "README.md").write_text("not a model\n")
    ref = f"{private_registry.host}/broken-weights:0.1.0"
    from tests.e2e.conftest import REPO  # noqa: PLC0415

    subprocess.run(
        [str(REPO / "hack" / "push-model"), str(broken), ref, "--plain-http", "--authfile",
         str(private_registry.docker_config)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    pull_secret(real_cluster, ns, "tiny-registry", private_registry.docker_config.read_bytes())
    ws = tiny_workspace("broken", "tiny-registry")
    ws["inference"]["preset"]["presetOptions"]["image"] = ref
    real_cluster.apply(ws, ns)
    message = wait_condition_says(real_cluster, ns, "broken", "keeps crashing")
    assert "config.json" in message or "weights" in message.lower()


WRITE_CHAT_PARQUET = """
import sys, pyarrow as pa, pyarrow.parquet as pq
rows = [{"messages": [{"role": "user", "content": f"what is {i}"},
                      {"role": "assistant", "content": f"the answer is {i} blue green"}]}
        for i in range(8)]
pq.write_table(pa.Table.from_pylist(rows), sys.argv[1])
"""


@pytest.fixture
def data_url(tmp_path: Path) -> Iterator[str]:
    """A parquet file served on the node's address, where the Job's pod can fetch it."""
    py = serving_python()
    assert py is not None
    root = tmp_path / "http"
    root.mkdir()
    subprocess.run([str(py), "-c", WRITE_CHAT_PARQUET, str(root / "chat.parquet")], check=True)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = ThreadingHTTPServer((realnode.GATEWAY, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{realnode.GATEWAY}:{server.server_address[1]}/chat.parquet"
    server.shutdown()
    server.server_close()


def test_a_tuning_job_trains_in_real_containers_and_its_adapter_then_serves(
    real_cluster: RealCluster,
    ns: str,
    private_registry: LocalRegistry,
    tiny_images: dict[str, str],
    real_operator: Operator,
    data_url: str,
) -> None:
    pull_secret(real_cluster, ns, "tiny-registry", private_registry.docker_config.read_bytes())
    tuned = f"{private_registry.host}/tiny-tuned:0.1.0"
    real_cluster.apply(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "tune"},
            "resource": {
                "instanceType": INSTANCE_TYPE,
                "labelSelector": {"matchLabels": dict(NODE_LABELS)},
            },
            "tuning": {
                "preset": {
                    "name": "tiny-llama-test",
                    "presetOptions": {"imagePullSecrets": ["tiny-registry"]},
                },
                "method": "qlora",
                "input": {"urls": [data_url]},
                "output": {"image": tuned, "imagePushSecret": "tiny-registry"},
            },
        },
        ns,
    )
    wait_succeeded(real_cluster, ns, "tune", real_operator)
    job_pods = real_cluster.kubectl(
        "get", "pods", "-n", ns, "-l", "job-name=tune", "-o", "json"
    ).stdout
    pod = json.loads(job_pods)["items"][0]
    stages = [c["name"] for c in pod["status"]["initContainerStatuses"]]
    assert stages[0] == "data-downloader" and stages[-1] == "trainer"
    trainer_log = real_cluster.pod_logs(pod["metadata"]["name"], ns, "trainer")
    assert "plain LoRA" in trainer_log  # qlora on a CPU falls back and says so

    real_cluster.apply(tiny_workspace("served", "tiny-registry", tuned), ns)
    wait_succeeded(real_cluster, ns, "served", real_operator)
    svc = real_cluster.get("service", "served", ns)
    assert svc is not None
    body = {"prompt": "what is 3", "model": "tiny-adapter"}
    body["generate_kwargs"] = {"max_new_tokens": 8}
    out = real_cluster.run_curl(
        ns, "-sS", "-X", "POST", f"http://{svc['spec']['clusterIP']}/chat",
        "-H", "Content-Type: application/json", "-d", json.dumps(body),
    )  # fmt: skip
    assert json.loads(out)["Result"]
