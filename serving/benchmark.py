"""``python -m serving.benchmark``: the short load test that runs once the server is up.

It is the inference container's startup probe, as upstream's post-load benchmark is: while
``/health`` is not 200 it exits 1 at once (the kubelet probes again); once it is, it sends
streamed completions from ``--max-concurrency`` clients for ``--duration-s`` seconds and
writes two lines where ``kubectl logs`` shows them (the container's main process's stdout):

    KAITO_BENCHMARK_CONFIG <unix time> {"duration_sec": ..., "input_tokens": ..., ...}
    KAITO_BENCHMARK_RESULT <unix time> {"vllm_total_tpm": ..., "ttft_avg_ms": ..., ...}

``vllm_total_tpm`` counts prompt and generated tokens per minute over the window; it is -1
when no request succeeded. The probe then exits 0, so a failed benchmark never keeps a
server out of service; the operator reads the result line into ``status.performance``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CONFIG_MARK = "KAITO_BENCHMARK_CONFIG"
RESULT_MARK = "KAITO_BENCHMARK_RESULT"
MAIN_STDOUT = "/proc/1/fd/1"


@dataclass
class Tally:
    """What the clients measured: token counts and per-request timings."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: list[float] = field(default_factory=list)
    tpot_s: list[float] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.benchmark", description=__doc__)
    p.add_argument("--url", default=None, help="the server (default http://127.0.0.1:PORT)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--duration-s", type=float, default=30.0)
    p.add_argument("--max-concurrency", type=int, default=8)
    p.add_argument("--input-tokens", type=int, default=256)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument(
        "--log", default=MAIN_STDOUT, help="where the two lines go (default: the container log)"
    )
    return p


async def _healthy(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _base_model(session: aiohttp.ClientSession, url: str) -> str:
    """The served model (adapters list it as their parent)."""
    async with session.get(f"{url}/v1/models") as resp:
        models = (await resp.json())["data"]
    for model in models:
        if not model.get("parent"):
            return str(model["id"])
    return str(models[0]["id"])


async def _one(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], tally: Tally
) -> None:
    """One streamed completion: time to its first token and per output token after that."""
    start = time.perf_counter()
    first: float | None = None
    usage: dict[str, Any] = {}
    async with session.post(f"{url}/v1/completions", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if first is None and any(c.get("text") for c in chunk.get("choices") or ()):
                first = time.perf_counter()
            usage = chunk.get("usage") or usage
    end = time.perf_counter()
    generated = int(usage.get("completion_tokens") or 0)
    tally.prompt_tokens += int(usage.get("prompt_tokens") or 0)
    tally.completion_tokens += generated
    if first is not None:
        tally.ttft_s.append(first - start)
        if generated > 1:
            tally.tpot_s.append((end - first) / (generated - 1))


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """None while the server is not healthy; else the config and result of one run."""
    url = (args.url or f"http://127.0.0.1:{args.port}").rstrip("/")
    async with aiohttp.ClientSession() as session:
        if not await _healthy(session, url):
            return None
        model = await _base_model(session, url)
        body = {
            "model": model,
            "prompt": "hello " * max(args.input_tokens - 1, 1),
            "max_tokens": args.output_tokens,
            "ignore_eos": True,  # vLLM: generate the full output_tokens
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        tally = Tally()
        deadline = time.perf_counter() + args.duration_s

        async def client() -> None:
            while time.perf_counter() < deadline:
                try:
                    await _one(session, url, body, tally)
                except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as exc:
                    tally.errors += 1
                    tally.last_error = str(exc) or type(exc).__name__
                    await asyncio.sleep(0.5)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(max(args.max_concurrency, 1))))
        elapsed = time.perf_counter() - started
    config = {
        "duration_sec": args.duration_s,
        "input_tokens": args.input_tokens,
        "output_tokens": args.output_tokens,
        "max_concurrency": args.max_concurrency,
        "model": model,
    }
    tokens = tally.prompt_tokens + tally.completion_tokens
    result: dict[str, Any] = {
        "vllm_total_tpm": round(tokens * 60 / elapsed, 1) if tally.ttft_s and elapsed > 0 else -1,
        "ttft_avg_ms": _mean_ms(tally.ttft_s),
        "tpot_avg_ms": _mean_ms(tally.tpot_s),
        "requests": len(tally.ttft_s),
        "errors": tally.errors,
    }
    if tally.last_error:
        result["last_error"] = tally.last_error[:300]
    return config, result


def _mean_ms(values: list[float]) -> float:
    return round(1000 * sum(values) / len(values), 1) if values else -1


def report(path: str, config: dict[str, Any], result: dict[str, Any]) -> str:
    now = int(time.time())
    text = (
        f"{CONFIG_MARK} {now} {json.dumps(config, sort_keys=True)}\n"
        f"{RESULT_MARK} {now} {json.dumps(result, sort_keys=True)}\n"
    )
    try:
        with Path(path).open("a") as out:
            out.write(text)
    except OSError as exc:  # not in a container (no /proc/1 of ours): stdout still has it
        print(f"benchmark: cannot write {path}: {exc}", file=sys.stderr)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    outcome = asyncio.run(run(args))
    if outcome is None:
        return 1  # not healthy yet: the startup probe tries again
    text = report(args.log, *outcome)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
