"""The chaos suite at full size: prints trials, faults, leaks, duplicates, missed final states.

Starts its own control plane (hack/cluster, with the apiserver's audit log on), installs the
CRDs and runs the trials of tests/chaos/trials.py against real operator processes:

- kill -9 of the operator at a random moment of a rollout of W Workspaces and again during
  their mass delete (``--kill-trials``, ``--workspaces``);
- apiserver restart, etcd compaction and watch cuts (reset, blackhole) mid-rollout;
- two replicas with leader election, the leader killed or frozen mid-rollout (failover time,
  audit log: no write of the old leader after the takeover);
- Azure fault storms on the fake ARM (429, 5xx, LRO failed, LRO never ending, no join);
- bad input at every edge the operator reads.

Every trial prints its seed; ``--seed`` replays a run. The fuzz trial (>= 1000 generated
specs) is the pytest module tests/chaos/test_fuzz.py with KAITO_FUZZ_SPECS=1000 (CI runs 400).

Usage: .venv/bin/python bench/chaos.py [--kill-trials 50] [--workspaces 30] [--seed N]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from hack.fake_arm import FakeArmAdmin  # noqa: E402
from tests.chaos.edge_trials import azure_fault_storm, bad_input_at_every_edge  # noqa: E402
from tests.chaos.harness import LoopThread, Trial, tracebacks  # noqa: E402
from tests.chaos.trials import (  # noqa: E402
    Figures,
    control_plane_faults,
    kill_during_rollout_and_delete,
    leader_failover,
)
from tests.e2e.azure_provisioner.conftest import operator_env, running_fake_arm  # noqa: E402
from tests.e2e.conftest import Cluster, hack_cluster  # noqa: E402
from tests.e2e.controllers.conftest import Operator, install_crds  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kill-trials", type=int, default=50)
    p.add_argument("--workspaces", type=int, default=30)
    p.add_argument("--control-plane-trials", type=int, default=5)
    p.add_argument("--failover-trials", type=int, default=4)
    p.add_argument("--azure-trials", type=int, default=5)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    master = random.Random(args.seed if args.seed is not None else random.randrange(2**32))
    directory = Path(tempfile.mkdtemp(prefix="kaito-chaos-bench-"))
    state = hack_cluster.up(directory / "cluster", quiet=True, audit=True)
    cluster = Cluster(kubeconfig=Path(state.kubeconfig), directory=Path(state.directory))
    install_crds(cluster)
    logs = directory / "operators"
    logs.mkdir()
    totals: dict[str, Figures] = {}
    failovers: list[str] = []
    started = time.monotonic()

    def namespace() -> str:
        name = f"chaos-{uuid.uuid4().hex[:8]}"
        cluster.kubectl("create", "namespace", name)
        return name

    def operator(
        *extra: str, env: dict[str, str] | None = None, kubeconfig: Path | None = None
    ) -> Operator:
        target = cluster if kubeconfig is None else Cluster(kubeconfig, cluster.directory)
        op = Operator(target, Path(tempfile.mkdtemp(dir=logs)), list(extra), env)
        op.start()
        return op

    def record(kind: str, fig: Figures) -> None:
        totals.setdefault(kind, Figures()).add(fig)

    try:
        op = operator()
        for i in range(args.kill_trials):
            trial = Trial(f"kill-{i}", master.randrange(2**32))
            record("kill -9 (rollout + mass delete)", kill_during_rollout_and_delete(
                cluster, namespace(), op, trial, args.workspaces))  # fmt: skip
        totals["kill -9 (rollout + mass delete)"].tracebacks = len(tracebacks(op))
        op.stop()
        for i in range(args.control_plane_trials):
            ns = namespace()
            trial = Trial(f"control-plane-{i}", master.randrange(2**32))
            fig = control_plane_faults(
                cluster, ns, lambda kc: operator(kubeconfig=kc), trial, args.workspaces
            )
            record("apiserver restart, etcd compaction, watch cuts", fig)
        for i in range(args.failover_trials):
            ns = namespace()
            freeze = i % 2 == 1
            trial = Trial(f"failover-{'freeze' if freeze else 'kill'}-{i}", master.randrange(2**32))
            fig = leader_failover(
                cluster, ns,
                lambda ns=ns: operator("--leader-elect", f"--leader-election-namespace={ns}"),
                Path(state.audit_log), trial, args.workspaces // 2, freeze=freeze,
            )  # fmt: skip
            failovers += fig.notes
            record("leader failover (kill -9 / SIGSTOP)", fig)
        with running_fake_arm(cluster.kubeconfig) as fake:
            loop = LoopThread()
            admin = FakeArmAdmin(fake.url, fake.ca_file)
            for i in range(args.azure_trials):
                loop.run(admin.reset())
                op = operator(
                    "--node-provisioner=azure", "--registration-timeout=20", env=operator_env(fake)
                )
                trial = Trial(f"azure-storm-{i}", master.randrange(2**32))
                record("Azure fault storms", azure_fault_storm(
                    cluster, namespace(), admin, loop, op, trial, 10, 10))  # fmt: skip
                op.stop()
            loop.run(admin.close())
            loop.close()
        op = operator()
        record("bad input at every edge", bad_input_at_every_edge(
            cluster, namespace(), op, Trial("bad-input", master.randrange(2**32))))  # fmt: skip
        op.stop()
    finally:
        hack_cluster.down(Path(state.directory), quiet=True)
        shutil.rmtree(directory, ignore_errors=True)

    print(f"\nchaos run: {time.monotonic() - started:.0f}s")
    print(f"{'trial kind':48} {'trials':>6} {'workspaces':>10} {'faults':>6} {'leaks':>5} "
          f"{'dups':>4} {'missed':>6} {'tracebacks':>10}")  # fmt: skip
    for kind, fig in totals.items():
        print(f"{kind:48} {fig.trials:6} {fig.workspaces:10} {fig.faults:6} {fig.leaks:5} "
              f"{fig.duplicates:4} {fig.missed_final_states:6} {fig.tracebacks:10}")  # fmt: skip
    if failovers:
        print("failover times: " + ", ".join(failovers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
