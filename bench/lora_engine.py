"""The mixed-batch LoRA fix's cost inside vLLM's engine, without the HTTP server.

``bench/serving.py`` measures whole servers, one fresh server per round, so its ratios carry the
spread between two starts of the same server. This builds vLLM's engine in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``; the CPU worker then runs here too) with the tiny Llama and
both test adapters (``max_loras 2``, rank 8), sequential requests only, and runs the variants in
alternating child processes (the fix patches vLLM at import, so one process cannot hold both):

- ``fix``: the launcher's zero slot (``serving.lora_fix.register()`` before vLLM builds the model);
- ``nofix``: vLLM as it ships.

Each child times ``--requests`` sequential base requests and as many adapter requests (greedy,
exactly ``--tokens`` tokens), then, with ``--profile``, runs a few more under ``torch.profiler``
and reports the operators' self CPU time per request. The summary gives per-variant medians of the
children's p50s and the ratio fix ÷ nofix; with ``--profile``, the operators whose time differs
most between the variants.

Run with the serving venv: ``$(hack/serving-env)/bin/python bench/lora_engine.py [--pairs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("fix", "nofix")
KINDS = ("base", "adapter")
MESSAGES = [{"role": "user", "content": "hello world, the quick brown fox"}]


def child(variant: str, requests: int, tokens: int, profiled: int) -> dict[str, Any]:
    """Build the engine with ``variant`` and measure it; runs in a process of its own."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    from serving import lora_fix

    if variant == "fix":
        lora_fix.register()
    import torch
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from tests.serving.tiny_model import build

    tiny = build()
    llm = LLM(
        model=str(tiny.model),
        dtype="float32",
        max_model_len=256,
        enforce_eager=True,
        enable_lora=True,
        max_lora_rank=8,
        max_loras=2,
    )
    adapters = [
        LoRARequest(name, i + 1, str(tiny.adapter(name)))
        for i, name in enumerate(("adapter-a", "adapter-b"))
    ]
    params = SamplingParams(temperature=0, max_tokens=tokens, min_tokens=tokens)
    lora: dict[str, LoRARequest | None] = {"base": None, "adapter": adapters[0]}

    def one(kind: str) -> tuple[float, float]:
        """Wall and CPU seconds (all of this process's threads) of one request."""
        s, c = time.perf_counter(), time.process_time()
        llm.chat(MESSAGES, params, lora_request=lora[kind], use_tqdm=False)
        return time.perf_counter() - s, time.process_time() - c

    for _ in range(3):  # warm-up; loads both adapters into their slots
        for req in (None, *adapters):
            llm.chat(MESSAGES, params, lora_request=req, use_tqdm=False)
    stacked = [m.lora_a_stacked for m in _lora_modules(llm)]
    slots = [(s[0] if isinstance(s, (tuple, list)) else s).shape[0] for s in stacked]
    out: dict[str, Any] = {"variant": variant, "slots": sorted(set(slots))}
    for kind in KINDS:
        wall, cpu = zip(*(one(kind) for _ in range(requests)), strict=True)
        out[kind] = {
            "p50_ms": statistics.median(wall) * 1e3,
            "min_ms": min(wall) * 1e3,
            "cpu_p50_ms": statistics.median(cpu) * 1e3,
        }
    if profiled:
        from torch.profiler import ProfilerActivity, profile

        for kind in KINDS:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(profiled):
                    one(kind)
            out[f"ops {kind}"] = {
                e.key: {"self_us": e.self_cpu_time_total / profiled, "calls": e.count / profiled}
                for e in prof.key_averages()
            }
    del torch
    return out


def _lora_modules(llm: Any) -> list[Any]:
    """The model's LoRA layers (best effort: vLLM's internals move between releases)."""
    try:
        engine = llm.llm_engine.engine_core.engine_core
        runner = engine.model_executor.driver_worker.worker.model_runner
        manager = runner.lora_manager._adapter_manager
        return [m for m in manager.modules.values() if hasattr(m, "lora_a_stacked")]
    except AttributeError:
        return []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=4, help="child processes per variant")
    p.add_argument("--requests", type=int, default=60, help="sequential requests per kind")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--profile", type=int, default=0, help="requests per kind under the profiler")
    p.add_argument("--json", type=Path, help="also write every child's figures here")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(a.child, a.requests, a.tokens, a.profile)), flush=True)
        return
    results: list[dict[str, Any]] = []
    for pair in range(a.pairs):
        for variant in VARIANTS if pair % 2 == 0 else VARIANTS[::-1]:
            argv = [sys.executable, __file__, "--child", variant, "--requests", str(a.requests)]
            argv += ["--tokens", str(a.tokens), "--profile", str(a.profile)]
            proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{variant} child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            r = json.loads(line.removeprefix("RESULT "))
            r["pair"] = pair
            results.append(r)
            if a.json:  # after every child, so an interrupted run keeps what it measured
                a.json.write_text(json.dumps(results, indent=2))
            cells = "  ".join(
                f"{k} p50 {r[k]['p50_ms']:.1f} ms (CPU {r[k]['cpu_p50_ms']:.1f})" for k in KINDS
            )
            print(f"pair {pair + 1} {variant:5} slots {r['slots']}  {cells}", flush=True)
    for kind in KINDS:
        for metric in ("p50_ms", "cpu_p50_ms"):
            _ratios(results, kind, metric, a.pairs)
        if a.profile:
            _op_diff(results, f"ops {kind}")


def _ratios(results: list[dict[str, Any]], kind: str, metric: str, pairs: int) -> None:
    """Print per-variant medians of ``metric`` and the per-pair ratios fix ÷ nofix."""
    med = {
        v: statistics.median(r[kind][metric] for r in results if r["variant"] == v)
        for v in VARIANTS
    }
    by = {(r["pair"], r["variant"]): r[kind][metric] for r in results}
    ratios = [by[i, "fix"] / by[i, "nofix"] for i in range(pairs)]
    print(
        f"{kind} {metric}: fix {med['fix']:.1f} ms, nofix {med['nofix']:.1f} ms; per-pair "
        f"fix ÷ nofix {' '.join(f'{x:.3f}' for x in ratios)} (median "
        f"{statistics.median(ratios):.3f}, geometric mean {statistics.geometric_mean(ratios):.3f})"
    )


def _op_diff(results: list[dict[str, Any]], key: str, top: int = 12) -> None:
    """Print the operators whose median self time per request differs most between variants."""
    names = {n for r in results for n in r[key]}
    med: dict[str, dict[str, float]] = {}
    for v in VARIANTS:
        rs = [r[key] for r in results if r["variant"] == v]
        med[v] = {n: statistics.median(r.get(n, {}).get("self_us", 0.0) for r in rs) for n in names}
    total = {v: sum(med[v].values()) for v in VARIANTS}
    print(f"  {key}: self CPU per request fix {total['fix']:.0f} µs, nofix {total['nofix']:.0f} µs")
    for n in sorted(names, key=lambda n: -abs(med["fix"][n] - med["nofix"][n]))[:top]:
        f, o = med["fix"][n], med["nofix"][n]
        print(f"    {n[:48]:48} fix {f:9.0f} µs  nofix {o:9.0f} µs  diff {f - o:+8.0f} µs")


if __name__ == "__main__":
    main()
