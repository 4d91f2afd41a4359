"""Workspaces that name a model by Hugging Face id, against a local hub of ours (hack/hub.py).

The operator and the admission webhook run with HF_ENDPOINT pointing at the local hub, which
serves real models' config.json files and sizes (tests/fixtures/hub) and the tiny test model
published as ``kaito-test/tiny-llama``. Upstream's documented manifests (a generic model and a
curated one by hub id) go through the webhook and become Ready on KWOK; a gated model needs its
access Secret; a failing hub is a condition that clears once the hub answers again. Then the
operator's generated pod spec for the tiny model runs for real (``hack/run-pod``): vLLM downloads
the weights from the local hub and ``/chat`` answers.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.hub import LocalHub

from ..conftest import REPO, Cluster
from ..serving_support import post, serving_python
from .conftest import Operator, _operator, condition, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES = REPO / "examples"
FIXTURES = REPO / "tests" / "fixtures" / "hub"
TOKEN = "hf_e2e_token"
TINY_ID = "kaito-test/tiny-llama"
QWEN_COPY = "kaito-test/qwen3-copy"  # a second id for the fixture, asked for by one test only


def _tiny_model_dir() -> Path | None:
    py = serving_python()
    if py is None:
        return None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [str(py), "-m", "tests.serving.tiny_model"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1]) / "model"


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    publish = {QWEN_COPY: FIXTURES / "Qwen" / "Qwen3-0.6B"}
    tiny = _tiny_model_dir()
    if tiny is not None:
        publish[TINY_ID] = tiny
    hub = LocalHub.start(
        roots=[FIXTURES],
        publish=publish,
        tokens=[TOKEN],
        log=tmp_path_factory.mktemp("hub") / "hub.log",
    )
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def hub_operator(
    cluster: Cluster, crds: None, local_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    yield from _operator(cluster, tmp_path_factory, [], {"HF_ENDPOINT": local_hub.url})


@pytest.fixture(scope="module")
def ns(
    cluster: Cluster,
    local_hub: LocalHub,
    hub_operator: Operator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A namespace admitted by a webhook that reads the local hub; finalized with the operator."""
    name = f"hub-e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cert_dir = tmp_path_factory.mktemp("webhook-certs")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "HF_ENDPOINT": local_hub.url,
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "kaito.webhook", "serve", "--port", "0",
            "--cert-dir", str(cert_dir), "--kubeconfig", str(cluster.kubeconfig),
            "--register", "--namespace", name,
        ],
        stdout=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline(), "the webhook exited before it was ready"
        probe = yaml.safe_load((EXAMPLES / "workspace-phi-3-mini.yaml").read_text())
        probe["resource"]["instanceType"] = "Standard_Probe"

        def admitted_by_webhook() -> bool:
            out = cluster.kubectl(
                "-n", name, "create", "--dry-run=server", "-f", "-",
                stdin=json.dumps(probe), check=False,
            )  # fmt: skip
            return "unknown instance type" in out.stderr

        wait_until("the webhook answers", admitted_by_webhook, timeout=30)
        yield name
    finally:
        cluster.kubectl("-n", name, "delete", "workspaces", "--all", "--timeout=60s", check=False)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply_file(cluster: Cluster, ns: str, path: Path) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("-n", ns, "apply", "-f", str(path))


def workspace(name: str, model: str, instance_type: str, secret: str | None = None) -> Any:
    preset: dict[str, Any] = {"name": model}
    if secret:
        preset["presetOptions"] = {"modelAccessSecret": secret}
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {
            "instanceType": instance_type,
            "labelSelector": {"matchLabels": {"apps": name}},
        },
        "inference": {"preset": preset},
    }


def wait_condition(
    cluster: Cluster, ns: str, name: str, type_: str, status: str, timeout: float = 60
) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        cond = condition(cluster.get("workspace", name, ns), type_)
        return cond if cond and cond["status"] == status else None

    result: dict[str, Any] = wait_until(f"{name} {type_}={status}", found, timeout=timeout)
    return result


def container(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    sts = cluster.get("statefulset", name, ns)
    assert sts is not None
    main: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]
    return main


def test_upstreams_generic_and_curated_manifests_apply_and_plan(
    cluster: Cluster, ns: str, local_hub: LocalHub
) -> None:
    generic = EXAMPLES / "workspace-qwen3-0.6b-hub.yaml"
    curated = EXAMPLES / "workspace-gemma-4-31b.yaml"
    for path in (generic, curated):
        out = apply_file(cluster, ns, path)
        assert out.returncode == 0 and "Warning" not in out.stderr, out.stderr
    for name in ("qwen3-06b", "workspace-gemma4-31b"):
        wait_condition(cluster, ns, name, "WorkspaceSucceeded", "True")
    qwen = container(cluster, ns, "qwen3-06b")
    args = qwen["args"]
    assert args[args.index("--model") + 1] == "Qwen/Qwen3-0.6B"
    assert args[args.index("--served-model-name") + 1] == "qwen3-0.6b"
    assert args[args.index("--max-model-len") + 1] == "40960"
    env = {e["name"]: e for e in qwen["env"]}
    assert env["HF_ENDPOINT"]["value"] == local_hub.url
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    gemma_args = container(cluster, ns, "workspace-gemma4-31b")["args"]
    assert gemma_args[gemma_args.index("--model") + 1] == "google/gemma-4-31B-it"

    plan = subprocess.run(
        [sys.executable, "-m", "kaito.cli", "plan", "-f", str(generic)],
        env={**os.environ, "HF_ENDPOINT": local_hub.url, "PYTHONPATH": str(REPO / "src")},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert f"Sized from: config.json of {local_hub.url}/Qwen/Qwen3-0.6B@" in plan.stdout
    assert "2 (K and V) x 28 layers x 8 KV heads x 128 head dim x 2 bytes" in plan.stdout


def test_a_gated_hub_model_is_sized_with_its_access_secret(cluster: Cluster, ns: str) -> None:
    token = base64.b64encode(TOKEN.encode()).decode()
    cluster.apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-gemma"},
         "data": {"HF_TOKEN": token}},
        ns,
    )  # fmt: skip
    gated = "google/gemma-2-2b-it"
    cluster.apply(workspace("gemma-open", gated, "Standard_NC24ads_A100_v4", "hf-gemma"), ns)
    cluster.apply(workspace("gemma-locked", gated, "Standard_NC24ads_A100_v4", "hf-missing"), ns)
    wait_condition(cluster, ns, "gemma-open", "WorkspaceSucceeded", "True")
    locked = wait_condition(cluster, ns, "gemma-locked", "ResourceReady", "False")
    assert locked["reason"] == "InvalidSpec"
    assert "inference.preset.presetOptions.modelAccessSecret" in locked["message"]
    assert "is gated" in locked["message"] and "'hf-missing' does not exist" in locked["message"]
    args = container(cluster, ns, "gemma-open")["args"]
    assert args[args.index("--served-model-name") + 1] == "gemma-2-2b-it"


def test_a_failing_hub_is_a_condition_that_clears_when_the_hub_answers(
    cluster: Cluster, ns: str, local_hub: LocalHub, hub_operator: Operator
) -> None:
    local_hub.fail_next(100_000, status=503)
    try:
        cluster.apply(workspace("hub-down", QWEN_COPY, "Standard_NC24ads_A100_v4"), ns)
        cond = wait_condition(cluster, ns, "hub-down", "ResourceReady", "False")
        assert cond["reason"] == "ModelHubUnavailable"
        assert local_hub.url in cond["message"] and "HTTP 503" in cond["message"]
        url = f"http://127.0.0.1:{hub_operator.health_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200
    finally:
        local_hub.fail_next(0)
    wait_condition(cluster, ns, "hub-down", "WorkspaceSucceeded", "True", timeout=45)


def test_the_tiny_model_on_the_local_hub_serves_chat_with_weights_from_the_hub(
    cluster: Cluster, ns: str, local_hub: LocalHub, tmp_path: Path
) -> None:
    if serving_python() is None:
        pytest.skip("serving venv absent: run hack/serving-env")
    cluster.apply(workspace("tiny-hub", TINY_ID, "Standard_D4s_v5"), ns)
    wait_condition(cluster, ns, "tiny-hub", "WorkspaceSucceeded", "True")
    sts = cluster.get("statefulset", "tiny-hub", ns)
    assert sts is not None and "initContainers" not in sts["spec"]["template"]["spec"]
    log = tmp_path / "run-pod.log"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "VLLM_CPU_KVCACHE_SPACE": "1"}
    for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(offline, None)
    proc = subprocess.Popen(
        [
            str(REPO / "hack" / "run-pod"), "statefulset/tiny-hub", "-n", ns,
            "--kubeconfig", str(cluster.kubeconfig), "--kubectl", cluster.kubectl_path,
            "--wait", "600",  # vLLM's CPU start-up on a busy 2-core machine
        ],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log.open("wb"), text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("URL="), log.read_text()[-4000:]
        url = line.strip().removeprefix("URL=")
        with urllib.request.urlopen(url + "/v1/models", timeout=30) as resp:
            assert {m["id"] for m in json.loads(resp.read())["data"]} == {"tiny-llama"}
        status, answer = post(url + "/chat", {"prompt": "hello world", "return_full_text": False})
        assert status == 200, answer
        assert isinstance(answer["Result"], str) and answer["Result"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    served = local_hub.requests()
    weights = [r for r in served if r.startswith(f"GET /{TINY_ID}/resolve/") and "safetensors" in r]
    assert weights, served[-20:]
