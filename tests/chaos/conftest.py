"""The bounded chaos suite's environment: its own control plane, with an audit log.

The cluster is package-scoped (stopped when the suite ends, so it never runs beside the e2e
cluster longer than needed) and logs every write, so a trial can prove who wrote what when.
Sizes come from the environment for longer local runs: KAITO_CHAOS_SCALE (default 1).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, hack_cluster
from tests.e2e.controllers.conftest import Operator, install_crds

SCALE = int(os.environ.get("KAITO_CHAOS_SCALE", "1"))


@pytest.fixture(scope="package")
def chaos_cluster() -> Iterator[Cluster]:
    directory = Path(tempfile.mkdtemp(prefix="kaito-chaos-"))
    try:
        state = hack_cluster.up(directory / "cluster", quiet=True, audit=True)
    except hack_cluster.ClusterError as exc:
        pytest.fail(f"local control plane did not start: {exc}", pytrace=False)
    try:
        cluster = Cluster(kubeconfig=Path(state.kubeconfig), directory=Path(state.directory))
        install_crds(cluster)
        yield cluster
    finally:
        hack_cluster.down(Path(state.directory), quiet=True)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def audit_log(chaos_cluster: Cluster) -> Path:
    assert chaos_cluster.directory is not None
    state = hack_cluster.ClusterState.load(chaos_cluster.directory)
    assert state is not None and state.audit
    return Path(state.audit_log)


@pytest.fixture
def chaos_namespace(chaos_cluster: Cluster) -> Iterator[str]:
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    chaos_cluster.kubectl("create", "namespace", name)
    yield name
    chaos_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


OperatorFactory = Callable[..., Operator]


@pytest.fixture
def operators(
    chaos_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorFactory]:
    """Start operators (``extra`` flags, ``env``, a ``kubeconfig`` of their own); all stopped."""
    made: list[Operator] = []

    def make(
        *extra: str, env: dict[str, str] | None = None, kubeconfig: Path | None = None
    ) -> Operator:
        target = chaos_cluster
        if kubeconfig is not None:
            target = Cluster(kubeconfig=kubeconfig, directory=chaos_cluster.directory)
        op = Operator(target, tmp_path_factory.mktemp("operator"), list(extra), env)
        op.start()
        made.append(op)
        return op

    yield make
    for op in made:
        op.stop()
