"""The ``azure`` node backend: one AKS agent pool (count 1) per NodeRequest.

Idempotency comes from the deterministic pool name: every call first reads the pool, so a
restarted operator adopts the pool (and its running operation) instead of creating a second
one.  Long-running operations are awaited in background tasks on the event loop; their
terminal failures are remembered so ``get`` can report the Azure message.  The cloud's own
view (``provisioningState``) stays the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import AsyncRetryPolicy
from azure.core.polling import AsyncLROPoller
from azure.mgmt.containerservice.aio import ContainerServiceClient
from azure.mgmt.containerservice.models import AgentPool

from kaito.presets.skus import LearnedSku
from kaito.provisioner.azure.errors import (
    INVALID_REQUEST,
    NOT_FOUND,
    PROVISIONING_FAILED,
    Classified,
    classify,
)
from kaito.provisioner.azure.mapping import (
    MANAGED_BY,
    TAG_ATTEMPT,
    TAG_CREATED,
    TAG_MANAGED_BY,
    TAG_REQUEST,
    InvalidRequest,
    build_pool,
)
from kaito.provisioner.azure.naming import pool_name, provider_id_from_resource_id
from kaito.provisioner.azure.settings import AzureSettings
from kaito.provisioner.azure.skus import ResourceSkus
from kaito.provisioner.base import NodeRequest, NodeStatus, Phase, ProvisionerError

log = logging.getLogger(__name__)
T = TypeVar("T")

NAME_COLLISION = "NameCollision"
CREATING = "Creating"
DELETING = "Deleting"
RECREATING = "Recreating"
_PENDING_STATES = {"", "creating", "accepted"}
_NOT_LAUNCHED_STATES = {*_PENDING_STATES, "failed", "canceled", "deleting"}


class BoundedRetryPolicy(AsyncRetryPolicy[Any, Any]):
    """azure-core's retry policy, except that a long Retry-After is handed back to us.

    Sleeping through a 60 s Retry-After inside one SDK call would pin a reconcile worker;
    above ``max_retry_after_s`` the 429 is returned at once and reported as THROTTLED.
    """

    def __init__(self, max_retry_after_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_retry_after_s = max_retry_after_s

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after is not None and retry_after > self._max_retry_after_s:
            return False
        return bool(super().is_retry(settings, response))


class _AzureFailure(Exception):
    def __init__(self, classified: Classified) -> None:
        super().__init__(classified.message)
        self.classified = classified


class AzureProvisioner:
    """NodeProvisioner over the real async AKS SDK (``azure.mgmt.containerservice.aio``)."""

    name = "azure"

    def __init__(
        self,
        settings: AzureSettings,
        credential: AsyncTokenCredential | None = None,
        **client_options: Any,
    ) -> None:
        """`client_options` go to the SDK client unchanged (e.g. ``transport``)."""
        self.settings = settings
        verify = settings.connection_verify
        transport_options: dict[str, Any] = {} if verify is True else {"connection_verify": verify}
        self._owns_credential = credential is None
        if credential is None:
            from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415

            credential = DefaultAzureCredential(**transport_options)
        self._credential = credential
        options: dict[str, Any] = {
            "retry_policy": BoundedRetryPolicy(
                settings.max_retry_after_s,
                retry_total=settings.max_retries,
                retry_status=settings.max_retries,
                retry_connect=settings.max_retries,
                retry_read=settings.max_retries,
                retry_backoff_factor=settings.retry_backoff_s,
                retry_backoff_max=settings.retry_backoff_max_s,
            ),
            "polling_interval": settings.polling_interval_s,
            **transport_options,
        }
        if settings.api_version:
            options["api_version"] = settings.api_version
        options.update(client_options)
        self._client = ContainerServiceClient(
            credential, settings.subscription_id, base_url=settings.arm_endpoint, **options
        )
        self._skus = ResourceSkus(settings, credential)
        self._creates: dict[str, asyncio.Task[None]] = {}
        self._deletes: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, NodeStatus] = {}  # pool → terminal failure of its last try
        # pool → (the attempt to create next, why the last one failed) while a failed pool
        # is deleted to make room for a fresh one
        self._recreating: dict[str, tuple[int, NodeStatus]] = {}
        self.on_settled: Callable[[str], None] | None = None
        """Called with the request name when an operation we awaited ends (wakes its claim)."""

    @classmethod
    def from_env(cls, credential: AsyncTokenCredential | None = None) -> AzureProvisioner:
        """Settings from the environment, DefaultAzureCredential unless one is given."""
        return cls(AzureSettings.from_env(), credential)

    async def describe_instance_type(self, name: str) -> LearnedSku | None:
        """A VM size Kaito's table lacks, from the region's resource SKU list."""
        return await self._skus.describe(name)

    # ------------------------------------------------------------------ interface

    async def create(self, request: NodeRequest) -> NodeStatus:
        try:
            spec = build_pool(request)
        except InvalidRequest as exc:
            return NodeStatus(Phase.FAILED, reason=INVALID_REQUEST, message=str(exc))
        name = spec.name
        running = self._creates.get(name)
        if running is not None and not running.done():
            status = await self.get(request)
            if status is not None:
                return status
        try:
            pool = await self._read_pool(name)
            if pool is not None:
                state = (pool.provisioning_state or "").lower()
                if state in {"failed", "canceled"} and self._is_ours(request.name, pool):
                    return await self._replace_failed(request, name, pool)
                log.info("agent pool %s for %s already exists; adopting it", name, request.name)
                return await self._status_of(request.name, name, pool)
            attempt = self._recreating.get(name, (1, None))[0]
            if attempt > 1:
                spec = build_pool(request, attempt=attempt)
            log.info(
                "creating agent pool %s (%s) for %s, attempt %d",
                name,
                request.instance_type,
                request.name,
                attempt,
            )
            poller = await self._arm(
                self._client.agent_pools.begin_create_or_update(
                    self.settings.resource_group, self.settings.cluster_name, name, spec.body
                )
            )
        except _AzureFailure as failure:
            return self._report(name, "create", failure.classified)
        self._failures.pop(name, None)
        self._recreating.pop(name, None)
        self._creates[name] = asyncio.create_task(
            self._watch_create(request.name, name, poller), name=f"azure-create-{name}"
        )
        return NodeStatus(
            Phase.PENDING,
            reason=CREATING,
            message=f"creating AKS agent pool {name} ({request.instance_type})",
        )

    async def get(self, request: NodeRequest) -> NodeStatus | None:
        name = pool_name(request.name)
        watcher = self._creates.get(name)
        if watcher is not None and not watcher.done():
            # our own poller follows the operation and calls on_settled when it ends:
            # reading the pool as well would only double the ARM reads
            return NodeStatus(
                Phase.PENDING,
                reason=CREATING,
                message=f"creating AKS agent pool {name} ({request.instance_type})",
            )
        try:
            pool = await self._read_pool(name)
        except _AzureFailure as failure:
            return self._report(name, "get", failure.classified)
        if pool is None:
            return None if name in self._recreating else self._failures.get(name)
        return await self._status_of(request.name, name, pool)

    async def delete(self, request_name: str) -> bool:
        name = pool_name(request_name)
        watcher = self._creates.pop(name, None)
        if watcher is not None:
            watcher.cancel()  # stops our polling only; the cloud operation is not affected
        try:
            pool = await self._read_pool(name)
            if pool is None:
                self._forget(name)
                return True
            if not self._is_ours(request_name, pool):
                log.warning(
                    "agent pool %s is not managed for %s; not deleting it", name, request_name
                )
                self._forget(name)
                return True
            running = self._deletes.get(name)
            if (pool.provisioning_state or "").lower() == "deleting" or (
                running is not None and not running.done()
            ):
                return False
            log.info("deleting agent pool %s of %s", name, request_name)
            poller = await self._arm(
                self._client.agent_pools.begin_delete(
                    self.settings.resource_group, self.settings.cluster_name, name
                )
            )
        except _AzureFailure as failure:
            if failure.classified.kind == "not_found":
                self._forget(name)
                return True
            if failure.classified.kind == "conflict":
                return False
            raise self._error(failure.classified) from None
        if poller.done():
            self._forget(name)
            return True
        self._deletes[name] = asyncio.create_task(
            self._watch_delete(request_name, name, poller), name=f"azure-delete-{name}"
        )
        return False

    async def _replace_failed(self, request: NodeRequest, name: str, pool: AgentPool) -> NodeStatus:
        """A pool of ours ended Failed: delete it so the next create starts afresh (bounded).

        AKS does not retry a failed pool by itself, and adopting it would report the failure
        forever. After ``max_create_attempts`` pools the failure is final: the pool stays (it
        shows the error in Azure) until the claim is deleted.
        """
        failure = self._failures.get(name) or NodeStatus(
            Phase.FAILED,
            reason=PROVISIONING_FAILED,
            message=f"AKS agent pool {name} provisioning ended {pool.provisioning_state}",
        )
        attempt = _attempt_of(pool)
        limit = self.settings.max_create_attempts
        if attempt >= limit:
            return NodeStatus(
                Phase.FAILED,
                reason=failure.reason,
                message=f"{failure.message} (attempt {attempt} of {limit}; delete the "
                "NodeClaim or its Workspace to start over)",
            )
        log.info(
            "agent pool %s of %s failed (%s); deleting it to create attempt %d of %d",
            name,
            request.name,
            failure.reason,
            attempt + 1,
            limit,
        )
        try:
            poller = await self._arm(
                self._client.agent_pools.begin_delete(
                    self.settings.resource_group, self.settings.cluster_name, name
                )
            )
        except _AzureFailure as exc:
            if exc.classified.kind not in ("not_found", "conflict"):
                return self._report(name, "delete", exc.classified)
        else:
            self._deletes[name] = asyncio.create_task(
                self._watch_delete(request.name, name, poller), name=f"azure-delete-{name}"
            )
        self._failures.pop(name, None)
        self._recreating[name] = (attempt + 1, failure)
        return self._recreating_status(name)

    def _recreating_status(self, name: str) -> NodeStatus:
        attempt, failure = self._recreating[name]
        return NodeStatus(
            Phase.PENDING,
            reason=RECREATING,
            message=f"AKS agent pool {name} failed ({failure.reason}: {failure.message}); "
            f"replacing it (attempt {attempt} of {self.settings.max_create_attempts})",
        )

    async def list_requests(self) -> list[str]:
        names: list[str] = []
        now = datetime.now(UTC)
        try:
            pages = self._client.agent_pools.list(
                self.settings.resource_group, self.settings.cluster_name
            )
            async for pool in pages:
                tags = pool.tags or {}
                if tags.get(TAG_MANAGED_BY) != MANAGED_BY or not tags.get(TAG_REQUEST):
                    continue
                if _age_s(tags.get(TAG_CREATED), now) < self.settings.gc_min_age_s:
                    continue
                names.append(tags[TAG_REQUEST])
        except AzureError as exc:
            raise self._error(classify(exc)) from None
        return names

    async def close(self) -> None:
        tasks = [*self._creates.values(), *self._deletes.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._creates.clear()
        self._deletes.clear()
        await self._skus.close()
        await self._client.close()
        if self._owns_credential:
            close = getattr(self._credential, "close", None)
            if close is not None:
                await close()

    # ------------------------------------------------------------------ helpers

    async def _arm(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except AzureError as exc:
            raise _AzureFailure(classify(exc)) from None

    async def _read_pool(self, name: str) -> AgentPool | None:
        try:
            return await self._arm(
                self._client.agent_pools.get(
                    self.settings.resource_group, self.settings.cluster_name, name
                )
            )
        except _AzureFailure as failure:
            if failure.classified.kind == "not_found":
                return None
            raise

    def _is_ours(self, request_name: str, pool: AgentPool) -> bool:
        tags = pool.tags or {}
        return tags.get(TAG_MANAGED_BY) == MANAGED_BY and tags.get(TAG_REQUEST) == request_name

    async def _status_of(self, request_name: str, name: str, pool: AgentPool) -> NodeStatus:
        if not self._is_ours(request_name, pool):
            return NodeStatus(
                Phase.FAILED,
                reason=NAME_COLLISION,
                message=f"AKS agent pool {name} already exists and does not belong to "
                f"{request_name}; delete it or rename the NodeClaim",
            )
        state = (pool.provisioning_state or "").lower()
        if state not in _NOT_LAUNCHED_STATES:  # Succeeded, or Updating/Scaling/... after it
            provider_id, node_name = await self._joined_node(name)
            return NodeStatus(
                Phase.LAUNCHED,
                provider_id=provider_id,
                node_name=node_name,
                reason="Launched",
                message=f"AKS agent pool {name} is {pool.provisioning_state}",
            )
        if state in {"failed", "canceled"}:
            remembered = self._failures.get(name)
            if remembered is not None:
                return remembered
            watcher = self._creates.get(name)
            if watcher is not None and not watcher.done():  # it is about to learn why
                return NodeStatus(
                    Phase.PENDING,
                    reason=CREATING,
                    message=f"AKS agent pool {name} ended {pool.provisioning_state}; "
                    "reading the operation's error",
                )
            return NodeStatus(
                Phase.FAILED,
                reason=PROVISIONING_FAILED,
                message=f"AKS agent pool {name} provisioning ended {pool.provisioning_state}",
            )
        if state == "deleting":
            if name in self._recreating:
                return self._recreating_status(name)
            return NodeStatus(
                Phase.PENDING, reason=DELETING, message=f"AKS agent pool {name} is being deleted"
            )
        remembered = self._failures.get(name)
        if remembered is not None:
            return remembered
        return NodeStatus(
            Phase.PENDING, reason=CREATING, message=f"AKS agent pool {name} is being created"
        )

    async def _joined_node(self, name: str) -> tuple[str | None, str | None]:
        """Provider ID and node name of the pool's VM, from the AKS machines API."""
        try:
            machines = self._client.machines.list(
                self.settings.resource_group, self.settings.cluster_name, name
            )
            async for machine in machines:
                properties = machine.properties
                if properties is not None and properties.resource_id:
                    return provider_id_from_resource_id(properties.resource_id), machine.name
        except AzureError as exc:
            log.debug("machines of agent pool %s not listed: %s", name, classify(exc).reason)
        return None, None

    def _report(self, name: str, action: str, classified: Classified) -> NodeStatus:
        """Turn a classified failure of create/get into a status, or raise for a requeue."""
        log.info(
            "azure %s of agent pool %s: %s: %s", action, name, classified.reason, classified.message
        )
        if classified.kind == "throttled":
            return NodeStatus(
                Phase.THROTTLED,
                reason=classified.reason,
                message=f"Azure is throttling requests: {classified.message}",
                retry_after_s=classified.retry_after_s,
            )
        if classified.kind == "conflict":
            return NodeStatus(
                Phase.PENDING,
                reason=classified.reason,
                message=classified.message,
                retry_after_s=classified.retry_after_s,
            )
        if classified.kind in ("terminal", "not_found"):
            reason = classified.reason if classified.reason != NOT_FOUND else INVALID_REQUEST
            status = NodeStatus(Phase.FAILED, reason=reason, message=classified.message)
            self._failures[name] = status
            return status
        raise self._error(classified)

    @staticmethod
    def _error(classified: Classified) -> ProvisionerError:
        return ProvisionerError(classified.reason, classified.message, classified.retry_after_s)

    def _forget(self, name: str) -> None:
        self._failures.pop(name, None)
        self._recreating.pop(name, None)
        task = self._deletes.pop(name, None)
        if task is not None and not task.done():
            task.cancel()

    def _settled(self, request_name: str) -> None:
        if self.on_settled is not None:
            try:
                self.on_settled(request_name)
            except Exception:  # a listener's bug must not end our bookkeeping
                log.exception("on_settled(%s) failed", request_name)

    async def _watch_create(
        self, request_name: str, name: str, poller: AsyncLROPoller[AgentPool]
    ) -> None:
        try:
            await self._await_create(name, poller)
        finally:
            self._creates.pop(name, None)
        self._settled(request_name)

    async def _await_create(self, name: str, poller: AsyncLROPoller[AgentPool]) -> None:
        try:
            await poller.result()
            log.info("agent pool %s provisioned", name)
        except AzureError as exc:
            classified = classify(exc)
            if classified.kind == "terminal":
                log.warning(
                    "agent pool %s failed: %s: %s", name, classified.reason, classified.message
                )
                self._failures[name] = NodeStatus(
                    Phase.FAILED, reason=classified.reason, message=classified.message
                )
            else:  # polling itself failed; the pool's provisioningState still tells the truth
                log.info("stopped polling agent pool %s: %s", name, classified.reason)

    async def _watch_delete(
        self, request_name: str, name: str, poller: AsyncLROPoller[None]
    ) -> None:
        try:
            await poller.result()
            log.info("agent pool %s deleted", name)
        except AzureError as exc:
            log.info("deleting agent pool %s: %s", name, classify(exc).message)
        self._settled(request_name)


def _attempt_of(pool: AgentPool) -> int:
    try:
        return max(1, int((pool.tags or {}).get(TAG_ATTEMPT) or 1))
    except ValueError:
        return 1


def _age_s(created: str | None, now: datetime) -> float:
    if not created:
        return float("inf")
    try:
        stamp = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return float("inf")
    return (now - stamp).total_seconds()
