"""Generated Workspace specs through admission and reconcile (hypothesis, from the CRD schema).

Every rejection must name a field; every admitted spec must reach Succeeded or a failure
condition with a reason within a bound; the operator must log no traceback. The number of
specs is KAITO_FUZZ_SPECS (default 400, bounded for CI; the README's figures are of 1000);
the seed is printed (KAITO_CHAOS_SEED reruns it).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed

from kaito.runtime.client import Client
from kaito.runtime.config import load_config
from kaito.runtime.errors import ApiError
from kaito.runtime.gvk import GVK
from kaito.runtime.metrics import Metrics
from tests.chaos.conftest import OperatorFactory
from tests.chaos.fuzz import Spec, schemas, workspace_specs
from tests.chaos.harness import (
    LoopThread,
    Trial,
    brief,
    final_state,
    get_list,
    tracebacks,
    wait_gone,
    webhook,
)
from tests.chaos.test_operator_chaos import seed
from tests.e2e.conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SPECS = int(os.environ.get("KAITO_FUZZ_SPECS", "400"))
FINAL_WITHIN_S = 180.0
BATCH = 250
WORKSPACE = GVK("kaito.sh", "v1beta1", "Workspace")
FIELD = re.compile(
    r"\b(metadata|resource|inference|tuning)\b|\b[a-z][A-Za-z]*(\.[a-z][A-Za-z]*|\[\d+\])+"
)


def names_a_field(message: str) -> bool:
    return bool(FIELD.search(message))


def test_generated_specs_through_admission_and_reconcile(
    chaos_cluster: Cluster,
    chaos_namespace: str,
    operators: OperatorFactory,
    tmp_path: Path,
) -> None:
    trial = Trial("fuzz", seed())
    op = operators()
    loop = LoopThread()
    client = Client(loop.run(load_config(str(chaos_cluster.kubeconfig))), metrics=Metrics())
    submitted: dict[str, tuple[Spec, str]] = {}  # name -> (spec, outcome)
    specs: list[Spec] = []
    by_schema = schemas()

    @settings(
        max_examples=SPECS, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @hypothesis_seed(trial.seed)
    @given(workspace_specs(by_schema))
    def generate(spec: Spec) -> None:
        specs.append(spec)

    generate()
    trial.say(f"generated {len(specs)} specs")

    async def submit_all(batch: list[tuple[int, Spec]]) -> None:
        gate = asyncio.Semaphore(16)

        async def submit(i: int, spec: Spec) -> None:
            name = f"fz-{i:04d}"
            body = spec.manifest(name)
            body["metadata"]["namespace"] = chaos_namespace
            async with gate:
                try:
                    await client.create(body)
                except ApiError as exc:
                    submitted[name] = (spec, f"rejected {exc.status}: {exc.message}")
                    return
            submitted[name] = (spec, "admitted")

        await asyncio.gather(*(submit(i, spec) for i, spec in batch))

    async def delete(names: list[str]) -> None:
        gate = asyncio.Semaphore(16)

        async def one(name: str) -> None:
            async with gate:
                await client.delete(WORKSPACE, chaos_namespace, name, ignore_not_found=True)

        await asyncio.gather(*(one(n) for n in names))

    finals: dict[str, str] = {}
    pending: set[str] = set()
    try:
        with webhook(chaos_cluster, chaos_namespace, tmp_path / "certs"):
            # in batches, each settled and deleted before the next: at most a few dozen
            # admitted Workspaces (nodes, pods) exist at once on the 2-core machine
            numbered = list(enumerate(specs))
            for start in range(0, len(numbered), BATCH):
                batch = numbered[start : start + BATCH]
                loop.run(submit_all(batch), timeout=600)
                names = [f"fz-{i:04d}" for i, _ in batch]
                admitted = [n for n in names if submitted[n][1] == "admitted"]
                waiting = set(admitted)
                deadline = time.monotonic() + FINAL_WITHIN_S
                while waiting and time.monotonic() < deadline:
                    time.sleep(2)
                    for ws in get_list(chaos_cluster, "workspaces", "-n", chaos_namespace):
                        name = ws["metadata"]["name"]
                        if name in waiting and (state := final_state(ws)) is not None:
                            finals[name] = state
                            waiting.discard(name)
                if waiting:
                    items = get_list(chaos_cluster, "workspaces", "-n", chaos_namespace)
                    for ws in items:
                        if ws["metadata"]["name"] in waiting:
                            trial.say(
                                f"NOT FINAL {ws['metadata']['name']} "
                                f"{submitted[ws['metadata']['name']][0].body}: {brief(ws)}"
                            )
                pending |= waiting
                loop.run(delete(admitted), timeout=600)
                trial.say(f"batch {start // BATCH + 1}: {len(admitted)} admitted, settled, deleted")
        nameless = {
            n: (submitted[n][0].manifest(n), out)
            for n, (_, out) in submitted.items()
            if out != "admitted" and not names_a_field(out)
        }
        assert not nameless, f"seed {trial.seed}: rejections that name no field: {nameless}"
        admitted = [n for n, (_, out) in submitted.items() if out == "admitted"]
        rejected = len(submitted) - len(admitted)
        mutated_admitted = [n for n in admitted if submitted[n][0].mutation]
        trial.say(
            f"{len(submitted)} specs: {rejected} rejected (each naming a field), "
            f"{len(admitted)} admitted ({len(mutated_admitted)} of them mutated but valid)"
        )
        counts: dict[str, int] = {}
        for state in finals.values():
            counts[state] = counts.get(state, 0) + 1
        trial.say(f"final within {FINAL_WITHIN_S:.0f}s: {counts}; not final: {len(pending)}")
        assert not pending, {
            n: (submitted[n][0].body, submitted[n][0].version) for n in sorted(pending)[:3]
        }
        found = tracebacks(op)
        assert not found, found[0]
        assert op.metric("controller_runtime_reconcile_panics_total") == 0
    finally:
        loop.run(client.close())
        loop.close()
        # gone before this operator stops: the next test's operator must not inherit them
        chaos_cluster.kubectl(
            "delete", "workspaces", "--all", "-n", chaos_namespace, "--wait=false", check=False
        )
        wait_gone(chaos_cluster, chaos_namespace, timeout=300, trial=trial)
