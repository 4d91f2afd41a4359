"""The Helm chart installed for real: operator and webhook run as containers on the real node.

The commands are docs/installation.md's own (its ``<!-- e2e: NAME -->`` blocks run verbatim), so
the guide cannot drift from what works. One scenario, in order: install (two replicas, leader
election, the webhook reached through its Service by the API server), Prometheus scrapes the
operator through its Service, the seed's walkthrough answers through the Service, a
``helm upgrade`` to a new operator image leaves a serving Workspace alone while the Lease
moves, a deleted leader is replaced within the lease duration, and ``helm uninstall`` leaves
nothing of the release behind (CRDs stay, as Helm does).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hack import images, realnode

from ..conftest import REPO, hack_cluster
from ..prometheus_support import Prometheus
from ..serving_support import serving_python
from .conftest import RealCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.real_node]

GUIDE = REPO / "docs" / "installation.md"
NAMESPACE = "kaito-system"
LEASE = "kaito-operator"
LEASE_DURATION_S = 15.0


def guide_blocks() -> dict[str, str]:
    """The guide's ``<!-- e2e: NAME -->`` bash blocks, by name."""
    text = GUIDE.read_text()
    found = re.findall(r"<!-- e2e: ([\w-]+) -->\n```bash\n(.*?)```", text, flags=re.S)
    return dict(found)


@dataclass
class Chart:
    cluster: RealCluster
    env: dict[str, str]

    def run(self, block: str, timeout: float = 1800, **extra: str) -> str:
        """Run one of the guide's blocks as a user would, in the repository."""
        script = guide_blocks()[block]
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=REPO, env={**self.env, **extra}, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"guide block {block!r} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    def pods(self) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=operator",
            "-o", "json",
        ).stdout  # fmt: skip
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def holder(self) -> str:
        lease = self.cluster.get("lease", LEASE, NAMESPACE) or {}
        identity = str((lease.get("spec") or {}).get("holderIdentity") or "")
        return identity.split("_", 1)[0]  # "<pod>_<uuid>"


@pytest.fixture(scope="module")
def chart(real_cluster: RealCluster) -> Iterator[Chart]:
    """The chart installed by the guide's own commands on a cluster with a real node."""
    env = dict(os.environ)
    env["KUBECONFIG"] = str(real_cluster.kubeconfig)
    env["PATH"] = f"{hack_cluster.bin_dir()}:{env['PATH']}"
    env["CURL_IMAGE"] = images.push("curl", real_cluster.registry)
    real_cluster.kubectl(
        "label", "node", real_cluster.node, "apps=phi-3", "app=tuning-phi-3",
        "kaito-test=upgrade", "--overwrite",
    )  # fmt: skip
    installed = Chart(real_cluster, env)
    out = installed.run("install")
    assert "STATUS: deployed" in out, out
    yield installed
    with contextlib.suppress(AssertionError):
        installed.run("uninstall", timeout=600)  # when a test failed before the last one


def test_operator_and_webhook_run_as_containers_with_leader_election(chart: Chart) -> None:
    pods = chart.pods()
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == chart.cluster.node
        statuses = {c["name"]: c["ready"] for c in pod["status"]["containerStatuses"]}
        assert statuses == {"operator": True, "webhook": True}
    assert chart.cluster.wait_for("a leader", chart.holder, 60) in {
        p["metadata"]["name"] for p in pods
    }
    # the API server calls the webhook through its Service: a bad Workspace is refused
    bad = chart.cluster.kubectl(
        "apply", "-f", "-", check=False,
        stdin=json.dumps({
            "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace",
            "metadata": {"name": "bad", "namespace": "default"},
            "resource": {"instanceType": "Standard_NC6s_v3",
                         "labelSelector": {"matchLabels": {"apps": "x"}}},
            "inference": {"preset": {"name": "no-such-model"}},
        }),
    )  # fmt: skip
    assert bad.returncode != 0
    assert "inference.preset.name" in bad.stderr and "no-such-model" in bad.stderr


def test_prometheus_scrapes_the_operator_through_its_service(chart: Chart, tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("needs Debian's prometheus (hack/setup installs it)")
    svc = chart.cluster.get("service", "kaito-metrics", NAMESPACE)
    assert svc is not None
    target = f"{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
    prom = Prometheus(tmp_path, {"kaito-operator": target})
    try:
        # Prometheus keeps its connection, so its scrapes stay with whichever replica the
        # Service picked: ask for what the standby exports too (its API client's requests)
        def scraped() -> bool:
            with contextlib.suppress(OSError, AssertionError, KeyError, IndexError):
                up = prom.query('max_over_time(up{job="kaito-operator"}[1m])')
                found = prom.query("max_over_time(rest_client_requests_total[1m])")
                return up[0]["value"][1] == "1" and bool(found)
            return False

        try:
            chart.cluster.wait_for("Prometheus to scrape the operator's Service", scraped, 120)
        except AssertionError:
            raise AssertionError(json.dumps(prom.api("targets"), indent=1)) from None
    finally:
        prom.stop()


def _standins(tmp_path: Path) -> dict[str, Path]:
    """Tiny Phi-3 models under the seed's model ids, and a LoRA adapter for them."""
    py = serving_python()
    assert py is not None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": "."}
    out = {}
    for model_id in ("microsoft/Phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-128k-instruct"):
        dest = tmp_path / model_id.split("/")[1]
        args = [str(py), "-m", "tests.serving.standin", model_id, str(dest)]
        if "128k" in model_id:
            args += ["--adapter", str(tmp_path / "adapter")]
        subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True, text=True)
        out[model_id] = dest
    out["adapter"] = tmp_path / "adapter"
    return out


def _hub(standins: dict[str, Path]) -> tuple[subprocess.Popen[str], str]:
    """hack/hub.py on the node's address, serving the stand-ins under the real ids."""
    py = serving_python()
    assert py is not None
    args = [str(py), str(REPO / "hack" / "hub.py"), "--host", realnode.GATEWAY]
    for model_id, path in standins.items():
        if "/" in model_id:
            args += ["--publish", f"{model_id}={path}"]
    hub = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert hub.stdout is not None
    return hub, str(json.loads(hub.stdout.readline())["url"])


def _succeeded(chart: Chart, name: str, timeout: int = 1200) -> None:
    chart.cluster.kubectl(
        "wait", "--for=condition=WorkspaceSucceeded", f"workspace/{name}", "-n", "default",
        f"--timeout={timeout}s", timeout=timeout + 60,
    )  # fmt: skip


def test_the_seed_walkthrough_answers_through_the_service(
    chart: Chart, tmp_path: Path, data_url: str
) -> None:
    """The seed's inference, adapter and tuning manifests, on the installed chart."""
    if not (REPO / "hack" / "hub.py").exists():
        pytest.skip("needs the local model hub (hack/hub.py)")
    standins = _standins(tmp_path)
    hub, url = _hub(standins)
    k = chart.cluster.kubectl
    try:
        helm = subprocess.run(
            [str(REPO / "hack" / "helm"), "upgrade", "kaito", "charts/kaito", "-n", NAMESPACE,
             "--reset-then-reuse-values", f"--set=modelHub.endpoint={url}",
             "--set=webhook.allowPrivateUrls=true",  # the tuning data on the node's address
             "--wait", "--timeout=10m"],
            cwd=REPO, env=chart.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert helm.returncode == 0, helm.stderr
        # 1. inference: the guide's block, verbatim
        out = chart.run("walkthrough")
        assert re.search(r"NAME\s+INSTANCE\s+RESOURCEREADY\s+INFERENCEREADY\s+WORKSPACEREADY", out)
        assert re.search(r"workspace-phi-3-mini\s+Standard_NC6s_v3\s+True\s+True\s+True", out)
        assert re.search(r"workspace-phi-3-mini\s+ClusterIP\s+\S+\s+<none>\s+80/TCP", out)
        assert '{"Result"' in out, out[-3000:]
        # curl's answer has no newline: kubectl's `pod "curl" deleted` may follow on its line
        answer, _ = json.JSONDecoder().raw_decode(out[out.index('{"Result"') :])
        assert isinstance(answer["Result"], str) and answer["Result"]

        # 2. adapters: the example with its placeholder replaced by an image we publish
        adapter = f"{chart.cluster.registry}/adapter-phi-3:0.0.1"
        subprocess.run(
            [str(REPO / "hack" / "push-model"), str(standins["adapter"]), adapter, "--plain-http"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        k("delete", "workspace", "workspace-phi-3-mini", "-n", "default", "--timeout=300s")
        k("label", "node", chart.cluster.node, "apps=phi-3-adapter", "--overwrite")
        example = REPO / "examples" / "inference" / "kaito_workspace_phi_3_with_adapters.yaml"
        text = example.read_text().replace("registry.example.com/adapter-phi-3:0.0.1", adapter)
        k("apply", "-n", "default", "-f", "-", stdin=text)
        _succeeded(chart, "workspace-phi-3-mini-adapter")
        svc = chart.cluster.get("service", "workspace-phi-3-mini-adapter", "default")
        assert svc is not None
        body = {"prompt": "What is Kubernetes?", "model": "phi-3-adapter",
                "generate_kwargs": {"max_new_tokens": 8}}  # fmt: skip
        said = chart.cluster.run_curl(
            "default", "-sS", "-X", "POST", f"http://{svc['spec']['clusterIP']}/chat",
            "-H", "Content-Type: application/json", "-d", json.dumps(body),
        )  # fmt: skip
        assert json.loads(said)["Result"]

        # 3. tuning: the example with a dataset and an output registry this machine reaches
        chart.cluster.apply(
            {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
             "metadata": {"name": "registry-push-secret", "namespace": "default"},
             "stringData": {".dockerconfigjson": json.dumps({"auths": {}})}}
        )  # fmt: skip
        tuning = (REPO / "examples" / "workspace-tuning-phi-3.yaml").read_text()
        source = re.search(r'- "(https://huggingface\.co/[^"]+)"', tuning)
        assert source is not None
        tuning = tuning.replace(source.group(1), data_url).replace(
            "registry.example.com/adapter-tuning-phi-3:0.0.1",
            f"{chart.cluster.registry}/adapter-tuning-phi-3:0.0.1",
        )
        k("apply", "-n", "default", "-f", "-", stdin=tuning)
        _succeeded(chart, "workspace-tuning-phi-3")
    finally:
        for name in ("workspace-phi-3-mini", "workspace-phi-3-mini-adapter",
                     "workspace-tuning-phi-3"):  # fmt: skip
            k("delete", "workspace", name, "-n", "default", "--timeout=300s", check=False)
        hub.terminate()
        hub.wait(30)


def _tiny_workspace(chart: Chart) -> None:
    """A small Workspace that serves during the upgrade; its weights image is in the preset
    registry (the node's), as the chart was told."""
    tiny = (
        subprocess.run(
            [str(REPO / "hack" / "tiny-model")], capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    subprocess.run(
        [str(REPO / "hack" / "push-model"), tiny,
         f"{chart.cluster.registry}/kaito-tiny-llama-test:0.1.0", "--plain-http"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    chart.cluster.apply(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "steady", "namespace": "default"},
            "resource": {
                "instanceType": "Standard_NC6s_v3",
                "labelSelector": {"matchLabels": {"kaito-test": "upgrade"}},
            },
            "inference": {"preset": {"name": "tiny-llama-test"}},
        }
    )
    chart.cluster.kubectl(
        "wait", "--for=condition=WorkspaceSucceeded", "workspace/steady", "-n", "default",
        "--timeout=900s", timeout=960,
    )  # fmt: skip


def test_helm_upgrade_leaves_the_workload_alone_and_the_lease_moves(chart: Chart) -> None:
    _tiny_workspace(chart)
    before_pod = chart.cluster.get("pod", "steady-0", "default")
    before_sts = chart.cluster.get("statefulset", "steady", "default")
    assert before_pod is not None and before_sts is not None
    old_pods = {p["metadata"]["name"] for p in chart.pods()}
    # a new operator image: the same content under a new tag (what a release bump looks like)
    deploy = chart.cluster.get("deployment", "kaito-operator", NAMESPACE)
    assert deploy is not None
    current = deploy["spec"]["template"]["spec"]["containers"][0]["image"]
    new_tag = current.rsplit(":", 1)[1] + "-next"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
         f"docker://{current}", f"docker://{current.rsplit(':', 1)[0]}:{new_tag}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    chart.run("upgrade", NEW_OPERATOR_TAG=new_tag)
    new_pods = chart.pods()
    assert {p["metadata"]["name"] for p in new_pods}.isdisjoint(old_pods)
    assert all(p["spec"]["containers"][0]["image"].endswith(f":{new_tag}") for p in new_pods)
    new_names = {p["metadata"]["name"] for p in new_pods}
    chart.cluster.wait_for("a new pod to lead", lambda: chart.holder() in new_names, 60)
    after_pod = chart.cluster.get("pod", "steady-0", "default")
    after_sts = chart.cluster.get("statefulset", "steady", "default")
    assert after_pod is not None and after_sts is not None
    # the serving pod was not restarted, and its StatefulSet not rewritten
    assert after_pod["metadata"]["uid"] == before_pod["metadata"]["uid"]
    assert after_sts["metadata"]["generation"] == before_sts["metadata"]["generation"]
    assert all(c["restartCount"] == 0 for c in after_pod["status"]["containerStatuses"])


def test_a_deleted_leader_is_replaced_within_the_lease_duration(chart: Chart) -> None:
    leader = chart.holder()
    assert leader
    start = time.monotonic()
    chart.cluster.kubectl("-n", NAMESPACE, "delete", "pod", leader, "--wait=false")
    chart.cluster.wait_for(
        "another replica to take the Lease",
        lambda: chart.holder() not in ("", leader),
        LEASE_DURATION_S + 15,
    )
    took = time.monotonic() - start
    assert took <= LEASE_DURATION_S, f"failover took {took:.1f}s"


def test_uninstall_leaves_nothing_of_the_release_behind(chart: Chart) -> None:
    chart.run("uninstall", timeout=600)
    k = chart.cluster.kubectl

    def left() -> list[str]:
        kinds = "all,secrets,serviceaccounts,roles,rolebindings"
        release = "app.kubernetes.io/instance=kaito"
        names = k("-n", NAMESPACE, "get", kinds, "-l", release, "-o", "name").stdout.split()
        return names + [
            name for name in k("get", "clusterroles,clusterrolebindings,"
                               "validatingwebhookconfigurations", "-o", "name").stdout.split()
            if "kaito" in name
        ]  # fmt: skip

    # pods finish their termination (the webhook's drain) after helm has returned
    with contextlib.suppress(AssertionError):
        chart.cluster.wait_for("the release's objects to go", lambda: not left(), 120)
    assert left() == []
    assert chart.pods() == []
    crds = k("get", "crd", "-o", "name").stdout
    assert "workspaces.kaito.sh" in crds  # Helm keeps CRDs
