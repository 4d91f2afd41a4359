"""A stand-in node provider for upstream Kaito's NodeClaims (bench/workspaces.py).

Upstream's controller creates Karpenter NodeClaims and waits for a provider (Azure's
gpu-provisioner, Karpenter) to turn them into nodes.  Here that provider is the same code
our operator runs as its KWOK backend: kaito-py's machine controller with the KWOK
provisioner, alone in this process and with no workspace controller.  So the provider's
part is the same for both controllers the benchmark compares: the finalizer, a KWOK GPU
node named after the claim and labelled from it, the claim's status once the node is
Ready, and on delete the node first, then the finalizer.

Usage: python bench/nodeclaim_standin.py --kubeconfig K --metrics-port P --health-port Q
(KAITO_SRC names the operator source to take the provider from; default: this checkout's)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, os.environ.get("KAITO_SRC") or str(Path(__file__).resolve().parents[1] / "src"))

from kaito.api import constants as C
from kaito.controllers import machine
from kaito.controllers.common import NODECLAIM
from kaito.operator import ClientNodes, sku_gpus, sku_shape
from kaito.provisioner.kwok import KwokProvisioner
from kaito.runtime.gvk import NODE
from kaito.runtime.handlers import EnqueueMapped
from kaito.runtime.manager import Manager

CLAIM_SELECTOR = f"{C.LABEL_KARPENTER_NODEPOOL}={C.KAITO_NODEPOOL}"  # Kaito's claims only


async def run(args: argparse.Namespace) -> None:
    mgr = await Manager.create(
        args.kubeconfig, metrics_port=args.metrics_port, health_port=args.health_port
    )
    provisioner = KwokProvisioner(ClientNodes(mgr.client, mgr.cache), sku_shape)
    reconciler = machine.MachineReconciler(
        mgr.client,
        mgr.cache,
        recorder=mgr.event_recorder("kaito-bench-provider"),
        provisioner=provisioner,
        claim_gvk=NODECLAIM,
        gpus_of=sku_gpus,
    )
    (
        mgr.controller("machine", reconciler, workers=args.workers)
        .watches(NODECLAIM, label_selector=CLAIM_SELECTOR)
        .watches(NODE, EnqueueMapped(lambda node: list(machine.requests_for_node(node))))
    )
    await mgr.run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--health-port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
