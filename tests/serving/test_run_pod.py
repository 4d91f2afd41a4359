"""hack/run-pod runs a StatefulSet shaped like the controller's: adapter pulled by an init container
from a real registry with a projected pull secret, then ``python3 -m serving`` answers /chat
through that adapter, token for token like transformers+peft."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.serving.conftest import needs_registry, needs_vllm
from tests.serving.helpers import ROOT, SERVER_ENV, Reference, http
from tests.serving.pod_spec import statefulset
from tests.serving.tiny_model import TinyModel

pytestmark = [needs_vllm, needs_registry, pytest.mark.slow]
N = 10


def test_run_pod_serves_chat_through_the_adapter(
    tiny: TinyModel, registry: object, reference: Reference, tmp_path: Path
) -> None:
    from hack.registry import LocalRegistry

    assert isinstance(registry, LocalRegistry)
    image = registry.push_dir(tiny.adapter("adapter-a"), "kaito/adapter-a:0.1")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pull-secret"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {
            ".dockerconfigjson": base64.b64encode(registry.docker_config.read_bytes()).decode()
        },
    }
    spec = tmp_path / "ws.yaml"
    spec.write_text(yaml.safe_dump_all([secret, statefulset(image, "pull-secret")]))
    env = {**os.environ, **SERVER_ENV}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "hack" / "run_pod.py"),
            str(spec),
            "--map",
            f"/workspace/weights={tiny.model}",
            "--python",
            sys.executable,
            "--work-dir",
            str(tmp_path / "pod"),
            "--wait",
            "300",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "run-pod.log").open("wb"),
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # run-pod prints only the URL on stdout, once healthy
        assert line.startswith("URL="), (tmp_path / "run-pod.log").read_text()[-4000:]
        url = line.strip().removeprefix("URL=")
        assert (
            tmp_path / "pod" / "volumes" / "adapter-volume" / "adapter-a" / "adapter_config.json"
        ).is_file()
        prompt = "hello world"
        status, body = http(
            "POST",
            url + "/chat",
            {
                "prompt": prompt,
                "return_full_text": False,
                "generate_kwargs": {"do_sample": False, "max_new_tokens": N, "min_new_tokens": N},
            },
        )
        assert status == 200, body
        want = reference.greedy(reference.ids(prompt), N, tiny.adapter("adapter-a"))
        assert body["Result"] == reference.tokenizer.decode(want)
        assert want != reference.greedy(reference.ids(prompt), N), "adapter must change the answer"
        models = {m["id"] for m in http("GET", url + "/v1/models")[1]["data"]}
        assert models == {"tiny", "adapter-a"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, (tmp_path / "run-pod.log").read_text()[-3000:]
