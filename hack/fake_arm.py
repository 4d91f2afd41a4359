"""A local Azure Resource Manager look-alike for the AKS agent-pool API, over HTTPS.

The real ``azure-mgmt-containerservice`` and ``azure-identity`` clients are pointed at it
(``base_url``, ``authority``, ``connection_verify``) so the ``azure`` node backend is tested
without Azure.  It speaks what the SDK relies on: ``api-version``, ``provisioningState``
transitions, ``Azure-AsyncOperation``/``Location`` operation polling, ``nextLink`` paging,
ARM error bodies and an OAuth2 client-credentials token endpoint.  When a pool reaches
Succeeded it plays AKS's node join: a KWOK Node with the agent-pool labels and an Azure
providerID appears in the local cluster; deleting the pool deletes the Node.

Faults are injected through ``/admin/*`` (loopback only, no auth), see :class:`Fault`.

Run it as a process::

    FAKE_ARM_CLIENT_SECRET=... python hack/fake_arm.py --dir /tmp/arm --kubeconfig KUBECONFIG

It prints one JSON line (url, ca_file, pid) and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import importlib.util
import ipaddress
import json
import os
import signal
import ssl
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from aiohttp import ClientSession, TCPConnector, web

RP = "Microsoft.ContainerService"
POOLS = (
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService"
    "/managedClusters/{cluster}/agentPools"
)
OPERATIONS = "/subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{loc}"
RESOURCE_SKUS = "/subscriptions/{sub}/providers/Microsoft.Compute/skus"
TOKEN_ROUTE = "/{tenant}/oauth2/v2.0/token"
REQUEST_FAULTS = {"throttle", "server_error", "quota", "sku_not_available", "error"}
LRO_FAULTS = {"stuck_lro", "lro_failed", "no_join"}
HANDLER = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _hack_cluster() -> ModuleType:
    """hack/cluster.py (fake_node, sku_shape), loaded by path so both run modes work."""
    name = "kaito_hack_cluster"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("cluster.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost that is also its own CA bundle."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "fake-arm.crt", directory / "fake-arm.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-arm.local")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


# ------------------------------------------------------------------------- state


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Fault:
    """One injected failure, consumed `count` times by matching requests.

    kind: ``throttle`` (429 + Retry-After), ``server_error`` (500), ``quota`` (400
    QuotaExceeded), ``sku_not_available`` (400 SkuNotAvailable), ``error`` (any `status`,
    `code`, `message`), ``stuck_lro`` (the next create never finishes), ``lro_failed`` (the
    next create ends Failed with `code`/`message`), ``no_join`` (the next create succeeds,
    its VM exists, but its node never registers with the cluster).
    """

    kind: str
    count: int = 1
    method: str = "*"  # HTTP method it applies to, or "*"
    retry_after: float | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None


@dataclass
class Operation:
    id: str
    status: str = "InProgress"
    error: dict[str, Any] | None = None
    start: str = field(default_factory=_now)
    end: str | None = None


@dataclass
class Pool:
    sub: str
    rg: str
    cluster: str
    name: str
    properties: dict[str, Any]
    state: str = "Creating"
    node: str | None = None
    vm_id: str | None = None
    task: asyncio.Task[None] | None = None


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


class FakeArm:
    """The server; usable in-process (``await start()``) or as a process (``main``)."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int = 0,
        kubeconfig: Path | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        location: str = "eastus",
        create_delay_s: float = 1.0,
        delete_delay_s: float = 0.5,
        page_size: int = 100,
        operation_retry_after: float | None = None,
    ) -> None:
        self.directory = directory
        self.port = port
        self.kubeconfig = kubeconfig
        self.client_id = client_id
        self._client_secret = client_secret
        self.location = location
        self.config: dict[str, Any] = {
            "create_delay_s": create_delay_s,
            "delete_delay_s": delete_delay_s,
            "page_size": page_size,
            "operation_retry_after": operation_retry_after,
            # VM sizes beyond Kaito's table: [{name, vCPUs, MemoryGB, GPUs}]
            "extra_vm_sizes": [],
        }
        self.pools: dict[tuple[str, str, str, str], Pool] = {}
        self.operations: dict[str, Operation] = {}
        self.faults: list[Fault] = []
        self.log: list[dict[str, Any]] = []
        self._tokens: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._kube: Any = None
        self.cert_file, self._key_file = make_certificate(directory)

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post(TOKEN_ROUTE, self._token)
        pools = POOLS
        app.router.add_get(pools, self._list_pools)
        app.router.add_get(pools + "/{pool}", self._get_pool)
        app.router.add_put(pools + "/{pool}", self._put_pool)
        app.router.add_delete(pools + "/{pool}", self._delete_pool)
        app.router.add_get(pools + "/{pool}/machines", self._list_machines)
        app.router.add_get(OPERATIONS + "/operations/{op}", self._operation_status)
        app.router.add_get(OPERATIONS + "/operationresults/{op}", self._operation_result)
        app.router.add_get(RESOURCE_SKUS, self._resource_skus)
        app.router.add_post("/admin/faults", self._admin_add_fault)
        app.router.add_delete("/admin/faults", self._admin_clear_faults)
        app.router.add_post("/admin/config", self._admin_config)
        app.router.add_get("/admin/state", self._admin_state)
        app.router.add_post("/admin/reset", self._admin_reset)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self._key_file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self.url

    async def stop(self) -> None:
        for pool in self.pools.values():
            if pool.task is not None:
                pool.task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._kube is not None:
            await self._kube.close()
            self._kube = None

    # ------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: HANDLER) -> web.StreamResponse:
        path = request.path
        if path.startswith("/admin/") or path.endswith("/oauth2/v2.0/token"):
            return await handler(request)
        response: web.StreamResponse | None = self._check(request) or self._fault(request)
        if response is None:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = exc
        self.log.append(
            {
                "method": request.method,
                "path": path,
                "pool": request.match_info.get("pool"),
                "status": response.status,
            }
        )
        return response

    def _check(self, request: web.Request) -> web.Response | None:
        if "api-version" not in request.query:
            return _error(
                400, "MissingApiVersionParameter", "The api-version query parameter is required."
            )
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        if not header.startswith("Bearer ") or (self._client_secret and token not in self._tokens):
            return _error(
                401, "InvalidAuthenticationToken", "The access token is missing or invalid."
            )
        return None

    def _take(self, kinds: set[str], method: str) -> Fault | None:
        for fault in self.faults:
            if fault.kind in kinds and fault.method in ("*", method) and fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def _fault(self, request: web.Request) -> web.Response | None:
        on_put = request.method == "PUT"
        kinds = REQUEST_FAULTS if on_put else REQUEST_FAULTS - {"quota", "sku_not_available"}
        fault = self._take(kinds, request.method)
        if fault is None:
            return None
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.kind == "throttle":
            return _error(
                429,
                fault.code or "TooManyRequests",
                fault.message or "The request is being throttled; retry later.",
                **headers,
            )
        if fault.kind == "server_error":
            return _error(
                fault.status or 500,
                fault.code or "InternalServerError",
                fault.message or "An internal server error occurred.",
                **headers,
            )
        if fault.kind == "quota":
            return _error(
                fault.status or 400,
                fault.code or "QuotaExceeded",
                fault.message
                or "Operation could not be completed as it results in exceeding approved "
                f"standardNCSv3Family Cores quota. Location: {self.location}, Current Limit: 0, "
                "Current Usage: 0, Additional Required: 6.",
            )
        if fault.kind == "sku_not_available":
            return _error(
                fault.status or 400,
                fault.code or "SkuNotAvailable",
                fault.message
                or f"The requested VM size is currently not available in location "
                f"'{self.location}'. Please try another size or deploy to a different location.",
            )
        return _error(
            fault.status or 400, fault.code or "BadRequest", fault.message or "injected error"
        )

    def _base(self, request: web.Request) -> str:
        return f"https://{request.host}"

    def _pool_key(self, request: web.Request) -> tuple[str, str, str, str]:
        m = request.match_info
        return (m["sub"].lower(), m["rg"].lower(), m["cluster"].lower(), m["pool"])

    def _pool_json(self, pool: Pool) -> dict[str, Any]:
        properties = dict(pool.properties)
        properties |= {
            "provisioningState": pool.state,
            "powerState": {"code": "Running"},
            "orchestratorVersion": "1.30.0",
            "currentOrchestratorVersion": "1.30.0",
            "nodeImageVersion": "AKSUbuntu-2204gen2containerd-202501.01.0",
        }
        return {
            "id": (
                f"/subscriptions/{pool.sub}/resourceGroups/{pool.rg}/providers/{RP}"
                f"/managedClusters/{pool.cluster}/agentPools/{pool.name}"
            ),
            "name": pool.name,
            "type": f"{RP}/managedClusters/agentPools",
            "properties": properties,
        }

    def _operation(self, request: web.Request, sub: str) -> tuple[Operation, dict[str, str]]:
        op = Operation(id=str(uuid.uuid4()))
        self.operations[op.id] = op
        api = request.query["api-version"]
        base = self._base(request) + OPERATIONS.format(sub=sub, loc=self.location)
        headers = {
            "Azure-AsyncOperation": f"{base}/operations/{op.id}?api-version={api}",
            "Location": f"{base}/operationresults/{op.id}?api-version={api}",
        }
        return op, headers

    # ------------------------------------------------------------ token endpoint

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self._client_secret is not None and (
            form.get("client_secret") != self._client_secret
            or (self.client_id and form.get("client_id") != self.client_id)
        ):
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
                status=401,
            )
        token = "fake-arm-" + uuid.uuid4().hex
        self._tokens.add(token)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600,
             "access_token": token}
        )  # fmt: skip

    # ------------------------------------------------------------ agent pools

    async def _list_pools(self, request: web.Request) -> web.Response:
        m = request.match_info
        scope = (m["sub"].lower(), m["rg"].lower(), m["cluster"].lower())
        pools = [p for k, p in sorted(self.pools.items()) if k[:3] == scope]
        skip = int(request.query.get("$skipToken", "0"))
        size = int(self.config["page_size"])
        body: dict[str, Any] = {"value": [self._pool_json(p) for p in pools[skip : skip + size]]}
        if skip + size < len(pools):
            query = f"api-version={request.query['api-version']}&$skipToken={skip + size}"
            body["nextLink"] = f"{self._base(request)}{request.path}?{query}"
        return web.json_response(body)

    async def _get_pool(self, request: web.Request) -> web.Response:
        pool = self.pools.get(self._pool_key(request))
        if pool is None:
            return self._not_found(request)
        return web.json_response(self._pool_json(pool))

    def _not_found(self, request: web.Request) -> web.Response:
        return _error(
            404,
            "NotFound",
            f"Agent pool '{request.match_info['pool']}' was not found in managed cluster "
            f"'{request.match_info['cluster']}'.",
        )

    async def _put_pool(self, request: web.Request) -> web.Response:
        key = self._pool_key(request)
        body = await request.json()
        properties = dict(body.get("properties") or {})
        properties.pop("provisioningState", None)
        if not properties.get("vmSize"):
            return _error(400, "InvalidParameter", "properties.vmSize is required.")
        pool = self.pools.get(key)
        if pool is not None and pool.state in ("Creating", "Deleting"):
            verb = "create" if pool.state == "Creating" else "delete"
            return _error(
                409,
                "OperationNotAllowed",
                f"Operation is not allowed because there's an in progress {verb} node pool "
                f"operation on agent pool '{pool.name}'.",
            )
        if pool is not None and pool.state == "Succeeded":
            pool.properties = properties
            return web.json_response(self._pool_json(pool), status=200)
        status = 200 if pool is not None else 201
        m = request.match_info
        pool = Pool(m["sub"], m["rg"], m["cluster"], m["pool"], properties)
        self.pools[key] = pool
        op, headers = self._operation(request, m["sub"])
        lro_fault = self._take(LRO_FAULTS, "PUT")
        if lro_fault is None or lro_fault.kind != "stuck_lro":
            pool.task = asyncio.create_task(self._finish_create(key, pool, op, lro_fault))
        if self.config["operation_retry_after"] is not None:
            headers["Retry-After"] = f"{self.config['operation_retry_after']:g}"
        return web.json_response(self._pool_json(pool), status=status, headers=headers)

    async def _finish_create(
        self, key: tuple[str, str, str, str], pool: Pool, op: Operation, fault: Fault | None
    ) -> None:
        await asyncio.sleep(float(self.config["create_delay_s"]))
        if self.pools.get(key) is not pool or pool.state != "Creating":
            return
        error: dict[str, Any] | None = None
        if fault is not None and fault.kind == "no_join":
            pool.node, pool.vm_id = self._node_identity(pool)  # a VM whose kubelet never joins
        elif fault is not None:
            error = {
                "code": fault.code or "ZonalAllocationFailed",
                "message": fault.message
                or "Allocation failed. We do not have sufficient capacity for the requested VM "
                f"size in this region ({self.location}).",
            }
        else:
            try:
                await self._register_node(pool)
            except Exception as exc:  # surfaced through the operation, like AKS would
                error = {"code": "NodeRegistrationFailed", "message": f"node join failed: {exc}"}
        op.end = _now()
        if error is None:
            pool.state, op.status = "Succeeded", "Succeeded"
        else:
            pool.state, op.status, op.error = "Failed", "Failed", error

    async def _delete_pool(self, request: web.Request) -> web.Response:
        key = self._pool_key(request)
        pool = self.pools.get(key)
        if pool is None:
            return web.Response(status=204)
        if pool.state == "Deleting":
            return _error(
                409,
                "OperationNotAllowed",
                f"Operation is not allowed because there's an in progress delete node pool "
                f"operation on agent pool '{pool.name}'.",
            )
        if pool.task is not None:
            pool.task.cancel()  # deleting cancels a running create, as in AKS
        pool.state = "Deleting"
        op, headers = self._operation(request, request.match_info["sub"])
        pool.task = asyncio.create_task(self._finish_delete(key, pool, op))
        if self.config["operation_retry_after"] is not None:
            headers["Retry-After"] = f"{self.config['operation_retry_after']:g}"
        return web.Response(status=202, headers=headers)

    async def _finish_delete(
        self, key: tuple[str, str, str, str], pool: Pool, op: Operation
    ) -> None:
        await asyncio.sleep(float(self.config["delete_delay_s"]))
        try:
            await self._unregister_node(pool)
        except Exception as exc:
            op.error = {"code": "InternalError", "message": f"node removal failed: {exc}"}
            op.status, op.end, pool.state = "Failed", _now(), "Failed"
            return
        if self.pools.get(key) is pool:
            del self.pools[key]
        op.status, op.end = "Succeeded", _now()

    async def _list_machines(self, request: web.Request) -> web.Response:
        pool = self.pools.get(self._pool_key(request))
        if pool is None:
            return self._not_found(request)
        machines = []
        if pool.node and pool.vm_id:
            machines.append(
                {
                    "id": self._pool_json(pool)["id"] + f"/machines/{pool.node}",
                    "name": pool.node,
                    "type": f"{RP}/managedClusters/agentPools/machines",
                    "properties": {"resourceId": pool.vm_id},
                }
            )
        return web.json_response({"value": machines})

    async def _operation_status(self, request: web.Request) -> web.Response:
        op = self.operations.get(request.match_info["op"])
        if op is None:
            return _error(404, "NotFound", "operation not found")
        body: dict[str, Any] = {
            "id": request.path,
            "name": op.id,
            "status": op.status,
            "startTime": op.start,
        }
        if op.end:
            body["endTime"] = op.end
        if op.error:
            body["error"] = op.error
        headers = {}
        if op.status == "InProgress" and self.config["operation_retry_after"] is not None:
            headers["Retry-After"] = f"{self.config['operation_retry_after']:g}"
        return web.json_response(body, headers=headers)

    async def _operation_result(self, request: web.Request) -> web.Response:
        op = self.operations.get(request.match_info["op"])
        if op is None:
            return _error(404, "NotFound", "operation not found")
        if op.status == "InProgress":
            return web.Response(status=202, headers={"Location": str(request.url)})
        if op.error:
            return web.json_response({"error": op.error}, status=400)
        return web.Response(status=204)

    # ------------------------------------------------------------ node join (KWOK)

    def _node_identity(self, pool: Pool) -> tuple[str, str]:
        digest = hashlib.sha256(f"{pool.sub}/{pool.rg}/{pool.cluster}".encode()).hexdigest()
        suffix = str(int(digest[:12], 16) % 10**8).zfill(8)
        vmss = f"aks-{pool.name}-{suffix}-vmss"
        node_rg = f"mc_{pool.rg}_{pool.cluster}_{self.location}".lower()
        vm_id = (
            f"/subscriptions/{pool.sub}/resourceGroups/{node_rg}/providers/Microsoft.Compute"
            f"/virtualMachineScaleSets/{vmss}/virtualMachines/0"
        )
        return f"{vmss}000000", vm_id

    def node_manifest(self, pool: Pool) -> dict[str, Any]:
        cluster_mod = _hack_cluster()
        props = pool.properties
        vm_size = str(props["vmSize"])
        try:
            gpus, cpu, memory = cluster_mod.sku_shape(vm_size)
        except cluster_mod.ClusterError:
            extra = {str(x["name"]).lower(): x for x in self.config["extra_vm_sizes"]}
            size = extra.get(vm_size.lower(), {})
            gpus = int(size.get("GPUs", 0))
            cpu, memory = int(size.get("vCPUs", 4)), int(size.get("MemoryGB", 16))
        name, vm_id = self._node_identity(pool)
        labels = dict(props.get("nodeLabels") or {})
        labels |= {
            "kubernetes.azure.com/agentpool": pool.name,
            "agentpool": pool.name,
            "kubernetes.azure.com/mode": str(props.get("mode", "User")).lower(),
            "kubernetes.azure.com/os-sku": str(props.get("osSKU", "Ubuntu")),
            "kubernetes.azure.com/cluster": f"MC_{pool.rg}_{pool.cluster}_{self.location}",
            "topology.kubernetes.io/region": self.location,
        }
        taints = []
        for text in props.get("nodeTaints") or []:
            spec, _, effect = str(text).rpartition(":")
            key, _, value = spec.partition("=")
            taints.append({"key": key, "value": value, "effect": effect})
        node: dict[str, Any] = cluster_mod.fake_node(name, vm_size, gpus, cpu, memory, labels)
        node["spec"]["taints"] = taints
        node["spec"]["providerID"] = "azure://" + vm_id
        return node

    async def _kube_client(self) -> Any:
        if self._kube is None:
            from kubernetes_asyncio import client, config  # noqa: PLC0415

            configuration = client.Configuration()
            await config.load_kube_config(
                config_file=str(self.kubeconfig), client_configuration=configuration
            )
            self._kube = client.ApiClient(configuration)
        return self._kube

    async def _register_node(self, pool: Pool) -> None:
        pool.node, pool.vm_id = self._node_identity(pool)
        if self.kubeconfig is None:
            return
        from kubernetes_asyncio import client  # noqa: PLC0415
        from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415

        api = client.CoreV1Api(await self._kube_client())
        try:
            await api.create_node(self.node_manifest(pool))  # type: ignore[arg-type]
        except ApiException as exc:
            if exc.status != 409:
                raise

    async def _unregister_node(self, pool: Pool) -> None:
        name, _ = self._node_identity(pool)
        if self.kubeconfig is None:
            return
        from kubernetes_asyncio import client  # noqa: PLC0415
        from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415

        api = client.CoreV1Api(await self._kube_client())
        try:
            await api.delete_node(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # ------------------------------------------------------------ Microsoft.Compute/skus

    def vm_sizes(self) -> list[dict[str, Any]]:
        """The region's VM sizes: Kaito's table plus the configured newer ones."""
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from kaito.presets.skus import list_skus  # noqa: PLC0415

        sizes = [
            {"name": s.name, "vCPUs": s.vcpu, "MemoryGB": s.memory_gib, "GPUs": s.gpu_count}
            for s in list_skus()
        ]
        return sizes + list(self.config["extra_vm_sizes"])

    async def _resource_skus(self, request: web.Request) -> web.Response:
        wanted = request.query.get("$filter", "")
        if wanted and f"'{self.location}'" not in wanted:
            return web.json_response({"value": []})
        value = []
        for size in self.vm_sizes():
            capabilities = [
                {"name": key, "value": str(size[key])}
                for key in ("vCPUs", "MemoryGB", "GPUs")
                if size.get(key)
            ]
            value.append(
                {
                    "resourceType": "virtualMachines",
                    "name": size["name"],
                    "tier": "Standard",
                    "size": str(size["name"]).removeprefix("Standard_"),
                    "locations": [self.location],
                    "capabilities": capabilities,
                    "restrictions": [],
                }
            )
        return web.json_response({"value": value})

    # ------------------------------------------------------------ admin API

    async def _admin_add_fault(self, request: web.Request) -> web.Response:
        data = await request.json()
        try:
            fault = Fault(**data)
        except TypeError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if fault.kind not in REQUEST_FAULTS | LRO_FAULTS:
            return web.json_response({"error": f"unknown fault kind {fault.kind!r}"}, status=400)
        self.faults.append(fault)
        return web.json_response(asdict(fault), status=201)

    async def _admin_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.Response(status=204)

    async def _admin_config(self, request: web.Request) -> web.Response:
        data = await request.json()
        unknown = set(data) - set(self.config)
        if unknown:
            return web.json_response({"error": f"unknown settings {sorted(unknown)}"}, status=400)
        self.config.update(data)
        return web.json_response(self.config)

    async def _admin_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _admin_reset(self, request: web.Request) -> web.Response:
        for pool in list(self.pools.values()):
            if pool.task is not None:
                pool.task.cancel()
            with contextlib.suppress(Exception):
                await self._unregister_node(pool)
        self.pools.clear()
        self.operations.clear()
        self.faults.clear()
        self.log.clear()
        return web.Response(status=204)

    def snapshot(self) -> dict[str, Any]:
        return {
            "pools": {
                p.name: {
                    "state": p.state,
                    "node": p.node,
                    "vmSize": p.properties.get("vmSize"),
                    "tags": p.properties.get("tags") or {},
                    "properties": p.properties,
                }
                for p in self.pools.values()
            },
            "faults": [asdict(f) for f in self.faults],
            "log": self.log,
            "tokens_issued": len(self._tokens),
            "config": self.config,
        }


class FakeArmAdmin:
    """A tiny async client for ``/admin/*``, for tests that run the server as a process."""

    def __init__(self, url: str, ca_file: Path | str) -> None:
        self.url = url
        self._ssl = ssl.create_default_context(cafile=str(ca_file))
        self._session: ClientSession | None = None

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        if self._session is None:
            self._session = ClientSession(connector=TCPConnector(ssl=self._ssl))
        async with self._session.request(method, self.url + path, json=body) as response:
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")
            if response.status == 204:
                return None
            return await response.json()

    async def add_fault(self, kind: str, **options: Any) -> None:
        await self._request("POST", "/admin/faults", {"kind": kind, **options})

    async def clear_faults(self) -> None:
        await self._request("DELETE", "/admin/faults")

    async def configure(self, **settings: Any) -> None:
        await self._request("POST", "/admin/config", settings)

    async def state(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/admin/state")
        return result

    async def reset(self) -> None:
        await self._request("POST", "/admin/reset")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# ------------------------------------------------------------------------- process


async def _serve(args: argparse.Namespace) -> None:
    server = FakeArm(
        Path(args.dir),
        port=args.port,
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        client_id=args.client_id,
        client_secret=os.environ.get(args.client_secret_env) or None,
        location=args.location,
        create_delay_s=args.create_delay,
        delete_delay_s=args.delete_delay,
        page_size=args.page_size,
    )
    url = await server.start()
    info = {"url": url, "ca_file": str(server.cert_file), "pid": os.getpid()}
    (Path(args.dir) / "endpoint.json").write_text(json.dumps(info))
    print(json.dumps(info), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="state directory (certificate, endpoint)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", help="cluster where joining nodes are registered")
    parser.add_argument("--client-id", help="client id the token endpoint accepts")
    parser.add_argument(
        "--client-secret-env",
        default="FAKE_ARM_CLIENT_SECRET",
        help="environment variable holding the accepted client secret (unset: any token)",
    )
    parser.add_argument("--location", default="eastus")
    parser.add_argument("--create-delay", type=float, default=1.0, help="Creating → Succeeded")
    parser.add_argument("--delete-delay", type=float, default=0.5)
    parser.add_argument("--page-size", type=int, default=100)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
