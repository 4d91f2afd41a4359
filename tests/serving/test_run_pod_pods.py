"""run-pod's pods of a StatefulSet (no vLLM): ordinals, own ports, the headless Service's
names resolved to 127.0.0.1, and restarts of a container that exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from hack.run_pod import Peers, Source, container_env, pod_runners
from tests.serving.helpers import ROOT


def sts(replicas: int, command: list[str], args: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "ws", "namespace": "team"},
        "spec": {
            "replicas": replicas,
            "serviceName": "ws-headless",
            "template": {
                "metadata": {"labels": {"kaito.sh/workspace": "ws"}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "command": command,
                            "args": args,
                            "env": [
                                {
                                    "name": "POD_INDEX",
                                    "valueFrom": {
                                        "fieldRef": {
                                            "fieldPath": (
                                                "metadata.labels['apps.kubernetes.io/pod-index']"
                                            )
                                        }
                                    },
                                },
                                {"name": "LEADER", "value": "ws-0.ws-headless.team.svc:5001"},
                            ],
                            "ports": [
                                {"containerPort": 5000},
                                {"containerPort": 5001},
                                {"containerPort": 29500},
                            ],
                        }
                    ]
                },
            },
        },
    }


def test_headless_names_resolve_to_each_pods_local_ports() -> None:
    peers = Peers("ws", "ws-headless", "team", [{5001: 41001}, {5001: 41002}])
    assert peers.rewrite("ws-0.ws-headless.team.svc:5001") == "127.0.0.1:41001"
    assert peers.rewrite("http://ws-1.ws-headless.team.svc.cluster.local:5001/x") == (
        "http://127.0.0.1:41002/x"
    )
    assert peers.rewrite("--master-addr=ws-0.ws-headless") == "--master-addr=127.0.0.1"
    assert peers.rewrite("ws-0.ws-headless.team.svc:29500") == "127.0.0.1:29500"  # not declared
    for untouched in ("ws-10.ws-headless.team.svc", "my-ws-0.ws-headless", "ws-0.ws-headless2"):
        assert peers.rewrite(untouched) == untouched


def test_each_pod_gets_its_ordinal_own_ports_and_the_group_resolved(tmp_path: Path) -> None:
    spec = sts(2, ["python3", "-m", "serving"], ["--port", "5000", "--master-port", "29500"])
    src = Source([spec], None, "team")
    runners = pod_runners(spec, src, tmp_path, {}, Path(sys.executable))
    assert [r.pod_name for r in runners] == ["ws-0", "ws-1"]
    assert runners[0].ports.keys() == {5000, 5001, 29500}
    assert runners[0].ports[5001] != runners[1].ports[5001]
    container = spec["spec"]["template"]["spec"]["containers"][0]
    for i, r in enumerate(runners):
        argv, env = r.command(container, main=True)
        assert env["POD_INDEX"] == str(i) and env["HOSTNAME"] == f"ws-{i}"
        assert env["LEADER"] == f"127.0.0.1:{runners[0].ports[5001]}"  # pod 0's, from every pod
        assert argv[argv.index("--port") + 1] == str(r.port)
        assert argv[argv.index("--master-port") + 1] == str(r.ports[29500])
        assert r.work == tmp_path / f"ws-{i}"


def test_host_and_port_are_every_pods_address_and_pod_0s_port(tmp_path: Path) -> None:
    """--host (a pod IP on loopback) for every pod and its peers' names; --port for pod 0."""
    spec = sts(2, ["python3", "-m", "serving"], ["--port", "5000"])
    src = Source([spec], None, "team")
    runners = pod_runners(
        spec, src, tmp_path, {}, Path(sys.executable), host="127.0.0.2", port=5000
    )
    assert runners[0].port == 5000 and runners[1].port != 5000
    assert runners[0].url == "http://127.0.0.2:5000"
    container = spec["spec"]["template"]["spec"]["containers"][0]
    argv, env = runners[1].command(container, main=True)
    assert argv[argv.index("--host") + 1] == "127.0.0.2"
    assert env["LEADER"] == f"127.0.0.2:{runners[0].ports[5001]}"


def test_a_pod_of_a_statefulset_keeps_its_own_index() -> None:
    """A Pod (as a process node runs it) reads its labels, the pod index among them."""
    template = sts(2, ["python3", "-m", "serving"], [])["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "ws-1",
            "namespace": "team",
            "labels": {**template["metadata"]["labels"], "apps.kubernetes.io/pod-index": "1"},
        },
        "spec": template["spec"],
    }
    (runner,) = pod_runners(pod, Source([pod], None, "team"), Path("/nonexistent"), {}, Path("x"))
    _, env = runner.command(pod["spec"]["containers"][0], main=True)
    assert env["POD_INDEX"] == "1" and env["HOSTNAME"] == "ws-1"


def test_field_refs_read_the_pods_labels_and_namespace() -> None:
    c = {
        "env": [
            {"name": "I", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a/b']"}}},
            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "R", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['r']"}}},
        ]
    }
    env = container_env(
        c, Source([], None, "team"), "ws-3", labels={"a/b": "3"}, namespace="team",
        annotations={"r": "7"},
    )  # fmt: skip
    assert env == {"I": "3", "N": "team", "R": "7"}


def test_restart_brings_an_exited_container_back(tmp_path: Path) -> None:
    """--restart as the kubelet: pod 1 exits at once and is started again; SIGTERM ends all."""
    script = (
        "import os, sys, time; open(sys.argv[1] + os.environ['POD_INDEX'], 'a').write('x');"
        " time.sleep(0 if os.environ['POD_INDEX'] == '1' else 600)"
    )
    spec = sts(2, [sys.executable, "-c", script, str(tmp_path / "starts-")], [])
    path = tmp_path / "sts.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "hack" / "run_pod.py"), str(path), "--restart",
         "--work-dir", str(tmp_path / "pods"), "--python", sys.executable],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        starts = tmp_path / "starts-1"
        while not (starts.exists() and len(starts.read_text()) >= 2):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        assert (tmp_path / "starts-0").read_text() == "x"  # pod 0 kept running
        assert (tmp_path / "pods" / "ws-0" / "main.pid").read_text().strip().isdigit()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "ws-1: container exited with status 0; restart 1" in err
