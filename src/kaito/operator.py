"""``kaito-operator``: wires the runtime, the controllers and a node backend together.

Runs out of cluster against any kubeconfig (``hack/cluster``) or in cluster with its
ServiceAccount. Every flag also reads an environment variable (``KAITO_<FLAG>``), the way
the Helm chart passes settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from kaito import featuregates
from kaito.api import Workspace
from kaito.controllers import garbage, inferenceset, machine, workspace_watches
from kaito.controllers import metrics as kaito_metrics
from kaito.controllers.activator import Activator
from kaito.controllers.claim_liveness import REGISTRATION_TIMEOUT_S
from kaito.controllers.common import MACHINE, NODECLAIM, WORKSPACE, WorkspaceSettings
from kaito.controllers.expectations import FinalWrites
from kaito.controllers.workspace import WorkspaceReconciler
from kaito.presets import get_sku
from kaito.provisioner.base import NodeProvisioner
from kaito.provisioner.kwok import KwokProvisioner
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.errors import AlreadyExists, NotFound
from kaito.runtime.gvk import NODE
from kaito.runtime.handlers import EnqueueMapped
from kaito.runtime.leaderelection import LeaderElection, LeadershipLost
from kaito.runtime.logs import LOG_FORMATS, setup_logging
from kaito.runtime.manager import Manager
from kaito.runtime.objects import to_dict

log = logging.getLogger("kaito.operator")

# external: NodeClaims are created and deleted here and fulfilled by a provisioner already in
# the cluster (gpu-provisioner, Karpenter); the operator never touches the nodes themselves.
PROVISIONERS = ("kwok", "azure", "byo", "external")
# A new Workspace's first reconcile waits on its ClusterIP Service's create, which the API
# server answers one allocation at a time (measured at N=100: 1.1 s p50, 2.1 s max, with 20
# reconciles in flight; the headless Service 0.06 s). With 20 workers every worker sat in that
# line and the other new Workspaces' NodeClaims waited for a worker (claims created 3.7 s p50,
# 7.3 s p99). A reconcile is a coroutine, so more of them in flight cost little; the API
# server's own limits (max-requests-inflight) stay the bound.
WORKSPACE_WORKERS = 100


class ClientNodes:
    """The KWOK backend's NodeAPI on top of our client and cache."""

    def __init__(self, client: Client, cache: Cache) -> None:
        self.client = client
        self.cache = cache
        self._deleted = FinalWrites()  # nodes we deleted that the cache may still show

    async def create_node(self, node: dict[str, Any]) -> None:
        with contextlib.suppress(AlreadyExists):
            await self.client.create(node)

    async def get_node(self, name: str) -> dict[str, Any] | None:
        found = self.cache.get(NODE, None, name)
        return None if found is None else to_dict(found)

    async def delete_node(self, name: str) -> None:
        found = self.cache.get(NODE, None, name)
        uid = str(to_dict(found)["metadata"].get("uid") or "") if found is not None else ""
        if self._deleted.sent(uid):
            return  # deleted already; the cache has not shown it go yet
        with contextlib.suppress(NotFound):
            await self.client.delete(NODE, None, name)
        self._deleted.mark(uid)

    async def list_nodes(self, label_selector: str) -> list[dict[str, Any]]:
        return [to_dict(n) for n in self.cache.list(NODE, labels=label_selector)]


def sku_shape(instance_type: str) -> tuple[int, int, int] | None:
    sku = get_sku(instance_type)
    if sku is None:
        return None
    return sku.gpu_count, sku.vcpu, int(sku.memory_gib)


def sku_gpus(instance_type: str) -> int:
    sku = get_sku(instance_type)
    return sku.gpu_count if sku is not None else 0


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"KAITO_{name.upper().replace('-', '_')}", default)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kaito-operator",
        description="Kaito operator: Workspaces → GPU nodes → vLLM inference and tuning.",
    )
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="default: in-cluster")
    p.add_argument("--bind-address", default=_env("bind-address", "127.0.0.1"))
    p.add_argument("--metrics-port", type=int, default=int(_env("metrics-port", "8080") or 8080))
    p.add_argument("--health-port", type=int, default=int(_env("health-port", "8081") or 8081))
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=(_env("leader-elect", "false") or "false").lower() == "true",
    )
    p.add_argument(
        "--leader-election-namespace", default=_env("leader-election-namespace", "kaito-system")
    )
    p.add_argument(
        "--node-provisioner", choices=PROVISIONERS, default=_env("node-provisioner", "kwok")
    )
    p.add_argument(
        "--legacy-machines",
        action="store_true",
        default=(_env("legacy-machines", "false") or "false").lower() == "true",
        help="emit karpenter.sh/v1alpha5 Machines instead of v1 NodeClaims (old gpu-provisioner)",
    )
    p.add_argument("--serving-image", default=_env("serving-image", "kaito-py/serving:0.1.0"))
    p.add_argument(
        "--preset-registry",
        default=os.environ.get("PRESET_REGISTRY_NAME") or _env("preset-registry", "kaito-py"),
        help="registry holding preset model images (upstream's PRESET_REGISTRY_NAME)",
    )
    p.add_argument(
        "--plain-http-registries",
        default=_env("plain-http-registries", ""),
        help="comma-separated registries (host:port) that the in-pod pullers and the tuning "
        "pusher reach over plain HTTP, as a node's containerd does for them",
    )
    p.add_argument(
        "--cloud-provider",
        default=os.environ.get("CLOUD_PROVIDER") or _env("cloud-provider", "azure"),
        help="the cloud the cluster runs on (upstream's CLOUD_PROVIDER: azure, aws, arc); on "
        "azure, Workspace pods tolerate the spot node pools' taint",
    )
    p.add_argument(
        "--feature-gates",
        default=_env("feature-gates", ""),
        help="upstream's gates, e.g. vLLM=true,disableNodeAutoProvisioning=false",
    )
    p.add_argument(
        "--activator-port",
        type=int,
        default=int(_env("activator-port", "0") or 0),
        help="serve scale-to-zero InferenceSets' requests on this port (0: off)",
    )
    p.add_argument(
        "--activator-host",
        default=_env("activator-host")
        or f"kaito-activator.{os.environ.get('POD_NAMESPACE') or 'kaito-system'}.svc.cluster.local",
        help="DNS name of the activator's Service (scale-to-zero Services point there)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(_env("workers", "20") or 20),
        help="concurrent reconciles of each controller but the workspace controller",
    )
    p.add_argument(
        "--workspace-workers",
        type=int,
        default=int(_env("workspace-workers", str(WORKSPACE_WORKERS)) or WORKSPACE_WORKERS),
        help="concurrent reconciles of the workspace controller (see WORKSPACE_WORKERS)",
    )
    p.add_argument(
        "--gc-interval",
        type=float,
        default=float(_env("gc-interval", "60") or 60),
        help="seconds between garbage collection of orphaned NodeClaims and nodes",
    )
    p.add_argument(
        "--registration-timeout",
        type=float,
        default=float(_env("registration-timeout", str(REGISTRATION_TIMEOUT_S)) or 900),
        help="seconds a launched node may take to register before its claim is replaced",
    )
    p.add_argument("--log-level", default=_env("log-level", "info"))
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=_env("log-format", "text"),
        help="json: one object per line with controller, key and reconcile_id fields",
    )
    args = p.parse_args(argv)
    for flag in ("workers", "workspace_workers"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    try:
        gates = featuregates.parse(args.feature_gates)
    except featuregates.FeatureGateError as exc:
        p.error(str(exc))
    if gates.enabled("disableNodeAutoProvisioning"):
        args.node_provisioner = "byo"  # as upstream: no node auto-provisioning at all
    return args


def build_provisioner(name: str, client: Client, cache: Cache) -> NodeProvisioner | None:
    if name == "kwok":
        return KwokProvisioner(ClientNodes(client, cache), sku_shape)
    if name == "azure":
        from kaito.provisioner.azure import AzureProvisioner  # noqa: PLC0415  (cloud SDK import)

        # azure-core logs every request at INFO; keep the operator's log readable
        logging.getLogger("azure").setLevel(logging.WARNING)
        return AzureProvisioner.from_env()
    return None


def build(
    mgr: Manager, args: argparse.Namespace, activator: Activator | None = None
) -> NodeProvisioner | None:
    """Register the controllers and watches on `mgr`; returns the node backend, if any."""
    mgr.scheme.register(WORKSPACE, Workspace)
    claim_gvk = MACHINE if args.legacy_machines else NODECLAIM
    settings = WorkspaceSettings(
        node_provisioner=args.node_provisioner,
        claims_finalized_by_us=args.node_provisioner not in ("byo", "external"),
        claim_gvk=claim_gvk,
        serving_image=args.serving_image,
        preset_registry=args.preset_registry,
        plain_http_registries=frozenset(
            r.strip() for r in args.plain_http_registries.split(",") if r.strip()
        ),
        spot_toleration=args.cloud_provider.lower() == "azure",
        # the model hub, as the Hugging Face libraries read it; passed on to the serving pods
        hub_endpoint=(os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None,
    )
    cache = mgr.cache
    provisioner = build_provisioner(args.node_provisioner, mgr.client, cache)
    ws = WorkspaceReconciler(
        mgr.client,
        cache,
        mgr.event_recorder("kaito-workspace"),
        settings,
        cloud_skus=getattr(provisioner, "describe_instance_type", None),
    )
    workspace_ctrl = mgr.controller("workspace", ws, workers=args.workspace_workers)
    workspace_watches.watch(workspace_ctrl, cache, claim_gvk, ws.claims.expectations)

    kaito_metrics.register(
        mgr.metrics.registry,
        cache,
        workspace=WORKSPACE,
        claim=claim_gvk,
        is_leader=lambda: mgr.is_leader,
    )
    if provisioner is not None:
        mc = machine.MachineReconciler(
            mgr.client,
            cache,
            recorder=mgr.event_recorder("kaito-machine"),
            provisioner=provisioner,
            claim_gvk=claim_gvk,
            gpus_of=sku_gpus,
            registration_timeout_s=args.registration_timeout,
        )
        machine_ctrl = (
            mgr.controller("machine", mc, workers=args.workers)
            .watches(claim_gvk, label_selector=workspace_watches.CLAIM_SELECTOR)
            .watches(NODE, EnqueueMapped(machine.requests_for_node))
        )
        mc.enqueue = machine_ctrl.queue.add
        provisioner.on_settled = mc.wake  # a finished cloud operation wakes its claim
    if featuregates.parse(args.feature_gates).enabled("enableInferenceSetController"):
        inferenceset.register(
            mgr,
            byo=args.node_provisioner == "byo",
            workers=args.workers,
            activator=activator,
            activator_host=args.activator_host if activator is not None else None,
        )
    return provisioner


def start_garbage_collector(
    mgr: Manager, provisioner: NodeProvisioner | None, args: argparse.Namespace
) -> asyncio.Task[None] | None:
    """The periodic collection of orphaned claims and node resources (with a backend)."""
    if provisioner is None:
        return None
    return asyncio.create_task(
        garbage.run_garbage_collector(
            mgr.client,
            provisioner,
            mgr.cache,
            MACHINE if args.legacy_machines else NODECLAIM,
            interval_s=args.gc_interval,
            is_leader=lambda: mgr.is_leader,
        ),
        name="garbage collector",
    )


async def run(args: argparse.Namespace) -> int:
    identity = f"{socket.gethostname()}_{uuid.uuid4()}"
    election = (
        LeaderElection(args.leader_election_namespace, "kaito-operator", identity=identity)
        if args.leader_elect
        else None
    )
    mgr = await Manager.create(
        args.kubeconfig,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        bind_address=args.bind_address,
        leader_election=election,
        # tells the replicas apart in the apiserver's audit log
        user_agent=f"kaito-operator/{identity}",
    )
    activator = (
        Activator(mgr.client, mgr.cache, inferenceset.INFERENCESET, registry=mgr.metrics.registry)
        if args.activator_port
        else None
    )
    provisioner = build(mgr, args, activator)
    if activator is not None:
        await activator.start(args.bind_address, args.activator_port)
    gc_task = start_garbage_collector(mgr, provisioner, args)
    try:
        await mgr.run()
    finally:
        if activator is not None:
            await activator.stop()
        if gc_task is not None:
            gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gc_task
        if provisioner is not None:
            await provisioner.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(
        getattr(logging, str(args.log_level).upper(), logging.INFO), log_format=args.log_format
    )
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    except LeadershipLost as exc:  # a standby leads now; restart and queue up behind it
        print(f"kaito-operator: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"kaito-operator: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
