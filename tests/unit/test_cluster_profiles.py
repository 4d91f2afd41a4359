"""hack/cluster's profiles: `tuned` (the test cluster) and `stock` (the components' defaults)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _hack_cluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kaito_hack_cluster_unit", REPO / "hack" / "cluster.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


hc = _hack_cluster()
RATE_FLAGS = (
    "--max-requests-inflight=0",
    "--max-mutating-requests-inflight=0",
    "--enable-priority-and-fairness=false",
    "--kube-api-qps=500",
    "--kube-api-burst=1000",
)


def argv_of(tmp_path: Path, profile: str, name: str, **extra: list[str]) -> list[str]:
    state = hc.ClusterState(
        directory=str(tmp_path),
        ports={n: 1000 + i for i, n in enumerate((*hc.COMPONENTS, "etcd-peer"))},
        profile=profile,
        extra_args=dict(extra),
    )
    argv, _ = hc.component_argv(name, state, tmp_path)
    return list(argv)


@pytest.mark.parametrize("name", ["kube-apiserver", "kube-controller-manager", "kube-scheduler"])
def test_stock_keeps_every_component_default_that_tuned_lifts(tmp_path: Path, name: str) -> None:
    tuned = argv_of(tmp_path, "tuned", name)
    stock = argv_of(tmp_path, "stock", name)
    assert not [a for a in stock if a in RATE_FLAGS]
    assert set(tuned) - set(stock) <= set(RATE_FLAGS)
    if name == "kube-scheduler":  # its client rate lives in its config file
        argv_of(tmp_path, "stock", name)
        assert "qps" not in (tmp_path / "scheduler.yaml").read_text()
        argv_of(tmp_path, "tuned", name)
        assert "qps: 500" in (tmp_path / "scheduler.yaml").read_text()
    elif name == "kube-apiserver":
        assert {"--max-requests-inflight=0", "--enable-priority-and-fairness=false"} <= set(tuned)
    else:
        assert "--kube-api-qps=500" in tuned


def test_extra_args_and_profile_survive_a_reload(tmp_path: Path) -> None:
    state = hc.ClusterState(
        directory=str(tmp_path),
        ports={"etcd": 1},
        profile="stock",
        extra_args={"kube-apiserver": ["--audit-log-path=/dev/null"]},
    )
    state.save()
    loaded = hc.ClusterState.load(tmp_path)
    assert loaded is not None
    assert loaded.profile == "stock"
    assert loaded.extra_args == {"kube-apiserver": ["--audit-log-path=/dev/null"]}
    ports = {n: 1000 + i for i, n in enumerate((*hc.COMPONENTS, "etcd-peer"))}
    loaded.ports = ports
    argv, _ = hc.component_argv("kube-apiserver", loaded, tmp_path)
    assert "--audit-log-path=/dev/null" in argv


def test_an_old_state_file_means_the_tuned_profile(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(
        json.dumps({"directory": str(tmp_path), "ports": {}, "components": {}})
    )
    loaded = hc.ClusterState.load(tmp_path)
    assert loaded is not None and loaded.profile == "tuned" and loaded.extra_args == {}


def test_unknown_profile_and_a_profile_change_are_refused(tmp_path: Path) -> None:
    with pytest.raises(hc.ClusterError, match="unknown profile"):
        hc.up(tmp_path / "c", profile="fast")
    hc.ClusterState(directory=str(tmp_path / "d"), profile="tuned").path.mkdir()
    hc.ClusterState(directory=str(tmp_path / "d"), profile="tuned").save()
    with pytest.raises(hc.ClusterError, match="runs the 'tuned' profile"):
        hc.up(tmp_path / "d", profile="stock")
