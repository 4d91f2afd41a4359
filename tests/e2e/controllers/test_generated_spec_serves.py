"""The pod specs the operator generates really run (the link KWOK cannot give).

The tiny test preset's weights and a LoRA adapter are pushed as images to a real registry
with htpasswd auth; the operator (looking up preset images in that registry) makes the
Workspace Ready on KWOK; ``hack/run-pod`` then runs the generated StatefulSet's init
containers (weights and adapter pulled with the pull secrets read from the cluster) and its
vLLM container, and /chat answers through the adapter.  A wrong pull secret fails with a
message naming the registry's refusal.  The seed's tuning workflow runs the same way: the
tuning Job's containers download a parquet file, fetch the weights, train (QLoRA falls back
to LoRA on CPU), push the adapter image; an inference Workspace then serves that adapter.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hack.pki import issue, make_cluster_pki, server_ext
from hack.registry import LocalRegistry
from kaito.provisioner.kwok_node import fake_gpu_node

from ..conftest import REPO, Cluster
from ..prometheus_support import Prometheus
from ..serving_support import post, push_tiny_model, serve_chat_dataset, serving_python
from .conftest import Operator, _operator, condition, wait_condition, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    if serving_python() is None:
        pytest.skip("serving venv absent: run hack/serving-env")
    if not (shutil.which("docker-registry") and shutil.which("skopeo")):
        pytest.skip("needs docker-registry and skopeo (apt-get install docker-registry skopeo)")
    reg = LocalRegistry.start(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def images(registry: LocalRegistry) -> dict[str, str]:
    """Push the tiny model (weights) and one of its adapters, the seed's way: as images."""
    return push_tiny_model(registry.host, registry.docker_config)


@pytest.fixture(scope="module")
def registry_operator(
    cluster: Cluster,
    crds: None,
    registry: LocalRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    yield from _operator(cluster, tmp_path_factory, [], {"PRESET_REGISTRY_NAME": registry.host})


@pytest.fixture
def ns(cluster: Cluster, namespace: str, registry_operator: Operator) -> Iterator[str]:
    """The test's namespace; its Workspaces are finalized while the operator still runs."""
    yield namespace
    cluster.kubectl("-n", namespace, "delete", "workspaces", "--all", "--timeout=60s")


def pull_secret(cluster: Cluster, namespace: str, name: str, config: bytes) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(config).decode()},
        },
        namespace,
    )


def tiny_workspace(name: str, secret: str, adapter: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {
            "instanceType": "Standard_D4s_v5",
            "labelSelector": {"matchLabels": {"apps": name}},
        },
        "inference": {
            "preset": {
                "name": "tiny-llama-test",
                "presetOptions": {"imagePullSecrets": [secret]},
            },
            "adapters": [
                {
                    "source": {
                        "name": "tiny-adapter",
                        "image": adapter,
                        "imagePullSecrets": [secret],
                    },
                    "strength": "1.0",
                }
            ],
        },
    }


def wait_ready(cluster: Cluster, namespace: str, name: str) -> None:
    def ready() -> bool:
        cond = condition(cluster.get("workspace", name, namespace), "WorkspaceSucceeded")
        return bool(cond and cond["status"] == "True")

    wait_until(f"Workspace {name} ready", ready, timeout=60)


def run_pod(
    cluster: Cluster, namespace: str, name: str, log: Path, *extra: str, wait: int = 300
) -> subprocess.Popen[str]:
    """hack/run-pod on the stored StatefulSet ``name``; ``extra``: more run-pod flags."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    return subprocess.Popen(
        [
            str(REPO / "hack" / "run-pod"), f"statefulset/{name}", "-n", namespace,
            "--kubeconfig", str(cluster.kubeconfig), "--kubectl", cluster.kubectl_path,
            "--wait", str(wait), *extra,
        ],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log.open("wb"), text=True,
        start_new_session=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_generated_statefulset_pulls_weights_and_adapter_and_serves(
    cluster: Cluster,
    ns: str,
    registry: LocalRegistry,
    images: dict[str, str],
    registry_operator: Operator,
    tmp_path: Path,
) -> None:
    pull_secret(cluster, ns, "tiny-registry", registry.docker_config.read_bytes())
    cluster.apply(tiny_workspace("tiny", "tiny-registry", images["adapter"]), ns)
    wait_ready(cluster, ns, "tiny")
    sts = cluster.get("statefulset", "tiny", ns)
    assert sts is not None
    inits = [c["name"] for c in sts["spec"]["template"]["spec"]["initContainers"]]
    assert inits == ["model-weights-downloader", "adapter-tiny-adapter"]
    fetch_args = sts["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert images["weights"] in fetch_args

    log = tmp_path / "run-pod.log"
    proc = run_pod(cluster, ns, "tiny", log)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("URL="), log.read_text()[-4000:]
        url = line.strip().removeprefix("URL=")
        serves_the_adapter(url, "tiny-adapter")
        if shutil.which("prometheus"):
            scraped_by_prometheus(registry_operator, url, tmp_path / "prometheus")
    finally:
        stop(proc)


def serves_the_adapter(url: str, adapter: str) -> None:
    """The server lists the tiny model and ``adapter``, and the adapter changes the answer."""
    with urllib.request.urlopen(url + "/v1/models", timeout=30) as resp:
        models = {m["id"] for m in json.loads(resp.read())["data"]}
    assert models == {"tiny-llama-test", adapter}
    greedy = {"do_sample": False, "max_new_tokens": 8, "min_new_tokens": 8}
    prompt = {"prompt": "hello world", "return_full_text": False, "generate_kwargs": greedy}
    status, adapted = post(url + "/chat", {**prompt, "model": adapter})
    assert status == 200, adapted
    status, base = post(url + "/chat", {**prompt, "model": "tiny-llama-test"})
    assert status == 200, base
    assert adapted["Result"] != base["Result"], "the adapter changes the answer"


def test_an_adapter_on_a_volume_is_mounted_where_the_server_loads_adapters(
    cluster: Cluster,
    ns: str,
    registry: LocalRegistry,
    images: dict[str, str],
    registry_operator: Operator,
    tmp_path: Path,
) -> None:
    """Issue 19 leftover: inference.adapters[].source.volumeSource (upstream v1beta1) is
    mounted at /mnt/adapter/<name>, where the server finds adapters, and served."""
    pull_secret(cluster, ns, "tiny-registry", registry.docker_config.read_bytes())
    doc = tiny_workspace("vol", "tiny-registry", images["adapter"])
    volume = {"hostPath": {"path": images["adapter_dir"], "type": "Directory"}}
    doc["inference"]["adapters"] = [{"source": {"name": "vol-adapter", "volumeSource": volume}}]
    cluster.apply(doc, ns)
    wait_ready(cluster, ns, "vol")
    sts = cluster.get("statefulset", "vol", ns)
    assert sts is not None
    pod = sts["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["model-weights-downloader"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["adapter-vol-adapter"]["hostPath"] == volume["hostPath"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["adapter-vol-adapter"] == "/mnt/adapter/vol-adapter"

    log = tmp_path / "run-pod.log"
    # the node's hostPath is this machine's directory (run-pod maps it as the kubelet would)
    proc = run_pod(
        cluster, ns, "vol", log, "--map", f"/mnt/adapter/vol-adapter={images['adapter_dir']}"
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("URL="), log.read_text()[-4000:]
        url = line.strip().removeprefix("URL=")
        serves_the_adapter(url, "vol-adapter")
    finally:
        stop(proc)


@contextlib.contextmanager
def kubelet_logs(directory: Path, log_file: Path) -> Iterator[int]:
    """The kubelet's log endpoint (``/containerLogs/...``), which KWOK nodes lack, serving
    ``log_file`` over HTTPS: the API server's ``pods/log`` of a pod on a node whose kubelet
    port is this one returns what the real serving process wrote."""
    make_cluster_pki(directory)
    cert, key = issue(directory, "kubelet", "/CN=kubelet", server_ext(["localhost"], ["127.0.0.1"]))

    class Logs(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = log_file.read_bytes() if log_file.exists() else b""
            self.send_response(200 if self.path.startswith("/containerLogs/") else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Logs)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_the_benchmark_result_reaches_the_workspace_status(
    cluster: Cluster,
    ns: str,
    registry: LocalRegistry,
    images: dict[str, str],
    registry_operator: Operator,
    tmp_path: Path,
) -> None:
    """Issue 20: the generated startup probe (serving.benchmark) loads the real server and
    logs its result; the controller reads the leader pod's log through the API server into
    status.performance (peakTokensPerMinute) and BenchmarkCompleted."""
    py = serving_python()
    assert py is not None
    log_file = tmp_path / "container.log"
    label = f"bench-{uuid.uuid4().hex[:6]}"
    with kubelet_logs(tmp_path / "pki", log_file) as port:
        node = fake_gpu_node(
            label, "Standard_D4s_v5", gpus=0, cpu=4, memory_gib=16, labels={"apps": label}
        )
        node["status"]["daemonEndpoints"] = {"kubeletEndpoint": {"Port": port}}
        cluster.kubectl("create", "-f", "-", stdin=json.dumps(node))
        try:
            pull_secret(cluster, ns, "tiny-registry", registry.docker_config.read_bytes())
            doc = tiny_workspace("bench", "tiny-registry", images["adapter"])
            doc["resource"]["labelSelector"]["matchLabels"] = {"apps": label}
            cluster.apply(doc, ns)  # the node is there already: no NodeClaim, the pod runs on it
            wait_ready(cluster, ns, "bench")
            sts = cluster.get("statefulset", "bench", ns)
            assert sts is not None
            probe = sts["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
            command = probe["exec"]["command"]
            assert command[:3] == ["python3", "-m", "serving.benchmark"]
            # KWOK made the pod Ready at once: its (empty) log had no result yet
            unavailable = wait_condition(
                cluster, ns, "bench", "BenchmarkCompleted", reason="BenchmarkResultUnavailable"
            )
            assert "no KAITO_BENCHMARK_RESULT line" in unavailable["message"]

            proc = run_pod(cluster, ns, "bench", tmp_path / "run-pod.log")
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert line.startswith("URL="), (tmp_path / "run-pod.log").read_text()[-4000:]
                url = line.strip().removeprefix("URL=")
                # the probe as the kubelet would exec it in the container
                argv = [str(py), *command[1:]]
                argv[argv.index("--port") : argv.index("--port") + 2] = ["--url", url]
                env = {**os.environ, "PYTHONPATH": str(REPO)}
                done = subprocess.run(
                    [*argv, "--log", str(log_file)],
                    cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
            finally:
                stop(proc)
            assert "KAITO_BENCHMARK_RESULT" in log_file.read_text()
            # a new leader pod (as after a restart): its log now holds the result
            cluster.kubectl("-n", ns, "delete", "pod", "bench-0", "--wait=false")
            done_cond = wait_condition(
                cluster, ns, "bench", "BenchmarkCompleted", status="True", timeout=90
            )
            assert "tokens/min" in done_cond["message"]
            ws = cluster.get("workspace", "bench", ns)
            assert ws is not None
            metric = ws["status"]["performance"]["metrics"]["peakTokensPerMinute"]
            assert metric["unit"] == "tokens/min" and float(metric["value"]) > 0
            assert metric["config"]["engine"] == "vllm"
            assert metric["config"]["durationSec"] == command[command.index("--duration-s") + 1]
        finally:
            cluster.kubectl("-n", ns, "delete", "workspaces", "--all", "--timeout=60s")
            cluster.kubectl("delete", "node", label, "--wait=false", check=False)


def scraped_by_prometheus(operator: Operator, serving_url: str, directory: Path) -> None:
    """A real Prometheus scrapes the operator and the serving process with sane values."""
    directory.mkdir()
    prom = Prometheus(
        directory,
        {
            "kaito-operator": f"127.0.0.1:{operator.metrics_port}",
            "kaito-serving": serving_url.removeprefix("http://"),
        },
    )
    try:

        def both_up() -> bool:
            with contextlib.suppress(OSError, AssertionError):
                return len(prom.query("up == 1")) == 2
            return False

        wait_until("Prometheus scraped both targets", both_up, timeout=60)
        ok = prom.query('sum(vllm:request_success_total{job="kaito-serving"})')
        assert ok and float(ok[0]["value"][1]) >= 2  # the two /chat requests above
        tokens = prom.query('sum(vllm:generation_tokens_total{job="kaito-serving"})')
        assert tokens and float(tokens[0]["value"][1]) >= 16
        ready = prom.query('kaito_workspace_count{job="kaito-operator",phase="succeeded"}')
        assert ready and float(ready[0]["value"][1]) >= 1
        reconciles = prom.query('sum(controller_runtime_reconcile_total{job="kaito-operator"})')
        assert reconciles and float(reconciles[0]["value"][1]) > 0
    finally:
        prom.stop()


def test_a_wrong_pull_secret_fails_with_the_registrys_refusal(
    cluster: Cluster,
    ns: str,
    registry: LocalRegistry,
    images: dict[str, str],
    registry_operator: Operator,
    tmp_path: Path,
) -> None:
    wrong = base64.b64encode(b"kaito:not-the-password").decode()
    config = json.dumps({"auths": {registry.host: {"auth": wrong}}}).encode()
    pull_secret(cluster, ns, "wrong-secret", config)
    cluster.apply(tiny_workspace("wrong", "wrong-secret", images["adapter"]), ns)
    wait_ready(cluster, ns, "wrong")  # KWOK runs no containers: the spec is valid
    log = tmp_path / "run-pod.log"
    proc = run_pod(cluster, ns, "wrong", log)
    try:
        assert proc.stdout is not None
        assert proc.stdout.read() == ""  # never healthy
        assert proc.wait(timeout=120) != 0
    finally:
        stop(proc)
    text = log.read_text()
    assert "model-weights-downloader" in text
    assert registry.host in text
    assert "credential" in text.lower() or "401" in text or "unauthorized" in text.lower()


@pytest.fixture
def data_url(tmp_path: Path) -> Iterator[str]:
    """A parquet file on a local http server (the seed's dataset URL, replaced)."""
    with serve_chat_dataset(tmp_path / "http", "127.0.0.1") as url:
        yield url


def test_tuning_job_trains_and_pushes_an_adapter_that_then_serves(
    cluster: Cluster,
    ns: str,
    registry: LocalRegistry,
    images: dict[str, str],
    registry_operator: Operator,
    data_url: str,
    tmp_path: Path,
) -> None:
    pull_secret(cluster, ns, "tiny-registry", registry.docker_config.read_bytes())
    tuned = f"{registry.host}/tiny-tuned:0.1.0"
    cluster.apply(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "tune"},
            "resource": {
                "instanceType": "Standard_D4s_v5",
                "labelSelector": {"matchLabels": {"apps": "tune"}},
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
    wait_ready(cluster, ns, "tune")  # KWOK completes the Job's pod at once
    # now the Job's containers for real: download → weights → train → push
    log = tmp_path / "job.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    job = subprocess.run(
        [
            str(REPO / "hack" / "run-pod"), "job/tune", "-n", ns,
            "--kubeconfig", str(cluster.kubeconfig), "--kubectl", cluster.kubectl_path,
        ],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log.open("wb"), text=True,
        timeout=600, check=False,
    )  # fmt: skip
    text = log.read_text()
    assert job.returncode == 0, text[-4000:]
    assert "plain LoRA" in text  # qlora on CPU falls back and says so

    cluster.apply(tiny_workspace("served", "tiny-registry", tuned), ns)
    wait_ready(cluster, ns, "served")
    serve_log = tmp_path / "serve.log"
    proc = run_pod(cluster, ns, "served", serve_log)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("URL="), serve_log.read_text()[-4000:]
        url = line.strip().removeprefix("URL=")
        status, answer = post(url + "/chat", {"prompt": "what is 3", "model": "tiny-adapter"})
        assert status == 200, answer
        assert isinstance(answer["Result"], str) and answer["Result"]
    finally:
        stop(proc)
