"""Launcher overhead: ``python -m serving`` versus bare vLLM, same flags, same run, LoRA off and on.

Two configurations of the tiny model: LoRA off, and LoRA on with two adapters loaded
(``--enable-lora --lora-modules ... --max-loras 2``). Each round starts, for each configuration,
a fresh launcher and a fresh bare vLLM with the same flags (one after the other, so their start-up
times do not compete; which goes first alternates between rounds). Both then serve the same
traffic phases, in blocks that alternate between the two servers (``--blocks`` per phase), so a
change in the machine's load falls on both alike; only the server whose block it is has work:

- LoRA off: base model sequential and at ``--concurrency``; ``/chat`` sequential (the launcher's
  route; bare vLLM answers the same requests on ``/v1/chat/completions``);
- LoRA on: base and adapter traffic, each sequential and concurrent, and a concurrent mix
  (base, adapter-a, base, adapter-b, ...) whose batches hold base and adapter rows together —
  the case the launcher's mixed-batch LoRA fix changes.

Every request generates exactly ``--tokens`` tokens (greedy, ``min_tokens``), so both servers do
the same work. Per phase: p50 and p99 latency, tokens/s, and CPU time per request of the API
process and of the whole process tree (API server, engine core, worker). CPU time moves less than
wall time when other work shares the machine; read both. Each round prints its figures and the
launcher ÷ bare ratios; the summary cancels the start order (the server started first was the
slower in every round here, whichever it was): the geometric mean of the median ratio of the
launcher-first rounds and that of the bare-first rounds; run an even number. With ``--apart``
each server runs alone, serving every phase and stopping before the other starts: on a 2-core
machine an idle vLLM next to the one measured still takes CPU. Ratios are costs:
latency and CPU launcher ÷ bare, tokens/s bare ÷ launcher, so above 1 means the launcher is slower.

``--versus fix-off`` measures the launcher against itself with its mixed-batch LoRA fix turned off
(``KAITO_SERVING_LORA_FIX=0``) instead of bare vLLM; ``--versus launcher-again`` against a
second, identical launcher: the A/A control, run the same way, whose ratios show how far two
fresh starts of the same server differ here, the noise any launcher ÷ bare ratio sits in.
``--phase NAME`` (repeatable) runs only those phases.

Run with the serving venv: ``$(hack/serving-env)/bin/python bench/serving.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.lora_fix import DISABLE_ENV  # noqa: E402
from tests.serving.helpers import Server, free_port, start_server  # noqa: E402
from tests.serving.tiny_model import TinyModel, build  # noqa: E402

BASE = "tiny"
ADAPTERS = ("adapter-a", "adapter-b")
COMMON = ["--dtype", "float32", "--max-model-len", "256", "--enforce-eager", "--host", "127.0.0.1"]
MESSAGES = [{"role": "user", "content": "hello world, the quick brown fox"}]
KINDS = ("launcher", "bare")
FIX_OFF = "fix-off"  # the launcher with its mixed-batch LoRA fix turned off, instead of bare vLLM
AGAIN = "launcher-again"  # a second, identical launcher: the A/A control, whose ratios are noise
METRICS = ("p50_ms", "p99_ms", "tok_s", "api_cpu_ms", "tree_cpu_ms")
HIGHER_IS_BETTER = {"tok_s"}
Ratios = dict[str, dict[str, float]]  # phase -> metric -> launcher ÷ bare cost


@dataclass(frozen=True)
class Phase:
    """A traffic pattern; ``models`` take turns. ``path`` is the launcher's route, ``bare_path``
    bare vLLM's (the same unless the launcher's route is its own)."""

    name: str
    models: tuple[str, ...]
    concurrent: bool
    path: str = "/v1/chat/completions"
    bare_path: str = "/v1/chat/completions"


@dataclass(frozen=True)
class Config:
    name: str
    flags: tuple[str, ...]
    phases: tuple[Phase, ...]


def configs(tiny: TinyModel) -> tuple[Config, ...]:
    lora = (
        "--enable-lora",
        "--max-lora-rank",
        "8",
        "--max-loras",
        str(len(ADAPTERS)),
        "--lora-modules",
        *(f"{name}={tiny.adapter(name)}" for name in ADAPTERS),
    )
    return (
        Config(
            "LoRA off",
            (),
            (
                Phase("base seq", (BASE,), False),
                Phase("base c", (BASE,), True),
                Phase("/chat seq", (BASE,), False, "/chat"),
            ),
        ),
        Config(
            "LoRA on",
            lora,
            (
                Phase("base seq", (BASE,), False),
                Phase("adapter seq", (ADAPTERS[0],), False),
                Phase("base c", (BASE,), True),
                Phase("adapter c", ADAPTERS, True),
                Phase("mixed c", (BASE, ADAPTERS[0], BASE, ADAPTERS[1]), True),
            ),
        ),
    )


@dataclass
class Run:
    """One server's figures: phase name -> metric -> value."""

    start_s: float
    pss_mib: float
    phases: dict[str, dict[str, float]] = field(default_factory=dict)


def argv_for(kind: str, model: Path, port: int, flags: tuple[str, ...]) -> list[str]:
    module = "vllm.entrypoints.openai.api_server" if kind == "bare" else "serving"
    return [
        sys.executable,
        "-m",
        module,
        "--model",
        str(model),
        "--served-model-name",
        BASE,
        "--port",
        str(port),
        *COMMON,
        *flags,
    ]


def process_tree(pid: int) -> list[Any]:
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_pss_mib(pid: int) -> float:
    import psutil

    total = 0
    for p in process_tree(pid):
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def cpu_s(procs: list[Any]) -> float:
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def body(path: str, model: str, tokens: int) -> dict[str, Any]:
    if path == "/chat":
        kwargs = {"do_sample": False, "max_new_tokens": tokens, "min_new_tokens": tokens}
        return {"model": model, "messages": MESSAGES, "generate_kwargs": kwargs}
    return {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": tokens,
        "min_tokens": tokens,
        "temperature": 0,
    }


@dataclass
class Tally:
    """One server's accumulated figures for one phase, over its blocks."""

    lat: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    api_cpu_s: float = 0.0
    tree_cpu_s: float = 0.0

    def figures(self, tokens: int) -> dict[str, float]:
        n = len(self.lat)
        return {
            "p50_ms": pct(self.lat, 0.50) * 1e3,
            "p99_ms": pct(self.lat, 0.99) * 1e3,
            "tok_s": n * tokens / self.wall_s,
            "api_cpu_ms": self.api_cpu_s / n * 1e3,
            "tree_cpu_ms": self.tree_cpu_s / n * 1e3,
        }


@dataclass
class Target:
    """A running server under measurement."""

    kind: str
    server: Server
    procs: list[Any]
    run: Run


async def run_block(
    client: Any, target: Target, path: str, bodies: list[dict[str, Any]], *, conc: int, tally: Tally
) -> None:
    sem = asyncio.Semaphore(conc)

    async def one(b: dict[str, Any]) -> None:
        async with sem:
            s = time.perf_counter()
            r = await client.post(target.server.url + path, json=b, timeout=300)
            r.raise_for_status()
            tally.lat.append(time.perf_counter() - s)

    api0, tree0 = cpu_s(target.procs[:1]), cpu_s(target.procs)
    t0 = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    tally.wall_s += time.perf_counter() - t0
    tally.api_cpu_s += cpu_s(target.procs[:1]) - api0
    tally.tree_cpu_s += cpu_s(target.procs) - tree0


async def measure(targets: list[Target], cfg: Config, a: argparse.Namespace) -> None:
    """Warm both servers up, then run every phase in blocks alternating between them."""
    import httpx

    limits = httpx.Limits(max_connections=2 * a.concurrency + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        models = sorted({m for p in cfg.phases for m in p.models})
        for target in targets:
            for model in models * 5:  # warm-up; loads every adapter into its slot
                path = "/v1/chat/completions"
                r = await client.post(target.server.url + path, json=body(path, model, 8))
                r.raise_for_status()
        for phase in cfg.phases:
            n = a.concurrent_requests if phase.concurrent else a.requests
            per_block = max(1, n // a.blocks)
            conc = a.concurrency if phase.concurrent else 1
            tallies = {t.kind: Tally() for t in targets}
            for block in range(a.blocks):
                start = block * per_block
                turn = [phase.models[(start + i) % len(phase.models)] for i in range(per_block)]
                for target in targets if block % 2 == 0 else targets[::-1]:
                    path = phase.bare_path if target.kind == "bare" else phase.path
                    bodies = [body(path, m, a.tokens) for m in turn]
                    tally = tallies[target.kind]
                    await run_block(client, target, path, bodies, conc=conc, tally=tally)
            for target in targets:
                target.run.phases[phase.name] = tallies[target.kind].figures(a.tokens)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def cost_ratio(metric: str, launcher: float, bare: float) -> float:
    if metric in HIGHER_IS_BETTER:
        return bare / launcher
    return launcher / bare


def ratios(cfg: Config, ours: Run, bare: Run) -> Ratios:
    """``bare`` is the reference run: bare vLLM, or the launcher with the fix off."""
    out: Ratios = {}
    for phase in cfg.phases:
        theirs = bare.phases[phase.name]
        mine = ours.phases[phase.name]
        out[phase.name] = {m: cost_ratio(m, mine[m], theirs[m]) for m in METRICS}
    out["start-up"] = {"start_s": ours.start_s / bare.start_s, "pss": ours.pss_mib / bare.pss_mib}
    return out


def print_round(rnd: int, cfg: Config, runs: dict[str, Run], other: str) -> Ratios:
    ours, bare = runs["launcher"], runs[other]
    r = ratios(cfg, ours, bare)
    print(
        f"\nround {rnd + 1}, {cfg.name}: start {ours.start_s:.1f} s vs {bare.start_s:.1f} s, "
        f"PSS {ours.pss_mib:.0f} vs {bare.pss_mib:.0f} MiB",
        flush=True,
    )
    print(f"  {'phase':12} {'metric':12} {'launcher':>10} {other:>10} {'ratio':>7}")
    for phase in cfg.phases:
        mine, theirs = ours.phases[phase.name], bare.phases[phase.name]
        for m in METRICS:
            print(
                f"  {phase.name:12} {m:12} {mine[m]:10.2f} {theirs[m]:10.2f} "
                f"{r[phase.name][m]:7.3f}",
                flush=True,
            )
    return r


def balanced(values: list[float]) -> float:
    """The per-round ratios with the start order cancelled: the geometric mean of the median
    of the rounds the launcher started first (even indices) and of those bare vLLM did.

    Measured here: the server started first was slower in every round, whichever it was, so
    a plain median over an odd number of rounds leans toward one side.
    """
    first, second = values[0::2], values[1::2]
    if not second:
        return statistics.median(first)
    return float((statistics.median(first) * statistics.median(second)) ** 0.5)


def summary(cfgs: tuple[Config, ...], per_round: dict[str, list[Ratios]], other: str) -> None:
    rounds = len(next(iter(per_round.values())))
    print(
        f"\n{rounds} rounds, order-balanced cost ratios (geometric mean of the launcher-first "
        f"and the {other}-first rounds' medians), launcher ÷ {other} "
        f"(tokens/s: {other} ÷ launcher; above 1 = launcher slower)"
    )
    head = "".join(f"{m:>12}" for m in METRICS)
    print(f"{'configuration':10} {'phase':12}{head}")
    for cfg in cfgs:
        rs = per_round[cfg.name]
        for phase in cfg.phases:
            cells = "".join(f"{balanced([r[phase.name][m] for r in rs]):12.3f}" for m in METRICS)
            print(f"{cfg.name:10} {phase.name:12}{cells}")
        start = balanced([r["start-up"]["start_s"] for r in rs])
        pss = balanced([r["start-up"]["pss"] for r in rs])
        print(f"{cfg.name:10} start-up: time to /health {start:.3f}, PSS after load {pss:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--requests", type=int, default=100, help="per sequential phase")
    p.add_argument("--concurrent-requests", type=int, default=320, help="per concurrent phase")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--blocks", type=int, default=4, help="alternating blocks per phase")
    p.add_argument("--start-timeout", type=float, default=900, help="seconds to /health 200")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--only", choices=["off", "on"], help="run one configuration")
    p.add_argument(
        "--versus",
        choices=["bare", FIX_OFF, AGAIN],
        default="bare",
        help=f"what the launcher is measured against: bare vLLM, ({FIX_OFF}) the launcher "
        f"itself with its mixed-batch LoRA fix turned off (KAITO_SERVING_LORA_FIX=0), or "
        f"({AGAIN}) the same launcher started again, the A/A control",
    )
    p.add_argument(
        "--phase",
        action="append",
        dest="phases",
        metavar="NAME",
        help="run only this phase (repeatable; e.g. 'base seq')",
    )
    p.add_argument("--json", type=Path, help="also write every round's figures here")
    p.add_argument(
        "--apart",
        action="store_true",
        help="one server at a time: each serves every phase alone, then stops (no idle "
        "second server sharing the CPUs); the order still alternates between rounds",
    )
    a = p.parse_args()
    if a.rounds < 2:
        p.error("--rounds must be at least 2 (the order of the servers alternates)")
    tiny = build()
    cfgs = configs(tiny)
    if a.only:
        cfgs = tuple(c for c in cfgs if c.name == f"LoRA {a.only}")
    if a.phases:
        known = {ph.name for c in cfgs for ph in c.phases}
        if unknown := set(a.phases) - known:
            p.error(f"unknown phase(s) {sorted(unknown)}; known: {sorted(known)}")
        cfgs = tuple(
            replace(c, phases=tuple(ph for ph in c.phases if ph.name in a.phases)) for c in cfgs
        )
        cfgs = tuple(c for c in cfgs if c.phases)
    kinds = (KINDS[0], a.versus)
    env = {"launcher": {}, "bare": {}, FIX_OFF: {DISABLE_ENV: "0"}, AGAIN: {}}
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / "kaito-bench-serving"
    logs.mkdir(exist_ok=True)
    print(
        f"tiny Llama, float32, CPU; {a.tokens} tokens a request; {a.requests} sequential, "
        f"{a.concurrent_requests} concurrent (at {a.concurrency}) requests a phase; "
        f"load average at start {os.getloadavg()[0]:.2f}; launcher versus {a.versus}",
        flush=True,
    )
    per_round: dict[str, list[Ratios]] = {c.name: [] for c in cfgs}
    raw: list[dict[str, Any]] = []
    for rnd in range(a.rounds):
        for cfg in cfgs:
            order = kinds if rnd % 2 == 0 else kinds[::-1]
            runs: dict[str, Run] = {}
            for group in [[k] for k in order] if a.apart else [list(order)]:
                targets: list[Target] = []
                try:
                    for kind in group:
                        port = free_port()
                        log = logs / f"{kind}-{cfg.name.replace(' ', '-')}-{rnd}.log"
                        t0 = time.perf_counter()
                        argv = argv_for(kind, tiny.model, port, cfg.flags)
                        server = start_server(
                            argv, port, log, env=env[kind], timeout=a.start_timeout
                        )
                        run = Run(time.perf_counter() - t0, tree_pss_mib(server.proc.pid))
                        targets.append(Target(kind, server, process_tree(server.proc.pid), run))
                    asyncio.run(measure(targets, cfg, a))
                finally:
                    for target in targets:
                        target.server.stop()
                runs.update({t.kind: t.run for t in targets})
            per_round[cfg.name].append(print_round(rnd, cfg, runs, a.versus))
            raw.append(
                {
                    "round": rnd + 1,
                    "config": cfg.name,
                    "load_avg": os.getloadavg()[0],
                    **{k: vars(v) for k, v in runs.items()},
                }
            )
    summary(cfgs, per_round, a.versus)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if a.json:
        a.json.write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
