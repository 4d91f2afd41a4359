"""The activator: the endpoint of a scale-to-zero InferenceSet, holding requests while it wakes.

A set opts in with ``scaledobject.kaito.sh/min-replicas: "0"``.  Its Service ``<set>`` then is
an ExternalName for the operator's ``kaito-activator`` Service, so every request for the set
reaches this proxy (KubeAI's design: always in the path, which is also how the set's idleness
is known).  The proxy finds the set from the Host the client used (``<set>.<namespace>``,
optionally ``.svc[.cluster.local]``, or ``<set>`` alone when that name is unique) or from an
``X-Kaito-InferenceSet: <namespace>/<set>`` header, and sends the request to the least busy
ready replica (the leader pod of each, from the informer cache).  With no ready replica it
holds the request, scales the set from 0 to 1 through its scale subresource, and forwards what
it holds the moment a replica is ready; a request that cannot be served within the hold
timeout, or beyond the hold limit, gets 503 with Retry-After and a message saying why.  The
InferenceSet controller scales an idle set (no request for ``idle-seconds``) back to zero.

Metrics: ``kaito_activator_requests_total{inferenceset,inferenceset_namespace,code}``,
``kaito_activator_held_requests`` (now) and ``kaito_activator_cold_start_seconds`` (first held
request of a wake-up until it is forwarded).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kaito.api import constants as C
from kaito.controllers.objects import POD_INDEX_LABEL
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.errors import ApiError
from kaito.runtime.gvk import GVK, POD
from kaito.runtime.objects import to_dict

log = logging.getLogger("kaito.controllers.activator")

HEADER = "X-Kaito-InferenceSet"
SERVING_PORT = 5000
POLL_S = 0.1
WAKE_AGAIN_S = 5.0  # a wake-up the cache has not shown after this long is sent again
MAX_BODY = 16 * 1024 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
HOST = re.compile(
    r"^(?P<set>[a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?))?(\.svc(\.[a-z0-9.-]+)?)?$"
)
COLD_BUCKETS = (1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)


@dataclass
class _SetState:
    last_request: float
    in_flight: int = 0
    held: int = 0
    waking_since: float | None = None
    woken_at: float = 0.0


class Activator:
    """See the module docstring.  ``start()`` binds; ``stop()`` closes."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        inferenceset: GVK,
        *,
        registry: CollectorRegistry | None = None,
        hold_timeout_s: float = 600.0,
        max_held: int = 1000,
        serving_port: int = SERVING_PORT,
    ) -> None:
        self.client = client
        self.cache = cache
        self.inferenceset = inferenceset
        self.hold_timeout_s = hold_timeout_s
        self.max_held = max_held
        self.serving_port = serving_port
        self.port: int | None = None
        self._sets: dict[tuple[str, str], _SetState] = {}
        self._busy: dict[str, int] = {}  # endpoint -> requests in flight there
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        labels = ["inferenceset", "inferenceset_namespace"]
        self.requests = Counter(
            "kaito_activator_requests",
            "Requests the activator answered, by InferenceSet and HTTP status",
            [*labels, "code"],
            registry=registry,
        )
        self.held = Gauge(
            "kaito_activator_held_requests",
            "Requests held while a scaled-to-zero InferenceSet starts",
            labels,
            registry=registry,
        )
        self.cold_start = Histogram(
            "kaito_activator_cold_start_seconds",
            "Seconds from the first request held for a set at zero until it is forwarded",
            labels,
            buckets=COLD_BUCKETS,
            registry=registry,
        )

    # ------------------------------------------------------------------ what the controller reads
    def idle_for(self, namespace: str, name: str) -> float:
        """Seconds since the set's last request ended; the clock of a set that has had none
        starts when it is first asked about (a new set, or any set after a restart)."""
        state = self._sets.setdefault((namespace, name), _SetState(time.monotonic()))
        if state.in_flight or state.held:
            return 0.0
        return time.monotonic() - state.last_request

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept about a deleted set."""
        self._sets.pop((namespace, name), None)

    # ------------------------------------------------------------------ serving
    async def start(self, host: str, port: int) -> int:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), auto_decompress=False
        )
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("activator listening on %s:%s", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _target(self, request: web.Request) -> tuple[str, str] | str:
        """(namespace, set) the request is for, or a message saying what is missing."""
        header = request.headers.get(HEADER, "").strip()
        if header:
            ns, sep, name = header.partition("/")
            if sep and ns and name:
                return ns, name
            return f"{HEADER} must be <namespace>/<inferenceset>, got {header!r}"
        host = (request.host or "").split(":", 1)[0].lower()
        found = HOST.match(host)
        if found is None:
            return (
                f"cannot tell the InferenceSet from Host {host!r}: call "
                "http://<inferenceset>.<namespace>/ or send "
                f"{HEADER}: <namespace>/<inferenceset>"
            )
        name, ns = found.group("set"), found.group("ns")
        if ns:
            return ns, name
        matches = [e.namespace for e in self.cache.entries(self.inferenceset) if e.name == name]
        if len(matches) == 1:
            return matches[0] or "", name
        return (
            f"InferenceSet {name!r} is "
            + ("not found" if not matches else f"in several namespaces ({', '.join(matches)})")
            + f"; call http://{name}.<namespace>/ instead"
        )

    def _endpoints(self, namespace: str, name: str) -> list[str]:
        """Leader pods of the set's replicas that are Ready and not terminating."""
        out = []
        selector = {C.LABEL_INFERENCESET_CREATED_BY: name, POD_INDEX_LABEL: "0"}
        for obj in self.cache.list(POD, namespace=namespace, labels=selector):
            pod = to_dict(obj)
            status = pod.get("status") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or ()
            )
            if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
                out.append(f"http://{status['podIP']}:{self.serving_port}")
        return out

    async def _wake(self, namespace: str, name: str, state: _SetState) -> None:
        """spec.replicas 0 → 1 through the scale subresource (what an HPA writes); once, not
        once per held request, while the cache has not seen the new count yet."""
        obj = self.cache.get(self.inferenceset, namespace, name)
        if obj is None or (to_dict(obj).get("spec") or {}).get("replicas", 1) != 0:
            return
        if time.monotonic() - state.woken_at < WAKE_AGAIN_S:
            return
        state.woken_at = time.monotonic()
        await self.scale(namespace, name, 1)
        log.info("woke InferenceSet %s/%s for a held request", namespace, name)

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        await scale(self.client, self.inferenceset, namespace, name, replicas)

    def _reply(self, who: tuple[str, str], code: int, message: str, **headers: str) -> web.Response:
        self.requests.labels(who[1], who[0], str(code)).inc()
        return web.json_response(
            {"error": {"message": message, "type": "activator", "code": code}},
            status=code,
            headers=headers,
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = self._target(request)
        if isinstance(target, str):
            return self._reply(("", ""), 400, target)
        namespace, name = target
        if self.cache.get(self.inferenceset, namespace, name) is None:
            return self._reply(target, 404, f"InferenceSet {namespace}/{name} not found")
        state = self._sets.setdefault(target, _SetState(time.monotonic()))
        body = await request.read()
        state.in_flight += 1
        try:
            return await self._serve(request, target, state, body)
        finally:
            state.in_flight -= 1
            state.last_request = time.monotonic()

    async def _serve(
        self, request: web.Request, target: tuple[str, str], state: _SetState, body: bytes
    ) -> web.StreamResponse:
        namespace, name = target
        deadline = time.monotonic() + self.hold_timeout_s
        held_since: float | None = None
        tried: set[str] = set()
        try:
            while True:
                endpoints = [e for e in self._endpoints(namespace, name) if e not in tried]
                if endpoints:
                    if held_since is not None:
                        self.cold_start.labels(name, namespace).observe(
                            time.monotonic() - held_since
                        )
                        held_since = None
                        state.held -= 1
                        self.held.labels(name, namespace).dec()
                    endpoint = min(endpoints, key=lambda e: self._busy.get(e, 0))
                    response = await self._forward(request, target, endpoint, body)
                    if response is not None:
                        return response
                    tried.add(endpoint)  # refused before any byte: another replica, or wait
                    continue
                if held_since is None:
                    if state.held >= self.max_held:
                        return self._reply(
                            target, 503,
                            f"{self.max_held} requests are already held while InferenceSet "
                            f"{namespace}/{name} starts; retry shortly",
                            **{"Retry-After": "5"},
                        )  # fmt: skip
                    held_since = time.monotonic()
                    state.held += 1
                    self.held.labels(name, namespace).inc()
                    if state.waking_since is None:
                        state.waking_since = held_since
                if time.monotonic() > deadline:
                    return self._reply(
                        target, 503,
                        f"InferenceSet {namespace}/{name} had no ready replica within "
                        f"{self.hold_timeout_s:.0f}s; see kaito status {name} -n {namespace}",
                        **{"Retry-After": "30"},
                    )  # fmt: skip
                try:
                    await self._wake(namespace, name, state)
                except ApiError as exc:
                    log.warning("cannot wake %s/%s: %s", namespace, name, exc.message)
                tried.clear()
                await asyncio.sleep(POLL_S)
        finally:
            if held_since is not None:
                state.held -= 1
                self.held.labels(name, namespace).dec()
            if state.held == 0:
                state.waking_since = None

    async def _forward(
        self, request: web.Request, target: tuple[str, str], endpoint: str, body: bytes
    ) -> web.StreamResponse | None:
        """Proxy to `endpoint`; None when it refused the connection (nothing was sent)."""
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        url = endpoint + request.rel_url.raw_path_qs
        self._busy[endpoint] = self._busy.get(endpoint, 0) + 1
        try:
            return await self._relay(request, target, url, headers, body)
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            log.debug("replica %s refused: %s", endpoint, exc)
            return None
        finally:
            self._busy[endpoint] -= 1
            if not self._busy[endpoint]:
                del self._busy[endpoint]

    async def _relay(
        self,
        request: web.Request,
        target: tuple[str, str],
        url: str,
        headers: dict[str, str],
        body: bytes,
    ) -> web.StreamResponse:
        assert self._session is not None
        upstream = await self._session.request(
            request.method, url, headers=headers, data=body, allow_redirects=False
        )
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers[key] = value
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        self.requests.labels(target[1], target[0], str(upstream.status)).inc()
        return response


async def scale(client: Client, gvk: GVK, namespace: str, name: str, replicas: int) -> None:
    """Set spec.replicas through the scale subresource (RBAC: inferencesets/scale patch)."""
    resource = await client.resource(gvk)
    await client.request(
        "PATCH",
        resource.path(namespace, name) + "/scale",
        body={"spec": {"replicas": replicas}},
        content_type="application/merge-patch+json",
    )
