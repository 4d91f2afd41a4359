"""E2E fixtures: one real local control plane per test session, a fresh namespace per test.

Set ``KAITO_E2E_KUBECONFIG`` to reuse a running cluster (started with ``hack/cluster up``)
instead of starting one; tests that must restart components are skipped then.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_cluster_module() -> ModuleType:
    path = REPO / "hack" / "cluster.py"
    spec = importlib.util.spec_from_file_location("kaito_hack_cluster", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


hack_cluster = _load_cluster_module()


@dataclass
class Cluster:
    """A running control plane: its kubeconfig and, when we own it, its processes."""

    kubeconfig: Path
    directory: Path | None  # None when reusing someone else's cluster

    @property
    def owned(self) -> bool:
        return self.directory is not None

    @property
    def kubectl_path(self) -> str:
        path = hack_cluster.bin_dir() / "kubectl"
        return str(path) if path.exists() else "kubectl"

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def apply(self, obj: dict[str, Any] | str, namespace: str | None = None) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", stdin=text)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = ["-n", namespace] if namespace else []
        proc = self.kubectl("get", kind, name, *ns, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def add_node(
        self,
        name: str,
        instance_type: str = "Standard_NC6s_v3",
        labels: dict[str, str] | None = None,
        gpus: int | None = None,
    ) -> dict[str, Any]:
        """Create a KWOK GPU node shaped like `instance_type` and wait until it is Ready."""
        sku_gpus, cpu, mem = hack_cluster.sku_shape(instance_type)
        node: dict[str, Any] = hack_cluster.fake_node(
            name, instance_type, sku_gpus if gpus is None else gpus, cpu, mem, labels
        )
        self.kubectl("create", "-f", "-", stdin=json.dumps(node))
        self.kubectl("wait", "--for=condition=Ready", f"node/{name}", "--timeout=60s")
        return node

    def restart(self, component: str) -> None:
        if self.directory is None:
            pytest.skip("needs a cluster owned by this test session")
        hack_cluster.restart(self.directory, component)

    def stop(self, component: str) -> None:
        if self.directory is None:
            pytest.skip("needs a cluster owned by this test session")
        hack_cluster.stop(self.directory, component)

    @property
    def etcd_url(self) -> str:
        if self.directory is None:
            pytest.skip("needs a cluster owned by this test session")
        state = hack_cluster.ClusterState.load(self.directory)
        return f"http://127.0.0.1:{state.ports['etcd']}"


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    reuse = os.environ.get("KAITO_E2E_KUBECONFIG")
    if reuse:
        yield Cluster(kubeconfig=Path(reuse), directory=None)
        return
    directory = Path(tempfile.mkdtemp(prefix="kaito-e2e-"))
    try:
        state = hack_cluster.up(directory / "cluster", quiet=True)
    except hack_cluster.ClusterError as exc:
        pytest.fail(f"local control plane did not start: {exc}", pytrace=False)
    try:
        yield Cluster(kubeconfig=Path(state.kubeconfig), directory=Path(state.directory))
    finally:
        hack_cluster.down(Path(state.directory), quiet=True)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists; deleted afterwards."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while cluster.kubectl("-n", name, "get", "sa", "default", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"default ServiceAccount never appeared in {name}")
        time.sleep(0.1)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
