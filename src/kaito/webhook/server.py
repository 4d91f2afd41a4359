"""The admission webhook HTTP server (aiohttp over TLS), part of the operator process.

It turns AdmissionReview requests into calls to :mod:`kaito.webhook.validation` and answers
with allowed/denied plus field causes. A preset named by hub id is first sized from the hub
(:class:`kaito.hub.HubPresets`, within a few seconds); when the hub cannot be read the Workspace
is admitted with a warning, and the operator reports the outcome in its conditions. Junk
(non-JSON, wrong types, huge bodies) gets a 4xx or a denial, never a crash; the server keeps
serving.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kaito import presets
from kaito.api import WorkspaceBase, constants
from kaito.hub import HubPresets
from kaito.presets import Preset, SpecError
from kaito.presets.errors import SourceUnavailable
from kaito.presets.plan import hub_model
from kaito.presets.skus import LearnedSku
from kaito.webhook.config import MUTATE_PATH, VALIDATE_INFERENCESET_PATH, VALIDATE_PATH
from kaito.webhook.configs import config_map_names
from kaito.webhook.inferenceset import (
    parse_set,
    replica,
    set_update_checked,
    validate_inferenceset,
)
from kaito.webhook.validation import (
    default_patch,
    parse,
    update_checked,
    validate_create,
    validate_update,
)
from kaito.webhook.view import ClusterView, FieldError, Policy

log = logging.getLogger(__name__)

NodeLister = Callable[[str], Awaitable[Sequence[Mapping[str, Any]]]]
"""Lists nodes matching an API label selector string (e.g. "apps=phi-3")."""
ConfigMapReader = Callable[[str, str], Awaitable[Mapping[str, str] | None]]
"""(namespace, name) → the ConfigMap's data; None when it does not exist."""
CloudSkuReader = Callable[[str], Awaitable[LearnedSku | None]]
"""An instance type → its figures from the cloud (None: the cloud has no such size)."""


@dataclass(frozen=True)
class Lookups:
    """How the server reads the cluster (and the cloud) for the rules that need it."""

    nodes: NodeLister
    config_map: ConfigMapReader
    cloud_sku: CloudSkuReader | None = None


MAX_BODY = 16 * 1024 * 1024
"""AdmissionReviews carry object and oldObject; 16 MiB covers the API server's own limits."""
HUB_TIMEOUT_S = 5.0
"""How long an admission waits for the model hub (the API server gives the webhook 10 s)."""


def _status(errors: list[FieldError]) -> dict[str, Any]:
    message = "; ".join(str(e) for e in errors)
    return {
        "code": 422,
        "reason": "Invalid",
        "message": message,
        "details": {
            "causes": [
                {"type": "FieldValueInvalid", "field": e.field, "message": e.message}
                for e in errors
            ]
        },
    }


def _response(uid: str, errors: list[FieldError], warnings: Sequence[str] = ()) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": not errors}
    if errors:
        response["status"] = _status(errors)
    if warnings:
        response["warnings"] = [w[:500] for w in warnings]
    return response


class WebhookServer:
    """Serves /validate-workspace, /mutate-workspace and /healthz."""

    def __init__(
        self,
        lookups: Lookups | None = None,
        policy: Policy | None = None,
        hub: HubPresets | None = None,
        hub_timeout_s: float = HUB_TIMEOUT_S,
    ) -> None:
        self.lookups = lookups
        self.policy = policy or Policy()
        self.hub = hub
        self.hub_timeout_s = hub_timeout_s
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        application = web.Application(client_max_size=MAX_BODY)
        application.router.add_post(VALIDATE_PATH, self._validate_http)
        application.router.add_post(VALIDATE_INFERENCESET_PATH, self._validate_set_http)
        application.router.add_post(MUTATE_PATH, self._mutate_http)
        application.router.add_get("/healthz", self._healthz)
        return application

    async def start(
        self, host: str = "127.0.0.1", port: int = 9443, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Listen (port 0 picks a free one) and return the bound port."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        server = site._server  # aiohttp exposes the bound sockets only here
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _read_review(self, request: web.Request) -> dict[str, Any] | web.Response:
        body = await request.read()
        try:
            review = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "body is not JSON"}, status=400)
        if (
            not isinstance(review, dict)
            or not isinstance(review.get("request"), dict)
            or not isinstance(review["request"].get("uid"), str)
        ):
            return web.json_response(
                {"error": "expected an admission.k8s.io/v1 AdmissionReview with request.uid"},
                status=400,
            )
        return review

    def _reply(self, review: dict[str, Any], response: dict[str, Any]) -> web.Response:
        return web.json_response(
            {
                "apiVersion": review.get("apiVersion") or "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": response,
            }
        )

    async def _validate_http(self, request: web.Request) -> web.Response:
        return await self._answer(request, self.review, "Workspace")

    async def _validate_set_http(self, request: web.Request) -> web.Response:
        return await self._answer(request, self.review_set, "InferenceSet")

    async def _answer(
        self,
        request: web.Request,
        rules: Callable[[Mapping[str, Any], list[str]], Awaitable[list[FieldError]]],
        kind: str,
    ) -> web.Response:
        """One AdmissionReview judged by `rules`; a failure in them denies with a pointer
        to the logs rather than a traceback to the user."""
        review = await self._read_review(request)
        if isinstance(review, web.Response):
            return review
        req = review["request"]
        warnings: list[str] = []
        try:
            errors = await rules(req, warnings)
        except Exception:
            log.exception("validating %s %s failed", kind, req.get("name"))
            errors = [FieldError("(root)", "internal error in the Kaito webhook; see its logs")]
        return self._reply(review, _response(req["uid"], errors, warnings))

    async def review_set(
        self, req: Mapping[str, Any], warnings: list[str] | None = None
    ) -> list[FieldError]:
        """Field errors for one InferenceSet AdmissionRequest (empty: allowed)."""
        obj, old = req.get("object"), req.get("oldObject")
        if not isinstance(obj, Mapping):
            return [FieldError("(root)", "the request carries no object")]
        old_obj = old if req.get("operation") == "UPDATE" and isinstance(old, Mapping) else None
        if not set_update_checked(obj, old_obj):
            return []  # nothing to look up, as for a Workspace
        hub_presets, errors = await self._hub_of_set(obj, warnings if warnings is not None else [])
        if errors:
            return errors
        view = await self._replica_view(obj, str(req.get("namespace") or ""), hub_presets)
        return validate_inferenceset(obj, old_obj, self.policy, view)

    async def _hub_of_set(
        self, obj: Mapping[str, Any], warnings: list[str]
    ) -> tuple[dict[str, Preset], list[FieldError]]:
        """A set's hub model is sized before its replica's rules run, as a Workspace's is;
        errors and notes name the set's own field (``spec.template.…``)."""
        spec = obj.get("spec")
        template = spec.get("template") if isinstance(spec, Mapping) else None
        if not isinstance(template, Mapping):
            return {}, []
        notes: list[str] = []
        found, errors = await self._hub_presets(template, notes)
        warnings.extend(f"spec.template.{note}" for note in notes)
        return found, [FieldError(f"spec.template.{e.field}", e.message) for e in errors]

    async def _replica_view(
        self, obj: Mapping[str, Any], namespace: str, hub_presets: dict[str, Preset]
    ) -> ClusterView | None:
        """The cluster facts for the Workspace a set would create (None: nothing to judge)."""
        iset = parse_set(obj)
        child = replica(iset, self.policy)[0] if iset is not None else None
        if child is None:
            return None
        view = await self.view(child, namespace)
        if hub_presets:
            view = dataclasses.replace(view or ClusterView(), hub_presets=hub_presets)
        return view

    async def review(
        self, req: Mapping[str, Any], warnings: list[str] | None = None
    ) -> list[FieldError]:
        """Field errors for one AdmissionRequest (empty: allowed); `warnings` collects notes."""
        obj = req.get("object")
        if not isinstance(obj, Mapping):
            return [FieldError("(root)", "the request carries no object")]
        update = req.get("operation") == "UPDATE"
        old = req.get("oldObject")
        old_obj = old if isinstance(old, Mapping) else None
        if update and not update_checked(obj, old_obj):
            # nothing to look up: deletions and metadata-only updates pass (changed
            # annotations are checked on their own)
            return validate_update(obj, old_obj, self.policy)
        hub_presets, errors = await self._hub_presets(obj, warnings if warnings is not None else [])
        if errors:
            return errors
        ws, _ = parse(obj)
        view = await self.view(ws, str(req.get("namespace") or "")) if ws is not None else None
        if hub_presets:
            view = dataclasses.replace(view or ClusterView(), hub_presets=hub_presets)
        if update:
            return validate_update(obj, old_obj, self.policy, view)
        return validate_create(obj, view, self.policy)

    async def _hub_presets(
        self, obj: Mapping[str, Any], warnings: list[str]
    ) -> tuple[dict[str, Preset], list[FieldError]]:
        """Size a preset named by hub id, or say why it cannot be served (errors) or checked."""
        found = hub_model(obj)
        if found is None or self.hub is None:
            return {}, []
        name, field = found
        try:
            preset = await asyncio.wait_for(self.hub.preset(name), self.hub_timeout_s)
        except (SourceUnavailable, TimeoutError) as err:
            reason = err.reason if isinstance(err, SourceUnavailable) else "no answer in time"
            warnings.append(
                f"{field}: {name} was not checked ({reason}); the operator sizes it and reports "
                "problems in the Workspace's conditions"
            )
            return {}, []
        except SpecError as err:
            if _access_secret(obj):
                # read anonymously here; the operator reads it with the modelAccessSecret
                warnings.append(f"{field}: {name} was not checked anonymously: {err.reason}")
                return {}, []
            return {}, [FieldError(err.field, err.reason)]
        return {name.lower(): preset}, []

    async def view(self, ws: WorkspaceBase, namespace: str) -> ClusterView | None:
        """Look up what the rules for `ws` need: nodes, ConfigMaps, an unknown instance type."""
        if self.lookups is None:
            return None
        lookups = self.lookups
        namespace = ws.namespace or namespace
        selected = None
        if ws.resource.instance_type is None:
            selected = await lookups.nodes(label_query(ws.resource.label_selector.match_labels))
        typed = None
        cloud_sku: LearnedSku | None = None
        cloud_error: str | None = None
        name = ws.resource.instance_type
        if name is not None and presets.get_sku(name) is None:
            typed = await lookups.nodes(f"{constants.LABEL_INSTANCE_TYPE}={name}")
            if lookups.cloud_sku is not None:
                try:
                    cloud_sku = await lookups.cloud_sku(name)
                except Exception as exc:  # the cloud's answer is shown, never a traceback
                    log.warning("looking up instance type %s failed: %s", name, exc)
                    cloud_error = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        maps = {n: await lookups.config_map(namespace, n) for n in config_map_names(ws)}
        return ClusterView(
            selected_nodes=selected,
            typed_nodes=typed,
            cloud_sku=cloud_sku,
            cloud_error=cloud_error,
            config_maps=maps,
        )

    async def _mutate_http(self, request: web.Request) -> web.Response:
        review = await self._read_review(request)
        if isinstance(review, web.Response):
            return review
        req = review["request"]
        response: dict[str, Any] = {"uid": req["uid"], "allowed": True}
        obj = req.get("object")
        if req.get("operation") == "CREATE" and isinstance(obj, Mapping):
            patch = default_patch(obj, str(obj.get("apiVersion", "")))
            if patch:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        return self._reply(review, response)


def _access_secret(obj: Mapping[str, Any]) -> str | None:
    for section in ("inference", "tuning"):
        part = obj.get(section)
        preset = part.get("preset") if isinstance(part, Mapping) else None
        options = preset.get("presetOptions") if isinstance(preset, Mapping) else None
        secret = options.get("modelAccessSecret") if isinstance(options, Mapping) else None
        if isinstance(secret, str) and secret:
            return secret
    return None


def label_query(match_labels: Mapping[str, str] | None) -> str:
    """matchLabels as an API label selector string (expressions are filtered client-side)."""
    return ",".join(
        f"{k}={v}"
        for k, v in sorted((match_labels or {}).items())
        if k not in constants.RESERVED_SELECTOR_KEYS
    )


def kube_lookups(api_client: Any, cloud_sku: CloudSkuReader | None = None) -> Lookups:
    """Lookups over a kubernetes_asyncio ApiClient (raw JSON, no model conversion)."""
    from kubernetes_asyncio import client  # noqa: PLC0415 - the webhook core needs no client
    from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415

    core = client.CoreV1Api(api_client)

    async def list_nodes(label_selector: str) -> Sequence[Mapping[str, Any]]:
        response: Any = await core.list_node(label_selector=label_selector, _preload_content=False)
        data = json.loads(await response.read())
        items: list[Mapping[str, Any]] = data.get("items") or []
        return items

    async def read_config_map(namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            response: Any = await core.read_namespaced_config_map(
                name, namespace, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if response.status == 404:
            return None
        body = json.loads(await response.read())
        if body.get("kind") != "ConfigMap":
            raise RuntimeError(f"reading ConfigMap {namespace}/{name}: {body.get('message')}")
        data: Mapping[str, str] = body.get("data") or {}
        return data

    return Lookups(list_nodes, read_config_map, cloud_sku)
