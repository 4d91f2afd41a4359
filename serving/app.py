"""Kaito's routes and guards, added to the FastAPI app that vLLM builds for its OpenAI server.

``/chat`` and ``/adapters`` call vLLM's own handler objects (``app.state.openai_serving_*``) in
the same event loop, so they cost one function call, not an HTTP hop. The queue guard is a plain
ASGI middleware: it counts generation requests in flight and answers 429 beyond the limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request  # at module level: FastAPI resolves route annotations from globals
from prometheus_client import Counter, Gauge, Histogram
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from serving import adapters as adapter_prep
from serving.chat import ChatBody, sampling_fields, validation_message

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("serving")

GENERATION_PATHS = frozenset({"/chat", "/v1/chat/completions", "/v1/completions"})
DEFAULT_MAX_REQUEST_BYTES = 16 * 2**20

REJECTED = Counter(
    "kaito_serving_requests_rejected_total",
    "Requests answered 429 because the queue was over --max-queue-depth",
)
IN_FLIGHT = Gauge("kaito_serving_requests_in_flight", "Generation requests being served or queued")
CHAT_LATENCY = Histogram(
    "kaito_serving_chat_request_duration_seconds", "Latency of POST /chat", ["status"]
)
ADAPTER_OPS = Counter(
    "kaito_serving_adapter_operations_total", "Runtime adapter loads/unloads", ["op", "result"]
)
ADAPTERS = Gauge("kaito_serving_adapters", "LoRA adapters currently served (any route)")
BODY_TOO_LARGE = Counter(
    "kaito_serving_requests_too_large_total",
    "Requests answered 413 because the body was over --max-request-bytes",
)


@dataclass
class AdapterInfo:
    name: str
    source: str
    served_path: str
    strength: float
    origin: str  # "startup", "runtime" (POST /adapters) or "vllm" (vLLM's own load route)


@dataclass
class KaitoState:
    """What our routes need besides vLLM's own state."""

    base_model: str
    default_chat_model: str
    prepared_root: Path
    adapters: dict[str, AdapterInfo] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class AdapterLoad(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1)
    path: str = Field(min_length=1, validation_alias=AliasChoices("path", "src"))
    strength: float = Field(default=1.0, ge=0.0, le=1.0)  # the Workspace API's range


def error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    """The OpenAI error shape vLLM itself uses, so clients parse one format."""
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def error(status: int, message: str, kind: str = "BadRequestError") -> JSONResponse:
    from fastapi.responses import JSONResponse

    return JSONResponse(error_body(status, message, kind), status_code=status)


class QueueGuard:
    """The edge of every request: body size, queue depth, errors that escape a route.

    - A body over ``max_body`` bytes gets 413 (declared by Content-Length: before it is read;
      sent chunked: as soon as the count passes the limit, the route sees a disconnect).
    - Generation requests beyond ``max_depth`` in flight get 429 (0 = unlimited).
    - A client that goes away mid-request is logged in one line, not as an error.
    - Any other exception that escapes a route becomes a JSON 500 instead of a text page.
    """

    configured_max_depth = 0  # set by the launcher: vLLM's --middleware adds it by import path
    configured_max_body = DEFAULT_MAX_REQUEST_BYTES

    def __init__(
        self, app: ASGIApp, max_depth: int | None = None, max_body: int | None = None
    ) -> None:
        self.app = app
        self.max_depth = self.configured_max_depth if max_depth is None else max_depth
        self.max_body = self.configured_max_body if max_body is None else max_body
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if self.max_body and declared is not None and declared > self.max_body:
            await self._too_large(send, declared)
            return
        guarded = scope["path"] in GENERATION_PATHS
        if guarded and self.max_depth and self.in_flight >= self.max_depth:
            REJECTED.inc()
            await _send_json(
                send,
                429,
                error_body(
                    429,
                    f"too many requests: {self.in_flight} in flight, limit --max-queue-depth="
                    f"{self.max_depth}; retry later",
                    "RateLimitError",
                ),
                [(b"retry-after", b"1")],
            )
            return
        started = False
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request" and self.max_body:
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_large = True  # the route sees the client go; we answer 413
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if too_large:
                if not started and message["type"] == "http.response.start":
                    started = True
                    await self._too_large(send, received)
                return  # whatever the route says about the cut body is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        if guarded:
            self.in_flight += 1
            IN_FLIGHT.inc()
        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception as e:
            if too_large:
                if not started:
                    await self._too_large(send, received)
            elif _is_disconnect(e):
                log.info("client went away during %s %s", scope.get("method"), scope["path"])
            else:
                log.exception("unhandled error on %s", scope["path"])
                if not started:
                    await _send_json(
                        send, 500, error_body(500, f"internal error: {e}", "InternalServerError")
                    )
        finally:
            if guarded:
                self.in_flight -= 1
                IN_FLIGHT.dec()

    async def _too_large(self, send: Send, size: int) -> None:
        BODY_TOO_LARGE.inc()
        await _send_json(
            send,
            413,
            error_body(
                413,
                f"request body is {size} bytes or more; the limit is {self.max_body} "
                "(--max-request-bytes)",
                "RequestTooLargeError",
            ),
        )


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers") or ():
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _is_disconnect(exc: BaseException) -> bool:
    """The client closed the connection (Starlette's ClientDisconnect, a reset socket)."""
    from starlette.requests import ClientDisconnect

    return isinstance(exc, (ClientDisconnect, ConnectionResetError, BrokenPipeError))


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _json_body(request: Request) -> tuple[Any, JSONResponse | None]:
    raw = await request.body()
    try:
        return json.loads(raw or b"null"), None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, error(400, f"body is not valid JSON: {e}")


def _prompt_tokens(tokenizer: Any, body: ChatBody) -> int:
    if body.prompt is not None:
        return len(tokenizer.encode(body.prompt))
    msgs = [m.model_dump() for m in body.messages or []]
    ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def guard_middleware(
    max_queue_depth: int, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
) -> str:
    """Import path of the guard for vLLM's ``--middleware`` list (added when vLLM builds its
    app; Starlette refuses middleware added to an app afterwards)."""
    QueueGuard.configured_max_depth = max_queue_depth
    QueueGuard.configured_max_body = max_request_bytes
    return f"{QueueGuard.__module__}.{QueueGuard.__qualname__}"


def served_adapters(app: Any, state: KaitoState) -> dict[str, AdapterInfo]:
    """The adapters vLLM serves now, whichever route loaded or unloaded them.

    vLLM's model registry is the truth: an adapter loaded through ``/v1/load_lora_adapter``
    appears (strength 1.0, origin "vllm"), one unloaded there disappears from our records.
    """
    loras = _vllm_loras(app)
    if loras is None:
        return state.adapters
    current: dict[str, AdapterInfo] = {}
    for lora in loras:
        name = str(lora.lora_name)
        current[name] = state.adapters.get(name) or AdapterInfo(
            name, str(lora.lora_path), str(lora.lora_path), 1.0, "vllm"
        )
    state.adapters = current
    return current


def _vllm_loras(app: Any) -> list[Any] | None:
    """vLLM's LoRARequests (None before vLLM's app state exists)."""
    models = getattr(app.state, "openai_serving_models", None)
    if models is None:
        return None
    served = getattr(models, "lora_requests", None) or {}
    return list(served.values() if isinstance(served, dict) else served)


def install_routes(app: FastAPI, state: KaitoState) -> None:
    """Add ``/chat`` and ``/adapters`` to vLLM's app."""
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionRequest,
        ChatCompletionResponse,
    )
    from vllm.entrypoints.openai.completion.protocol import (
        CompletionRequest,
        CompletionResponse,
    )
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse
    from vllm.entrypoints.serve.lora.protocol import (
        LoadLoRAAdapterRequest,
        UnloadLoRAAdapterRequest,
    )

    app.state.kaito = state

    def adapters_served() -> float:
        loras = _vllm_loras(app)
        return len(state.adapters if loras is None else loras)

    ADAPTERS.set_function(adapters_served)
    routes_before = len(app.router.routes)

    def vllm_error(resp: ErrorResponse) -> JSONResponse:
        from fastapi.responses import JSONResponse

        return JSONResponse(resp.model_dump(), status_code=resp.error.code)

    async def chat(request: Request) -> Any:
        t0 = time.perf_counter()
        resp = await _chat(request)
        CHAT_LATENCY.labels(str(resp.status_code)).observe(time.perf_counter() - t0)
        return resp

    async def _chat(request: Request) -> JSONResponse:
        from fastapi.responses import JSONResponse

        data, bad = await _json_body(request)
        if bad is not None:
            return bad
        if not isinstance(data, dict):
            return error(400, 'body must be a JSON object such as {"prompt": "hello"}')
        try:
            body = ChatBody.model_validate(data)
        except ValidationError as e:
            return error(400, validation_message(e))
        model = body.model or state.default_chat_model
        engine = request.app.state.engine_client
        kw = body.generate_kwargs
        # HF lengths count the prompt; only then is the prompt tokenized here (vLLM does it anyway).
        needs_length = kw.max_new_tokens is None or (
            kw.min_new_tokens is None and kw.min_length is not None
        )
        try:
            # off the event loop: a long prompt takes seconds to tokenize, and /health and
            # every other request must not wait for it
            n_prompt = (
                await asyncio.to_thread(_prompt_tokens, engine.get_tokenizer(), body)
                if needs_length
                else 0
            )
        except Exception as e:
            return error(400, f"cannot tokenize the input: {e}")
        fields = sampling_fields(body.generate_kwargs, n_prompt)
        if body.prompt is not None:
            handler = request.app.state.openai_serving_completion
            try:
                creq = CompletionRequest(model=model, prompt=body.prompt, **fields)
            except ValidationError as e:
                return error(400, validation_message(e))
            out = await handler.create_completion(creq, request)
            if isinstance(out, ErrorResponse):
                return vllm_error(out)
            assert isinstance(out, CompletionResponse)
            text = out.choices[0].text
            result = body.prompt + text if body.return_full_text else text
        else:
            handler = request.app.state.openai_serving_chat
            msgs = [m.model_dump() for m in body.messages or []]
            try:
                qreq = ChatCompletionRequest(model=model, messages=msgs, **fields)
            except ValidationError as e:
                return error(400, validation_message(e))
            out = await handler.create_chat_completion(qreq, request)
            if isinstance(out, ErrorResponse):
                return vllm_error(out)
            assert isinstance(out, ChatCompletionResponse)
            result = out.choices[0].message.content or ""
        return JSONResponse({"Result": result})

    async def list_adapters(request: Request) -> Any:
        return {
            "data": [
                {
                    "name": a.name,
                    "source": a.source,
                    "path": a.served_path,
                    "strength": a.strength,
                    "origin": a.origin,
                }
                for a in served_adapters(request.app, state).values()
            ]
        }

    async def load_adapter(request: Request) -> Any:
        data, bad = await _json_body(request)
        if bad is not None:
            return bad
        try:
            body = AdapterLoad.model_validate(data)
        except ValidationError as e:
            return error(400, validation_message(e))
        if not math.isfinite(body.strength):
            return error(400, "strength: must be a finite number")
        if not request.app.state.vllm_config.lora_config:
            return error(
                400,
                "this server was started without LoRA support; start it with --enable-lora "
                "(or with an adapter under --adapter-dir) to load adapters at run time",
            )
        async with state.lock:
            if body.name in served_adapters(request.app, state) or body.name == state.base_model:
                ADAPTER_OPS.labels("load", "conflict").inc()
                return error(409, f"adapter {body.name!r} is already served; DELETE it first")
            source = Path(body.path)
            if not (source / "adapter_config.json").is_file():
                ADAPTER_OPS.labels("load", "not_found").inc()
                return error(404, f"path: {source} has no adapter_config.json", "NotFoundError")
            try:
                served = await asyncio.to_thread(
                    adapter_prep.prepare, source, body.strength, state.prepared_root
                )
            except (adapter_prep.AdapterError, OSError, ValueError) as e:
                ADAPTER_OPS.labels("load", "error").inc()
                return error(400, str(e))
            models = request.app.state.openai_serving_models
            res = await models.load_lora_adapter(
                LoadLoRAAdapterRequest(lora_name=body.name, lora_path=str(served))
            )
            if isinstance(res, ErrorResponse):
                ADAPTER_OPS.labels("load", "error").inc()
                return vllm_error(res)
            state.adapters[body.name] = AdapterInfo(
                body.name, str(source), str(served), body.strength, "runtime"
            )
            ADAPTER_OPS.labels("load", "ok").inc()
        return {"name": body.name, "strength": body.strength, "path": str(served)}

    async def unload_adapter(name: str, request: Request) -> Any:
        async with state.lock:
            if name not in served_adapters(request.app, state):
                ADAPTER_OPS.labels("unload", "not_found").inc()
                return error(404, f"adapter {name!r} is not served", "NotFoundError")
            models = request.app.state.openai_serving_models
            res = await models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))
            if isinstance(res, ErrorResponse):
                ADAPTER_OPS.labels("unload", "error").inc()
                return vllm_error(res)
            state.adapters.pop(name, None)
            ADAPTER_OPS.labels("unload", "ok").inc()
        return {"name": name, "unloaded": True}

    app.add_api_route("/chat", chat, methods=["POST"])
    app.add_api_route("/adapters", list_adapters, methods=["GET"])
    app.add_api_route("/adapters", load_adapter, methods=["POST"])
    app.add_api_route("/adapters/{name}", unload_adapter, methods=["DELETE"])
    # vLLM's SageMaker bootstrap also serves /adapters (without strength); ours go first and
    # accept its field names too ("src" for "path").
    ours = app.router.routes[routes_before:]
    del app.router.routes[routes_before:]
    app.router.routes[0:0] = ours


async def loading_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers every request with 503 while the model loads (the port is bound early)."""
    if scope["type"] != "http":
        return
    await _send_json(
        send,
        503,
        error_body(503, "the model is still loading; retry shortly", "ServiceUnavailableError"),
        [(b"retry-after", b"5")],
    )
