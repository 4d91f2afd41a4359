"""A manager in its own process, for the leader-election test: prints LEADING when elected.

Usage: python -m tests.e2e.runtime.leader_proc KUBECONFIG NAMESPACE LEASE IDENTITY
"""

from __future__ import annotations

import asyncio
import sys

from kaito.runtime import LeaderElection, Manager, Request, Result, load_config
from kaito.runtime.gvk import CONFIGMAP


async def main(kubeconfig: str, namespace: str, lease: str, identity: str) -> None:
    mgr = Manager(
        await load_config(kubeconfig),
        metrics_port=None,
        health_port=None,
        leader_election=LeaderElection(namespace, lease, identity=identity),
    )

    async def reconcile(_: Request) -> Result:
        return Result()

    mgr.controller("noop", reconcile).watches(CONFIGMAP, namespace=namespace)
    run = asyncio.create_task(mgr.run())
    ready = asyncio.create_task(mgr.ready.wait())
    await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
    if mgr.ready.is_set():
        print("LEADING", flush=True)
    await run


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
