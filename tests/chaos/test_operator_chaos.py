"""Operator chaos, bounded for CI: kill -9, control-plane faults, leader failover.

Every trial prints its seed and what it did; rerun one with KAITO_CHAOS_SEED=<seed>.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from hack.fake_arm import FakeArmAdmin
from tests.chaos.conftest import SCALE, OperatorFactory
from tests.chaos.edge_trials import azure_fault_storm, bad_input_at_every_edge
from tests.chaos.harness import LoopThread, Trial, tracebacks
from tests.chaos.trials import (
    control_plane_faults,
    kill_during_rollout_and_delete,
    leader_failover,
)
from tests.e2e.azure_provisioner.conftest import operator_env, running_fake_arm
from tests.e2e.conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def seed() -> int:
    return int(os.environ.get("KAITO_CHAOS_SEED") or random.SystemRandom().randrange(2**32))


def test_kill_9_during_rollout_and_mass_delete(
    chaos_cluster: Cluster, chaos_namespace: str, operators: OperatorFactory
) -> None:
    op = operators()
    for i in range(SCALE):
        trial = Trial(f"kill-{i}", seed())
        fig = kill_during_rollout_and_delete(chaos_cluster, chaos_namespace, op, trial, 5 * SCALE)
        assert (fig.leaks, fig.duplicates) == (0, 0)
    assert not tracebacks(op)


def test_control_plane_faults_mid_rollout(
    chaos_cluster: Cluster, chaos_namespace: str, operators: OperatorFactory
) -> None:
    trial = Trial("control-plane", seed())
    fig = control_plane_faults(
        chaos_cluster,
        chaos_namespace,
        lambda kubeconfig: operators(kubeconfig=kubeconfig),
        trial,
        6 * SCALE,
    )
    assert fig.missed_final_states == 0
    assert (fig.leaks, fig.duplicates, fig.tracebacks) == (0, 0, 0)


@pytest.mark.parametrize("freeze", [False, True], ids=["kill", "freeze"])
def test_leader_failover_under_load(
    chaos_cluster: Cluster,
    chaos_namespace: str,
    operators: OperatorFactory,
    audit_log: Path,
    freeze: bool,
) -> None:
    trial = Trial("failover-freeze" if freeze else "failover-kill", seed())
    fig = leader_failover(
        chaos_cluster,
        chaos_namespace,
        lambda: operators("--leader-elect", f"--leader-election-namespace={chaos_namespace}"),
        audit_log,
        trial,
        4 * SCALE,
        freeze=freeze,
    )
    assert fig.missed_final_states == 0
    assert (fig.leaks, fig.duplicates, fig.tracebacks) == (0, 0, 0)


def test_azure_fault_storm(
    chaos_cluster: Cluster, chaos_namespace: str, operators: OperatorFactory
) -> None:
    trial = Trial("azure-storm", seed())
    with running_fake_arm(chaos_cluster.kubeconfig) as fake:
        op = operators(
            "--node-provisioner=azure", "--registration-timeout=20", env=operator_env(fake)
        )
        loop = LoopThread()
        admin = FakeArmAdmin(fake.url, fake.ca_file)
        try:
            fig = azure_fault_storm(
                chaos_cluster, chaos_namespace, admin, loop, op, trial, 5 * SCALE, 5 * SCALE
            )
        finally:
            loop.run(admin.close())
            loop.close()
            op.stop()
    assert (fig.leaks, fig.tracebacks) == (0, 0)


def test_bad_input_at_every_edge(
    chaos_cluster: Cluster, chaos_namespace: str, operators: OperatorFactory
) -> None:
    op = operators()
    fig = bad_input_at_every_edge(chaos_cluster, chaos_namespace, op, Trial("bad-input", seed()))
    assert fig.tracebacks == 0
