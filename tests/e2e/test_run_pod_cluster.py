"""The missing link KWOK cannot give: a StatefulSet stored in the real API server is read back by
``hack/run-pod`` (kubectl), its adapter init container pulls from a real registry with the pull
secret read from the cluster, and the main container answers /chat through that adapter.

Runs with the operator's venv; the serving side uses the serving venv (``hack/serving-env``),
and the test is skipped when that venv, docker-registry or skopeo is absent.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hack.registry import LocalRegistry
from tests.e2e.serving_support import post, serving_python
from tests.serving.pod_spec import statefulset

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_run_pod_runs_the_statefulset_stored_in_the_cluster(
    cluster: Any, namespace: str, tmp_path: Path
) -> None:
    py = serving_python()
    if py is None:
        pytest.skip("serving venv absent: run hack/serving-env")
    if not (shutil.which("docker-registry") and shutil.which("skopeo")):
        pytest.skip("needs docker-registry and skopeo (apt-get install docker-registry skopeo)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [str(py), "-m", "tests.serving.tiny_model"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    tiny = Path(out.stdout.strip().splitlines()[-1])
    registry = LocalRegistry.start(tmp_path / "registry")
    proc = None
    try:
        image = registry.push_dir(tiny / "adapters" / "adapter-a", "kaito/adapter-a:0.1")
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "pull-secret"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {
                    ".dockerconfigjson": base64.b64encode(
                        registry.docker_config.read_bytes()
                    ).decode()
                },
            },
            namespace,
        )
        sts = statefulset(image, "pull-secret")
        sts["metadata"]["namespace"] = namespace
        cluster.apply(sts, namespace)
        log = tmp_path / "run-pod.log"
        proc = subprocess.Popen(
            [
                str(REPO / "hack" / "run-pod"),
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--kubectl",
                cluster.kubectl_path,
                "-n",
                namespace,
                "statefulset/ws-tiny",
                "--map",
                f"/workspace/weights={tiny / 'model'}",
                "--wait",
                "300",
            ],
            cwd=REPO,
            env={**env, "VLLM_CPU_KVCACHE_SPACE": "1"},
            stdout=subprocess.PIPE,
            stderr=log.open("wb"),
            text=True,
            start_new_session=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("URL="), log.read_text()[-4000:]
        url = line.strip().removeprefix("URL=")
        greedy = {"do_sample": False, "max_new_tokens": 10, "min_new_tokens": 10}
        prompt = {"prompt": "hello world", "return_full_text": False, "generate_kwargs": greedy}
        status, default = post(url + "/chat", prompt)
        assert status == 200, default
        status, adapter = post(url + "/chat", {**prompt, "model": "adapter-a"})
        assert status == 200, adapter
        status, base = post(url + "/chat", {**prompt, "model": "tiny"})
        assert status == 200, base
        assert default["Result"] == adapter["Result"] != base["Result"]
    finally:
        if proc is not None:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        registry.stop()
