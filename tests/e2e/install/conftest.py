"""Install fixtures: helm, a chart release, a kubeconfig acting as its ServiceAccount."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO, Cluster

CHART = REPO / "charts" / "kaito"
RELEASE = "kaito-e2e"  # not "kaito": the plain-manifests test owns those cluster-scoped names
NAMESPACE = "kaito-e2e-system"
SERVICE_ACCOUNT = f"{RELEASE}-operator"


@pytest.fixture(scope="session")
def helm() -> str:
    cached = sorted(Path.home().glob(".cache/kaito-py/helm*/bin/helm"))
    if not cached and shutil.which("go") is None:
        pytest.skip("no helm binary cached and no Go to build one (hack/helm)")
    out = subprocess.run(
        [str(REPO / "hack" / "helm"), "path"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@dataclass
class Release:
    helm: str
    cluster: Cluster
    name: str = RELEASE
    namespace: str = NAMESPACE

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.helm, f"--kubeconfig={self.cluster.kubeconfig}", *args],
            capture_output=True, text=True, check=False, timeout=180,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{SERVICE_ACCOUNT}"


@pytest.fixture(scope="module")
def release(helm: str, cluster: Cluster) -> Iterator[Release]:
    """The chart installed for the KWOK backend; the webhook Service has no pods behind it
    here (no image runs under KWOK), so admission failures are ignored for this release."""
    rel = Release(helm, cluster)
    rel.run(
        "install", rel.name, str(CHART), "--namespace", rel.namespace, "--create-namespace",
        "--set", "nodeProvisioner=kwok", "--set", "webhook.failurePolicy=Ignore",
        "--set", "leaderElection.enabled=true",
    )  # fmt: skip
    yield rel
    rel.run("uninstall", rel.name, "--namespace", rel.namespace, "--wait", check=False)


def service_account_kubeconfig(cluster: Cluster, rel: Release, path: Path) -> Path:
    """A kubeconfig whose user is the release's ServiceAccount (a bound token)."""
    token = cluster.kubectl(
        "-n", rel.namespace, "create", "token", SERVICE_ACCOUNT, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = dict(admin["clusters"][0]["cluster"])
    ca = server.pop("certificate-authority", None)
    if ca:
        data = Path(ca if Path(ca).is_absolute() else cluster.kubeconfig.parent / ca).read_bytes()
        server["certificate-authority-data"] = base64.b64encode(data).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": SERVICE_ACCOUNT}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
