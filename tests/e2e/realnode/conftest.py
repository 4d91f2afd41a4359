"""Fixtures for tests on real nodes: a control plane of their own plus kubelet + containerd.

Each module gets a fresh cluster with one real node (``hack/cluster add-node --real``), or
the nodes its ``REAL_NODES`` names (a multi-node Workspace needs two); the machine's real
nodes belong to one cluster at a time, so modules run one after the other. Bringing the nodes
down must leave the machine as it found it: the fixture compares a snapshot of everything
machine-wide (firewall, links, routes, mounts, cgroups, sysctls, processes) taken before the
nodes started with one taken after ``down``, and fails the module when they differ.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hack import hostguard, images, realnode
from hack.registry import LocalRegistry

from ..conftest import REPO, Cluster, hack_cluster
from ..controllers.conftest import Operator, install_crds
from ..serving_support import serve_chat_dataset, serving_python

NODE = "real-gpu"
NODE_GPUS = 4  # extended resource: several GPU pods of different tests fit at once
# A module may set REAL_NODES = ((name, gpus), ...) for more than one node; all carry
# NODE_LABELS and INSTANCE_TYPE.
DEFAULT_REAL_NODES = ((NODE, NODE_GPUS),)
NODE_LABELS = {"apps": "real"}
INSTANCE_TYPE = "Standard_NC6s_v3"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (kubelet, containerd, iptables)"
    for tool in ("runc", "buildah", "mmdebstrap", "socat", "docker-registry", "skopeo", "gcc"):
        if shutil.which(tool) is None:
            return f"needs {tool} (hack/setup installs it)"
    if serving_python() is None:
        return "serving venv absent: run hack/serving-env"
    return None


def snapshot_difference(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What `after` has that `before` had not (rules, links, mounts...), and changed values.

    Only additions count for lists: something else on the machine (an image build) may have
    unmounted or ended its own things meanwhile.
    """
    out = []
    builds = str(images.images_dir())  # an image build's own mounts come and go meanwhile
    for key, was in before.items():
        now = after.get(key)
        if isinstance(was, list) and isinstance(now, list):
            new = sorted(n for n in set(now) - set(was) if not str(n).startswith(builds))
            if new:
                out.append(f"{key}: left behind {new[:10]}")
        elif was != now:
            out.append(f"{key}: was {was!r}, now {now!r}")
    return out


@dataclass
class RealCluster(Cluster):
    """A cluster with real nodes; `registry` is the nodes' own (plain HTTP) registry."""

    node: str = NODE  # the first (it owns the machine-wide pieces)
    registry: str = ""
    nodes: tuple[str, ...] = (NODE,)

    def wait_for(self, what: str, fn: Callable[[], Any], timeout: float = 300) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = fn()
            if value:
                return value
            time.sleep(1)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")

    def pod_logs(self, name: str, namespace: str, container: str | None = None) -> str:
        args = ["logs", name, "-n", namespace] + (["-c", container] if container else [])
        return self.kubectl(*args, check=False).stdout

    def run_curl(self, namespace: str, *curl_args: str, timeout: float = 180) -> str:
        """`kubectl run curl --image=<ours> --restart=Never -- curl ...`; its output.

        As with the seed's curl image, arguments that start with a command (``python3``)
        run that command instead.
        """
        name = f"curl-{uuid.uuid4().hex[:6]}"
        self.kubectl(
            "run", name, "-n", namespace, f"--image={images.ref('curl', self.registry)}",
            "--restart=Never", "--", *curl_args,
        )  # fmt: skip

        def done() -> str | None:
            pod = self.get("pod", name, namespace)
            phase = (pod or {}).get("status", {}).get("phase")
            return phase if phase in {"Succeeded", "Failed"} else None

        phase = self.wait_for(f"pod {name} to finish", done, timeout)
        out = self.pod_logs(name, namespace)
        self.kubectl("delete", "pod", name, "-n", namespace, "--wait=false", check=False)
        assert phase == "Succeeded", f"curl pod {phase}: {out}"
        return out


@pytest.fixture(scope="module")
def real_cluster(request: pytest.FixtureRequest) -> Iterator[RealCluster]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    nodes: tuple[tuple[str, int], ...] = getattr(request.module, "REAL_NODES", DEFAULT_REAL_NODES)
    before = hostguard.snapshot()
    directory = Path(tempfile.mkdtemp(prefix="kaito-real-"))
    cluster_dir = directory / "c"
    try:
        state = hack_cluster.up(cluster_dir, quiet=True)
        for name, gpus in nodes:
            hack_cluster.add_node(cluster_dir, name, INSTANCE_TYPE, NODE_LABELS, gpus, True,
                                  real=True)  # fmt: skip
    except hack_cluster.ClusterError as exc:
        hack_cluster.down(cluster_dir, quiet=True)
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"the real node did not start: {exc}", pytrace=False)
    rc = RealCluster(
        kubeconfig=Path(state.kubeconfig), directory=cluster_dir, registry=realnode.REGISTRY,
        node=nodes[0][0], nodes=tuple(name for name, _ in nodes),
    )  # fmt: skip
    try:
        yield rc
    finally:
        hack_cluster.down(cluster_dir, quiet=True)
        shutil.rmtree(directory, ignore_errors=True)
        left = snapshot_difference(before, hostguard.snapshot())
        if left:
            pytest.fail("hack/cluster down left state behind: " + "; ".join(left), pytrace=False)


@pytest.fixture(scope="module")
def node_images(real_cluster: RealCluster) -> dict[str, str]:
    """The serving and curl images, built here (cached by content) and in the node's registry.

    ``KAITO_E2E_SERVING_IMAGE`` names a serving image already in the node's registry instead
    (to try an image built elsewhere, or to skip a rebuild while working on tests).
    """
    refs = {name: images.push(name, real_cluster.registry) for name in ("curl",)}
    refs["serving"] = os.environ.get("KAITO_E2E_SERVING_IMAGE") or images.push(
        "serving", real_cluster.registry
    )
    return refs


@pytest.fixture(scope="module")
def private_registry(
    real_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRegistry]:
    """A registry with htpasswd auth on the node's address: weights, adapters, tuning output."""
    reg = LocalRegistry.start(tmp_path_factory.mktemp("registry"), bind=realnode.GATEWAY)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def tiny_images(private_registry: LocalRegistry) -> dict[str, str]:
    """The tiny test model's weights and one adapter, pushed as images (the seed's way)."""
    py = serving_python()
    assert py is not None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [str(py), "-m", "tests.serving.tiny_model"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    tiny = Path(out.stdout.strip().splitlines()[-1])
    refs = {
        "weights": f"{private_registry.host}/kaito-tiny-llama-test:0.1.0",
        "adapter": f"{private_registry.host}/tiny-adapter:0.1.0",
    }
    for src, ref in ((tiny / "model", refs["weights"]),
                     (tiny / "adapters" / "adapter-a", refs["adapter"])):  # fmt: skip
        subprocess.run(
            [str(REPO / "hack" / "push-model"), str(src), ref, "--plain-http", "--authfile",
             str(private_registry.docker_config)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    return refs


@pytest.fixture(scope="module")
def real_operator(
    real_cluster: RealCluster,
    node_images: dict[str, str],
    private_registry: LocalRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    """The operator (out of cluster) with the serving image the node's registry holds."""
    install_crds(real_cluster)
    op = Operator(
        real_cluster,
        tmp_path_factory.mktemp("operator"),
        [
            f"--serving-image={node_images['serving']}",
            f"--plain-http-registries={private_registry.host}",
        ],
        {"PRESET_REGISTRY_NAME": private_registry.host},
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def ns(real_cluster: RealCluster, real_operator: Operator) -> Iterator[str]:
    """A namespace whose Workspaces are finalized while the operator still runs."""
    name = f"real-{uuid.uuid4().hex[:8]}"
    real_cluster.kubectl("create", "namespace", name)
    real_cluster.wait_for(
        "the default ServiceAccount",
        lambda: (
            real_cluster.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0
        ),
        30,
    )
    yield name
    real_cluster.kubectl("-n", name, "delete", "workspaces", "--all", "--timeout=120s",
                         check=False)  # fmt: skip
    real_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


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


def wrong_pull_secret(registry: LocalRegistry) -> bytes:
    wrong = base64.b64encode(f"{registry.user}:not-the-password".encode()).decode()
    return json.dumps({"auths": {registry.host: {"auth": wrong}}}).encode()


@pytest.fixture
def data_url(tmp_path: Path) -> Iterator[str]:
    """A parquet file served on the node's address, where the Job's pod can fetch it."""
    with serve_chat_dataset(tmp_path / "http", realnode.GATEWAY) as url:
        yield url
