"""Launcher overhead: ``python -m serving`` versus bare vLLM on the same tiny model, same run.

For each server (one at a time, alternating for ``--rounds``): time from spawn to /health 200,
resident memory of its process tree once loaded, then p50/p99 latency and tokens/s of
sequential requests to ``/v1/chat/completions`` (both servers) and ``/chat`` (ours; bare vLLM has
no such route), plus tokens/s at a fixed concurrency. Every request generates exactly
``--tokens`` tokens (greedy, ``min_tokens``) so the servers do the same work.

Run with the serving venv: ``$(hack/serving-env)/bin/python bench/serving.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serving.helpers import Server, free_port, start_server  # noqa: E402
from tests.serving.tiny_model import build  # noqa: E402

COMMON = ["--dtype", "float32", "--max-model-len", "256", "--enforce-eager", "--host", "127.0.0.1"]
MESSAGES = [{"role": "user", "content": "hello world, the quick brown fox"}]


@dataclass
class Result:
    server: str
    start_s: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    lat: dict[str, list[float]] = field(default_factory=dict)
    tps: dict[str, list[float]] = field(default_factory=dict)
    api_cpu_ms: list[float] = field(default_factory=list)  # API-process CPU per request


def argv_for(kind: str, model: Path, port: int) -> list[str]:
    entry = ["-m", "serving"] if kind == "serving" else ["-m", "vllm.entrypoints.openai.api_server"]
    return [
        sys.executable,
        *entry,
        "--model",
        str(model),
        "--served-model-name",
        "tiny",
        "--port",
        str(port),
        *COMMON,
    ]


def tree_rss_mib(pid: int) -> float:
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def api_cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def sequential(
    client: Any, url: str, path: str, *, body: dict[str, Any], n: int, tokens: int
) -> tuple[list[float], float]:
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter()
        r = await client.post(url + path, json=body, timeout=60)
        r.raise_for_status()
        lat.append(time.perf_counter() - s)
    return lat, n * tokens / (time.perf_counter() - t0)


async def concurrent(
    client: Any, url: str, body: dict[str, Any], *, n: int, conc: int, tokens: int
) -> float:
    sem = asyncio.Semaphore(conc)

    async def one() -> None:
        async with sem:
            r = await client.post(url + "/v1/chat/completions", json=body, timeout=120)
            r.raise_for_status()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n * tokens / (time.perf_counter() - t0)


async def measure(
    server: Server, kind: str, res: Result, *, n: int, tokens: int, conc: int
) -> None:
    import httpx

    oai: dict[str, Any] = {
        "model": "tiny",
        "messages": MESSAGES,
        "max_tokens": tokens,
        "min_tokens": tokens,
        "temperature": 0,
    }
    chat: dict[str, Any] = {
        "messages": MESSAGES,
        "generate_kwargs": {"do_sample": False, "max_new_tokens": tokens, "min_new_tokens": tokens},
    }
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=conc + 2)) as client:
        for _ in range(10):  # warm-up
            (
                await client.post(server.url + "/v1/chat/completions", json=oai, timeout=60)
            ).raise_for_status()
        runs = [("/v1/chat/completions", oai)]
        if kind == "serving":
            runs.append(("/chat", chat))
        for path, body in runs:
            lat, tps = await sequential(client, server.url, path, body=body, n=n, tokens=tokens)
            res.lat.setdefault(path, []).extend(lat)
            res.tps.setdefault(path, []).append(tps)
        # CPU time of the API process (where the launcher's code runs) per request: unlike
        # latency, it barely moves when other work shares the machine.
        cpu0 = api_cpu_s(server.proc.pid)
        tps = await concurrent(client, server.url, oai, n=n, conc=conc, tokens=tokens)
        res.api_cpu_ms.append((api_cpu_s(server.proc.pid) - cpu0) / n * 1e3)
        res.tps.setdefault(f"c={conc}", []).append(tps)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--requests", type=int, default=100, help="per endpoint per round")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args()
    tiny = build()
    logs = Path("/tmp") / "kaito-bench-serving"
    logs.mkdir(exist_ok=True)
    results = {k: Result(k) for k in ("serving", "vllm")}
    for rnd in range(a.rounds):
        for kind in ("serving", "vllm") if rnd % 2 == 0 else ("vllm", "serving"):
            port = free_port()
            t0 = time.perf_counter()
            server = start_server(
                argv_for(kind, tiny.model, port), port, logs / f"{kind}-{rnd}.log"
            )
            results[kind].start_s.append(time.perf_counter() - t0)
            try:
                results[kind].rss_mib.append(tree_rss_mib(server.proc.pid))
                asyncio.run(
                    measure(
                        server,
                        kind,
                        results[kind],
                        n=a.requests,
                        tokens=a.tokens,
                        conc=a.concurrency,
                    )
                )
            finally:
                server.stop()
            print(f"round {rnd + 1}: {kind} done", file=sys.stderr, flush=True)

    rows = []
    ours, bare = results["serving"], results["vllm"]
    print(
        f"\ntiny Llama (float32, CPU), {a.tokens} generated tokens per request, {a.rounds} rounds"
    )
    print(f"{'metric':44} {'python -m serving':>18} {'bare vLLM':>12} {'overhead':>9}")

    def row(name: str, mine: float, theirs: float | None, lower_is_better: bool = True) -> None:
        if theirs is None:
            print(f"{name:44} {mine:18.2f} {'-':>12} {'-':>9}")
        else:
            ovh = (mine / theirs - 1) * 100 if lower_is_better else (theirs / mine - 1) * 100
            print(f"{name:44} {mine:18.2f} {theirs:12.2f} {ovh:8.1f}%")
        rows.append({"metric": name, "serving": mine, "vllm": theirs})

    path = "/v1/chat/completions"
    row(
        "start to /health 200 (s, median)",
        statistics.median(ours.start_s),
        statistics.median(bare.start_s),
    )
    row(
        "PSS of process tree after load (MiB)",
        statistics.median(ours.rss_mib),
        statistics.median(bare.rss_mib),
    )
    row(f"{path} p50 latency (ms)", pct(ours.lat[path], 0.5) * 1e3, pct(bare.lat[path], 0.5) * 1e3)
    row(
        f"{path} p99 latency (ms)", pct(ours.lat[path], 0.99) * 1e3, pct(bare.lat[path], 0.99) * 1e3
    )
    row(
        f"{path} tokens/s (sequential)",
        statistics.median(ours.tps[path]),
        statistics.median(bare.tps[path]),
        False,
    )
    key = f"c={a.concurrency}"
    row(
        f"{path} tokens/s ({key})",
        statistics.median(ours.tps[key]),
        statistics.median(bare.tps[key]),
        False,
    )
    row(
        f"API-process CPU per request, {key} (ms)",
        statistics.median(ours.api_cpu_ms),
        statistics.median(bare.api_cpu_ms),
    )
    row(
        "/chat p50 latency (ms) vs bare chat/completions",
        pct(ours.lat["/chat"], 0.5) * 1e3,
        pct(bare.lat[path], 0.5) * 1e3,
    )
    row(
        "/chat p99 latency (ms) vs bare chat/completions",
        pct(ours.lat["/chat"], 0.99) * 1e3,
        pct(bare.lat[path], 0.99) * 1e3,
    )
    row(
        "/chat tokens/s (sequential)",
        statistics.median(ours.tps["/chat"]),
        statistics.median(bare.tps[path]),
        False,
    )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
