"""An async Kubernetes client: typed objects in and out, discovery-resolved paths, retries.

Requests go straight through one aiohttp session (the REST layer); kubernetes-asyncio provides
the connection settings (see ``config``). Every attempt is counted in
``rest_client_requests_total{code,method,host}`` and timed in
``rest_client_request_duration_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
import jsonpatch

from kaito.runtime.config import ClientConfig
from kaito.runtime.errors import (
    ApiError,
    Conflict,
    Fenced,
    Invalid,
    NotFound,
    error_from_response,
)
from kaito.runtime.gvk import GVK, Resource
from kaito.runtime.metrics import Metrics, default_metrics
from kaito.runtime.objects import Obj, Scheme, gvk_of, to_dict

log = logging.getLogger("kaito.runtime.client")

_Items = list[dict[str, Any]]
PatchType = Literal["merge", "json", "strategic", "apply"]
_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# 500 only when the server says Retry-After (it is usually a real, permanent error)
_RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Preconditions:
    """Delete only if the object still has this UID / resourceVersion."""

    uid: str | None = None
    resource_version: str | None = None


class Client:
    """Typed CRUD, patch, server-side apply and status updates for any GVK."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        scheme: Scheme | None = None,
        metrics: Metrics | None = None,
        max_retries: int = 5,
        user_agent: str = "kaito-runtime",
    ) -> None:
        self.config = config
        self.scheme = scheme if scheme is not None else Scheme()
        self.metrics = metrics if metrics is not None else default_metrics()
        self.max_retries = max_retries
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._resources: dict[GVK, Resource] = {}
        self._discovered: dict[str, dict[str, Resource]] = {}
        self._discovery_lock = asyncio.Lock()
        self._fenced: str | None = None
        self._write_guard: Callable[[], str | None] | None = None

    # ------------------------------------------------------------------ transport
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=100, ssl=self.config.ssl_context if self.config.ssl_context else False
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                read_bufsize=2**20,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                headers={"User-Agent": self.user_agent, "Accept": "application/json"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def fence(self, why: str) -> None:
        """Refuse every write from now on (``Fenced``); reads and watches still work.

        The manager fences its client the moment the leader Lease is lost, so no reconcile,
        event or background task of the old leader writes while a new one may be active.
        A write's retries check again before each attempt.
        """
        self._fenced = why

    def guard_writes(self, check: Callable[[], str | None] | None) -> None:
        """Ask ``check`` before every write; a reason it returns refuses the write (``Fenced``).

        The manager's check is the leader Lease's own deadline on the monotonic clock, so a
        process that was frozen (SIGSTOP, a long GC pause) past its renew deadline refuses
        its writes the moment it wakes, before the renewal task has even run.
        """
        self._write_guard = check

    @property
    def fenced(self) -> bool:
        return self._fenced is not None

    def _url(self, path: str, query: Mapping[str, Any] | None) -> str:
        url = self.config.host + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        return url

    def _record(self, method: str, code: str, started: float) -> None:
        host = self.config.host_label
        self.metrics.rest_requests.labels(code, method, host).inc()
        self.metrics.rest_latency.labels(method, host).observe(time.monotonic() - started)

    async def _send(  # noqa: PLR0917
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: bytes | None,
        content_type: str | None,
        timeout: float | None,  # noqa: ASYNC109
    ) -> aiohttp.ClientResponse:
        """One attempt; returns an open response (the caller reads and releases it)."""
        if method not in _READS:
            if self._fenced is not None:
                raise Fenced(self._fenced)
            if self._write_guard is not None and (why := self._write_guard()) is not None:
                raise Fenced(why)
        headers = await self.config.auth_headers()
        if content_type:
            headers["Content-Type"] = content_type
        kwargs: dict[str, Any] = {"headers": headers, "data": body}
        if self.config.tls_server_name:
            kwargs["server_hostname"] = self.config.tls_server_name
        if self.config.proxy:
            kwargs["proxy"] = self.config.proxy
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(
                total=None, sock_connect=10, sock_read=timeout
            )
        return await self.session.request(method, self._url(path, query), **kwargs)

    @staticmethod
    def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
        value = resp.headers.get("Retry-After")
        if not value:
            return None
        try:
            seconds = float(value)
            return max(0.0, seconds)
        except ValueError:
            return None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, 30.0)
        return min(0.1 * 2.0**attempt, 5.0) * (1 + random.random() * 0.5)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = 60.0,  # noqa: ASYNC109
    ) -> Any:
        """Send a request, retrying 429/5xx (honouring Retry-After) and refused connections.

        Returns the decoded JSON body; raises an ``ApiError`` subclass on failure.
        """
        payload = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        if payload is not None and content_type is None:
            content_type = "application/json"
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                resp = await self._send(method, path, query, payload, content_type, timeout)
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
                self._record(method, "<error>", started)
                if attempt >= self.max_retries:
                    raise
                delay = self._backoff(attempt, None)
                log.debug("%s %s: %s; retrying in %.2fs", method, path, exc, delay)
                self.metrics.rest_retries.labels("<error>", method, self.config.host_label).inc()
                attempt += 1
                await asyncio.sleep(delay)
                continue
            async with resp:
                data = await resp.read()
            self._record(method, str(resp.status), started)
            if resp.status < 300:
                return json.loads(data) if data else None
            retry_after = self._retry_after(resp)
            retryable = resp.status in _RETRY_STATUSES or (
                resp.status >= 500 and retry_after is not None
            )
            if retryable and attempt < self.max_retries:
                delay = self._backoff(attempt, retry_after)
                log.debug("%s %s: HTTP %d; retrying in %.2fs", method, path, resp.status, delay)
                self.metrics.rest_retries.labels(
                    str(resp.status), method, self.config.host_label
                ).inc()
                attempt += 1
                await asyncio.sleep(delay)
                continue
            raise error_from_response(resp.status, data, retry_after)

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, query: Mapping[str, Any] | None = None, read_timeout: float | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a long-running GET (a watch); yields the response once headers arrive."""
        started = time.monotonic()
        try:
            resp = await self._send("GET", path, query, None, None, read_timeout)
        except aiohttp.ClientError:
            self._record("GET", "<error>", started)
            raise
        self._record("GET", str(resp.status), started)
        try:
            if resp.status >= 300:
                raise error_from_response(resp.status, await resp.read(), self._retry_after(resp))
            yield resp
        finally:
            resp.release()

    # ------------------------------------------------------------------ discovery
    async def resource(self, gvk: GVK) -> Resource:
        """Plural and scope of ``gvk`` from discovery (cached; refreshed once on a miss)."""
        found = self._resources.get(gvk)
        if found is not None:
            return found
        async with self._discovery_lock:
            found = self._resources.get(gvk)
            if found is not None:
                return found
            await self._discover(gvk)
        found = self._resources.get(gvk)
        if found is None:
            raise NotFound(404, "NotFound", f"the server has no resource for {gvk}")
        return found

    async def _discover(self, gvk: GVK) -> None:
        path = f"/apis/{gvk.group}/{gvk.version}" if gvk.group else f"/api/{gvk.version}"
        doc = await self.request("GET", path)
        subresources: dict[str, set[str]] = {}
        for item in doc.get("resources", []):
            plural, _, sub = str(item["name"]).partition("/")
            if sub:
                subresources.setdefault(plural, set()).add(sub)
        for item in doc.get("resources", []):
            if "/" in item["name"]:
                continue
            kind_gvk = GVK(gvk.group, gvk.version, item["kind"])
            self._resources[kind_gvk] = Resource(
                gvk=kind_gvk,
                plural=item["name"],
                namespaced=bool(item.get("namespaced")),
                subresources=frozenset(subresources.get(item["name"], ())),
            )

    def forget_discovery(self) -> None:
        """Drop cached discovery (after CRDs are installed or removed)."""
        self._resources.clear()

    # ------------------------------------------------------------------ helpers
    async def _path(
        self, gvk: GVK, namespace: str | None, name: str | None, subresource: str | None = None
    ) -> str:
        res = await self.resource(gvk)
        if res.namespaced and name is not None and not namespace:
            raise ValueError(f"{gvk.kind} {name!r} is namespaced; pass its namespace")
        path = res.path(namespace if res.namespaced else None, name)
        return f"{path}/{subresource}" if subresource else path

    def _decode(self, data: dict[str, Any], gvk: GVK) -> Obj:
        data.setdefault("apiVersion", gvk.api_version)
        data.setdefault("kind", gvk.kind)
        return self.scheme.decode(gvk, data)

    @staticmethod
    def _ident(data: dict[str, Any]) -> tuple[str | None, str]:
        meta = data.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise ValueError("object has no metadata.name")
        return meta.get("namespace"), str(name)

    # ------------------------------------------------------------------ verbs
    async def get(self, gvk: GVK, namespace: str | None, name: str) -> Obj:
        """One object straight from the apiserver (controllers should read the cache)."""
        data = await self.request("GET", await self._path(gvk, namespace, name))
        return self._decode(data, gvk)

    async def list(
        self,
        gvk: GVK,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> list[Obj]:
        """All objects of a kind, fetched page by page."""
        items, _ = await self.list_raw(
            gvk,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            page_size=page_size,
        )
        return [self._decode(i, gvk) for i in items]

    async def list_raw(
        self,
        gvk: GVK,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        resource_version: str | None = None,
    ) -> tuple[_Items, str]:
        """Plain decoded items and the list's resourceVersion (what a reflector needs)."""
        items: _Items = []
        rv = ""
        async for page, page_rv in self.list_pages(
            gvk,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            page_size=page_size,
            resource_version=resource_version,
        ):
            items.extend(page)
            rv = page_rv
        return items, rv

    async def list_pages(
        self,
        gvk: GVK,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        resource_version: str | None = None,
    ) -> AsyncIterator[tuple[_Items, str]]:
        """Yield each page of a list with the list's resourceVersion, so a caller can
        process (and free) one page before the next arrives."""
        path = await self._path(gvk, namespace, None)
        query: dict[str, Any] = {
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "limit": page_size or None,
            "resourceVersion": resource_version,
        }
        while True:
            doc = await self.request("GET", path, query=query)
            meta = doc.get("metadata") or {}
            token = meta.get("continue")
            items = doc.get("items") or []
            del doc
            yield items, str(meta.get("resourceVersion", ""))
            if not token:
                return
            query = {**query, "continue": token, "resourceVersion": None}

    async def create(self, obj: Obj | dict[str, Any], *, field_manager: str | None = None) -> Obj:
        data = to_dict(obj)
        gvk = gvk_of(data)
        namespace, _ = self._ident({"metadata": {"name": "-", **(data.get("metadata") or {})}})
        path = await self._path(gvk, namespace, None)
        result = await self.request("POST", path, body=data, query={"fieldManager": field_manager})
        return self._decode(result, gvk)

    async def update(self, obj: Obj | dict[str, Any], *, field_manager: str | None = None) -> Obj:
        """PUT the whole object; its resourceVersion makes it fail with Conflict if stale."""
        return await self._put(obj, None, field_manager)

    async def update_status(
        self, obj: Obj | dict[str, Any], *, field_manager: str | None = None
    ) -> Obj:
        return await self._put(obj, "status", field_manager)

    async def _put(
        self, obj: Obj | dict[str, Any], subresource: str | None, field_manager: str | None
    ) -> Obj:
        data = to_dict(obj)
        gvk = gvk_of(data)
        namespace, name = self._ident(data)
        path = await self._path(gvk, namespace, name, subresource)
        result = await self.request("PUT", path, body=data, query={"fieldManager": field_manager})
        return self._decode(result, gvk)

    async def delete(
        self,
        gvk: GVK,
        namespace: str | None,
        name: str,
        *,
        propagation_policy: Literal["Background", "Foreground", "Orphan"] | None = "Background",
        preconditions: Preconditions | None = None,
        grace_period_seconds: int | None = None,
        ignore_not_found: bool = False,
    ) -> None:
        """Delete one object; Conflict if a precondition fails, NotFound if already gone."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if preconditions is not None:
            pre = {"uid": preconditions.uid, "resourceVersion": preconditions.resource_version}
            body["preconditions"] = {k: v for k, v in pre.items() if v}
        try:
            await self.request("DELETE", await self._path(gvk, namespace, name), body=body)
        except NotFound:
            if not ignore_not_found:
                raise

    async def patch(
        self,
        gvk: GVK,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> Obj:
        """Merge (RFC 7386), JSON (RFC 6902), strategic-merge or apply patch of one object."""
        if isinstance(patch, jsonpatch.JsonPatch):
            patch = patch.patch
            patch_type = "json"
        path = await self._path(gvk, namespace, name, subresource)
        query = {
            "fieldManager": field_manager,
            "force": None if force is None else str(force).lower(),
        }
        result = await self.request(
            "PATCH", path, body=patch, content_type=_CONTENT_TYPES[patch_type], query=query
        )
        return self._decode(result, gvk)

    async def patch_status(
        self,
        gvk: GVK,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        field_manager: str | None = None,
    ) -> Obj:
        return await self.patch(
            gvk,
            namespace,
            name,
            patch,
            patch_type=patch_type,
            subresource="status",
            field_manager=field_manager,
        )

    async def patch_diff(
        self,
        original: Obj | dict[str, Any],
        modified: Obj | dict[str, Any],
        *,
        subresource: str | None = None,
        optimistic: bool = True,
    ) -> Obj | None:
        """JSON-patch the difference between two versions; None (no request) when equal.

        With ``optimistic`` the patch starts with a ``test`` of the resourceVersion, so it
        fails with Conflict instead of overwriting a newer change.
        """
        before, after = to_dict(original), to_dict(modified)
        ops = jsonpatch.make_patch(before, after).patch
        if not ops:
            return None
        rv = (before.get("metadata") or {}).get("resourceVersion")
        if optimistic and rv:
            ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, *ops]
        namespace, name = self._ident(before)
        try:
            return await self.patch(
                gvk_of(before), namespace, name, ops, patch_type="json", subresource=subresource
            )
        except Invalid as exc:
            # a failed ``test`` op comes back as a bare 422: the object moved on under us
            if optimistic and rv and not exc.causes:
                raise Conflict(409, "Conflict", exc.message, exc.body) from exc
            raise

    async def apply(
        self,
        obj: Obj | dict[str, Any],
        *,
        field_manager: str,
        force: bool = False,
        subresource: str | None = None,
    ) -> Obj:
        """Server-side apply: send the fields this manager owns; the server merges."""
        data = to_dict(obj)
        namespace, name = self._ident(data)
        return await self.patch(
            gvk_of(data),
            namespace,
            name,
            data,
            patch_type="apply",
            subresource=subresource,
            field_manager=field_manager,
            force=force,
        )

    async def apply_status(
        self, obj: Obj | dict[str, Any], *, field_manager: str, force: bool = False
    ) -> Obj:
        return await self.apply(obj, field_manager=field_manager, force=force, subresource="status")

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, NotFound)


__all__ = ["ApiError", "Client", "PatchType", "Preconditions", "is_not_found"]
