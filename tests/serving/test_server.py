"""The launcher against real vLLM (CPU) and the tiny model: one server for the whole module.

Outputs are checked token for token against transformers+peft (greedy, float32), including
concurrent base and adapter requests, which share vLLM batches (the mixed-batch LoRA bug).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving.conftest import needs_vllm
from tests.serving.helpers import Reference, Server, free_port, http, serving_argv, start_server
from tests.serving.tiny_model import TinyModel

pytestmark = [needs_vllm, pytest.mark.slow]

N = 12  # generated tokens per comparison
PROMPTS = ["hello world", "the quick brown fox", "kaito serves a model", "one two three"]
STRENGTH_B = 0.5
QUEUE_DEPTH = 32
MAX_REQUEST_BYTES = 12 * 2**20


@pytest.fixture(scope="module")
def server(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("server")
    adapters = work / "adapter"
    adapters.mkdir()
    for name in ("adapter-a", "adapter-b"):
        (adapters / name).symlink_to(tiny.adapter(name))
    port = free_port()
    argv = serving_argv(
        tiny.model,
        port,
        "--adapter-dir",
        str(adapters),
        "--adapter-strength",
        f"adapter-b={STRENGTH_B}",
        "--max-queue-depth",
        str(QUEUE_DEPTH),
        "--max-request-bytes",
        str(MAX_REQUEST_BYTES),
        "--prepared-adapter-dir",
        str(work / "prepared"),
    )
    srv = start_server(argv, port, work / "server.log")
    try:
        yield srv
    finally:
        srv.stop()


def expected(reference: Reference, tiny: TinyModel, model: str, prompt: list[int]) -> list[int]:
    if model == "tiny":
        return reference.greedy(prompt, N)
    strength = STRENGTH_B if model == "adapter-b" else 1.0
    return reference.greedy(prompt, N, tiny.adapter(model), strength)


async def complete(client: Any, url: str, model: str, prompt: list[int]) -> list[int]:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": N,
        "min_tokens": N,
        "temperature": 0,
        "return_token_ids": True,
    }
    r = await client.post(url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return list(r.json()["choices"][0]["token_ids"])


def test_port_answers_503_json_while_loading(server: Server) -> None:
    statuses = [s for s, _ in server.seen]
    assert statuses[-1] == 200
    loading = [b for s, b in server.seen if s == 503]
    assert loading, f"expected a 503 while the model loaded, saw {statuses}"
    assert "loading" in loading[0]["error"]["message"]


def test_health_ok(server: Server) -> None:
    assert http("GET", server.url + "/health")[0] == 200


def test_chat_prompt_returns_result(server: Server) -> None:
    status, body = http("POST", server.url + "/chat", {"prompt": "hello"})
    assert status == 200, body
    assert set(body) == {"Result"}
    assert isinstance(body["Result"], str) and body["Result"].startswith("hello")


def test_chat_messages_greedy_equals_openai_route(server: Server) -> None:
    msgs = [{"role": "user", "content": "hello world"}]
    kw = {"do_sample": False, "max_new_tokens": 8}
    status, body = http("POST", server.url + "/chat", {"messages": msgs, "generate_kwargs": kw})
    assert status == 200, body
    # One adapter would make it /chat's default; with two, /chat serves the base model.
    status, oai = http(
        "POST",
        server.url + "/v1/chat/completions",
        {"model": "tiny", "messages": msgs, "max_tokens": 8, "temperature": 0},
    )
    assert status == 200, oai
    assert body["Result"] == oai["choices"][0]["message"]["content"]


def test_chat_through_adapter_equals_reference(
    server: Server, reference: Reference, tiny: TinyModel
) -> None:
    prompt = "kaito serves a model"
    kw = {"do_sample": False, "max_new_tokens": N, "min_new_tokens": N}
    status, body = http(
        "POST",
        server.url + "/chat",
        {"prompt": prompt, "model": "adapter-a", "generate_kwargs": kw, "return_full_text": False},
    )
    assert status == 200, body
    want = reference.greedy(reference.ids(prompt), N, tiny.adapter("adapter-a"))
    assert body["Result"] == reference.tokenizer.decode(want)


def test_openai_client_chat_completions(server: Server) -> None:
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    resp = client.chat.completions.create(
        model="adapter-a",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=8,
        temperature=0,
    )
    assert resp.choices[0].message.content is not None
    assert resp.model == "adapter-a"
    assert resp.usage is not None and resp.usage.completion_tokens > 0


def test_models_lists_base_and_adapters(server: Server) -> None:
    status, body = http("GET", server.url + "/v1/models")
    assert status == 200
    models = {m["id"]: m.get("parent") for m in body["data"]}
    assert models == {"tiny": None, "adapter-a": "tiny", "adapter-b": "tiny"}


@pytest.mark.parametrize("model", ["tiny", "adapter-a", "adapter-b"])
def test_output_equals_transformers_peft(
    server: Server, reference: Reference, tiny: TinyModel, model: str
) -> None:
    import httpx

    prompt = reference.ids(PROMPTS[0])

    async def one() -> list[int]:
        async with httpx.AsyncClient() as client:
            return await complete(client, server.url, model, prompt)

    assert asyncio.run(one()) == expected(reference, tiny, model, prompt)


def test_adapters_change_the_output(reference: Reference, tiny: TinyModel) -> None:
    """Guards the oracle: if adapters changed nothing, the tests above would prove nothing."""
    prompt = reference.ids(PROMPTS[0])
    outs = {
        m: tuple(expected(reference, tiny, m, prompt)) for m in ("tiny", "adapter-a", "adapter-b")
    }
    assert len(set(outs.values())) == 3, outs
    assert reference.greedy(prompt, N, tiny.adapter("adapter-b"), 0.0) == list(outs["tiny"])


def test_concurrent_base_and_adapter_requests_are_each_correct(
    server: Server, reference: Reference, tiny: TinyModel
) -> None:
    import httpx

    jobs = [
        (model, reference.ids(p))
        for _ in range(2)
        for p in PROMPTS
        for model in ("tiny", "adapter-a", "tiny", "adapter-b")
    ]
    want = [expected(reference, tiny, m, p) for m, p in jobs]

    async def run() -> list[list[int]]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(complete(client, server.url, m, p) for m, p in jobs))

    got = asyncio.run(run())
    wrong = [(m, g, w) for (m, _), g, w in zip(jobs, got, want, strict=True) if g != w]
    assert not wrong, f"{len(wrong)}/{len(jobs)} answers differ from the reference: {wrong[:3]}"


def test_runtime_load_then_unload(server: Server, reference: Reference, tiny: TinyModel) -> None:
    prompt = reference.ids(PROMPTS[1])
    base = server.url
    status, body = http(
        "POST", base + "/adapters", {"name": "rt", "path": str(tiny.adapter("adapter-a"))}
    )
    assert status == 200, body
    ids = {m["id"] for m in http("GET", base + "/v1/models")[1]["data"]}
    assert "rt" in ids
    status, body = http(
        "POST",
        base + "/v1/completions",
        {
            "model": "rt",
            "prompt": prompt,
            "max_tokens": N,
            "min_tokens": N,
            "temperature": 0,
            "return_token_ids": True,
        },
    )
    assert status == 200, body
    assert body["choices"][0]["token_ids"] == expected(reference, tiny, "adapter-a", prompt)
    # The same name again is a conflict, not a silent replacement.
    assert (
        http("POST", base + "/adapters", {"name": "rt", "path": str(tiny.adapter("adapter-b"))})[0]
        == 409
    )
    status, body = http("DELETE", base + "/adapters/rt")
    assert status == 200, body
    status, body = http(
        "POST", base + "/v1/completions", {"model": "rt", "prompt": "x", "max_tokens": 2}
    )
    assert status == 404, body
    assert "rt" not in {m["id"] for m in http("GET", base + "/v1/models")[1]["data"]}
    assert http("DELETE", base + "/adapters/rt")[0] == 404


def test_runtime_load_with_strength_zero_is_base(
    server: Server, reference: Reference, tiny: TinyModel
) -> None:
    prompt = reference.ids(PROMPTS[2])
    status, body = http(
        "POST",
        server.url + "/adapters",
        {"name": "zero", "path": str(tiny.adapter("adapter-a")), "strength": 0},
    )
    assert status == 200, body
    try:
        status, body = http(
            "POST",
            server.url + "/v1/completions",
            {
                "model": "zero",
                "prompt": prompt,
                "max_tokens": N,
                "min_tokens": N,
                "temperature": 0,
                "return_token_ids": True,
            },
        )
        assert status == 200, body
        assert body["choices"][0]["token_ids"] == reference.greedy(prompt, N)
    finally:
        assert http("DELETE", server.url + "/adapters/zero")[0] == 200


def test_runtime_load_bad_path_is_404_and_server_stays_up(server: Server, tmp_path: Path) -> None:
    status, body = http("POST", server.url + "/adapters", {"name": "x", "path": str(tmp_path)})
    assert status == 404 and "adapter_config.json" in body["error"]["message"]
    assert http("GET", server.url + "/health")[0] == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/chat", b"not json", "JSON"),
        ("/chat", {}, "prompt"),
        ("/chat", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "prompt"),
        ("/chat", {"prompt": 3}, "prompt"),
        ("/chat", {"prompt": "a", "generate_kwargs": {"temperature": -1}}, "temperature"),
        ("/chat", {"prompt": "a", "generate_kwargs": {"max_lenght": 5}}, "max_lenght"),
        ("/chat", {"messages": [{"role": "wizard", "content": "b"}]}, "role"),
        ("/adapters", {"name": "x"}, "path"),
        ("/adapters", {"name": "x", "path": "/a", "strength": 2.5}, "strength"),
        ("/adapters", {"name": "x", "path": "/a", "strength": -1}, "strength"),
        ("/v1/chat/completions", {"model": "tiny"}, "messages"),
        ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": -3}, "max_tokens"),
    ],
)
def test_malformed_bodies_get_400_naming_the_field(
    server: Server, path: str, body: Any, field: str
) -> None:
    status, resp = http("POST", server.url + path, body)
    assert status == 400, resp
    assert field in json.dumps(resp), resp


def test_unknown_model_is_404(server: Server) -> None:
    status, body = http("POST", server.url + "/chat", {"prompt": "a", "model": "nope"})
    assert status == 404 and "nope" in body["error"]["message"]
    status, body = http(
        "POST",
        server.url + "/v1/chat/completions",
        {"model": "nope", "messages": [{"role": "user", "content": "a"}]},
    )
    assert status == 404


def test_queue_depth_answers_429(server: Server) -> None:
    import httpx

    async def run() -> list[int]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as client:
            body = {"model": "tiny", "prompt": "hello", "max_tokens": 32, "min_tokens": 32}
            rs = await asyncio.gather(
                *(
                    client.post(server.url + "/v1/completions", json=body, timeout=120)
                    for _ in range(QUEUE_DEPTH * 3)
                )
            )
            return [r.status_code for r in rs]

    codes = asyncio.run(run())
    assert set(codes) == {200, 429}, codes
    assert codes.count(200) >= QUEUE_DEPTH
    status, _ = http("POST", server.url + "/chat", {"prompt": "hello"})
    assert status == 200, "the server must recover once the queue drains"


def test_metrics_expose_vllm_and_kaito_series(server: Server) -> None:
    status, text = http("GET", server.url + "/metrics")
    assert status == 200
    names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"
    }
    assert any(n.startswith("vllm:") for n in names)
    assert "vllm:generation_tokens_total" in names
    assert "kaito_serving_requests_rejected_total" in names
    assert "kaito_serving_adapters" in names


# ---------------------------------------------------------------- the edge (issue 18, defect 13)


def test_a_long_prompt_does_not_stall_the_event_loop(server: Server) -> None:
    """Without max_new_tokens /chat counts the prompt's tokens; that must not block /health."""
    import httpx

    prompt = "hello world " * (10 * 2**20 // 12)  # 10 MB, as in the report

    async def run() -> tuple[int, list[float]]:
        async with httpx.AsyncClient(timeout=120) as client:
            chat = asyncio.create_task(client.post(server.url + "/chat", json={"prompt": prompt}))
            waits: list[float] = []
            while not chat.done():
                t0 = time.perf_counter()
                r = await client.get(server.url + "/health")
                assert r.status_code == 200
                waits.append(time.perf_counter() - t0)
                await asyncio.sleep(0.05)
            return (await chat).status_code, waits

    status, waits = asyncio.run(run())
    # before: /health waited ~5 s (the whole tokenization); the bound leaves room for a busy
    # machine (the body itself is still decoded on the loop: ~0.1 s for 10 MB)
    assert max(waits) < 2.0, f"/health waited {max(waits):.2f}s behind the tokenizer: {waits}"
    assert status == 400  # far longer than the model's context, and said so
    assert len(waits) >= 5, "the request was too quick to show anything"


@pytest.mark.parametrize("path", ["/chat", "/v1/completions", "/adapters"])
def test_a_body_over_the_limit_is_413(server: Server, path: str) -> None:
    import httpx

    body = b'{"prompt": "' + b"a" * (MAX_REQUEST_BYTES + 1) + b'"}'
    r = httpx.post(server.url + path, content=body, timeout=60)
    assert r.status_code == 413, r.text
    assert "--max-request-bytes" in r.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(MAX_REQUEST_BYTES // 2**20 + 2):
            yield b"a" * 2**20

    r = httpx.post(server.url + path, content=chunks(), timeout=60)
    assert r.status_code == 413, r.text
    assert http("GET", server.url + "/health")[0] == 200


def _raw(server: Server, request: bytes, hold_s: float) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        time.sleep(hold_s)


def test_a_client_that_goes_away_is_not_an_error(server: Server) -> None:
    body = json.dumps({"prompt": "hello", "generate_kwargs": {"max_new_tokens": 200}}).encode()
    mark = len(server.log.read_bytes())
    # gone while sending its body, then gone while its answer is generated
    _raw(server, b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         b"Content-Length: 1000\r\n\r\n" + body[:10], 0.2)  # fmt: skip
    _raw(server, b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body, 0.3)  # fmt: skip
    time.sleep(2)
    assert http("GET", server.url + "/health")[0] == 200
    log = server.log.read_bytes()[mark:].decode(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert "unhandled error" not in log
    assert "client went away during POST /chat" in log


def test_adapters_loaded_through_vllms_route_are_listed_and_counted(
    server: Server, tiny: TinyModel
) -> None:
    def listed() -> dict[str, Any]:
        return {a["name"]: a for a in http("GET", server.url + "/adapters")[1]["data"]}

    def gauge() -> float:
        text = http("GET", server.url + "/metrics")[1]
        line = next(x for x in text.splitlines() if x.startswith("kaito_serving_adapters "))
        return float(line.split()[1])

    before, count = listed(), gauge()
    assert count == len(before)
    status, body = http(
        "POST",
        server.url + "/v1/load_lora_adapter",
        {"lora_name": "via-vllm", "lora_path": str(tiny.adapter("adapter-a"))},
    )
    assert status == 200, body
    try:
        entry = listed()["via-vllm"]
        assert entry["origin"] == "vllm" and entry["strength"] == 1.0
        assert gauge() == count + 1
        assert http("POST", server.url + "/adapters", {"name": "via-vllm", "path": "/x"})[0] == 409
    finally:
        status, body = http(
            "POST", server.url + "/v1/unload_lora_adapter", {"lora_name": "via-vllm"}
        )
        assert status == 200, body
    assert "via-vllm" not in listed()
    assert gauge() == count
