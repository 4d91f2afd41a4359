"""``python -m serving``: vLLM's OpenAI server with Kaito's routes, in one process and event loop.

The sequence mirrors vLLM's own ``run_server`` (bind the port, start the engine, build the app,
serve), with three additions: the port answers 503 while the engine loads, adapters found under
``--adapter-dir`` are prepared (strength) and registered, and Kaito's routes join vLLM's app.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from argparse import Namespace
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving import adapters as adapter_prep
from serving import lora_fix
from serving.app import AdapterInfo, KaitoState, guard_middleware, install_routes, loading_app
from serving.options import (
    LauncherOptions,
    OptionsError,
    adapter_rank,
    discover_adapters,
    split_args,
    strengths_from_env,
)
from serving.weights import check_model_source, report_termination

log = logging.getLogger("serving")
DEFAULT_PORT = 5000
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts
MAX_AUTO_LORAS = 4
CPU_KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
DEFAULT_CPU_KV_CACHE_GIB = 1


def default_cpu_kv_cache() -> None:
    """On a CPU, give vLLM an explicit KV cache unless the spec already does.

    Without ``VLLM_CPU_KVCACHE_SPACE`` vLLM's CPU worker claims ``--gpu-memory-utilization``
    of the whole machine's memory for its KV cache, which fails or starves the node when a
    GPU preset's spec (utilization 0.84) runs on a CPU node. The operator sets the variable
    for CPU instance types; this covers everything else.
    """
    from vllm.platforms import current_platform

    if current_platform.is_cpu() and not os.environ.get(CPU_KV_CACHE_ENV):
        os.environ[CPU_KV_CACHE_ENV] = str(DEFAULT_CPU_KV_CACHE_GIB)
        log.info("no GPU: %s=%d GiB for the KV cache", CPU_KV_CACHE_ENV, DEFAULT_CPU_KV_CACHE_GIB)


def parse_vllm_args(argv: Sequence[str]) -> Namespace:
    """vLLM's own serve parser, with Kaito's default port."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="python -m serving"))
    parser.set_defaults(port=DEFAULT_PORT)
    args: Namespace = parser.parse_args(list(argv))
    return args


def configure_adapters(args: Namespace, opts: LauncherOptions, argv: Sequence[str]) -> KaitoState:
    """Register every adapter (flags and ``--adapter-dir``) with its strength; size LoRA limits."""
    from vllm.entrypoints.openai.models.protocol import LoRAModulePath

    sources: dict[str, Path] = {m.name: Path(m.path) for m in (args.lora_modules or [])}
    for name, path in discover_adapters(opts.adapter_dir).items():
        sources.setdefault(name, path)
    strengths = strengths_from_env(list(sources)) | opts.strengths
    unknown = sorted(set(opts.strengths) - set(sources))
    if unknown:
        raise OptionsError(
            f"--adapter-strength names {unknown}, which are not served adapters "
            f"(adapters: {sorted(sources) or 'none'}; they come from --lora-modules and "
            f"subdirectories of --adapter-dir {opts.adapter_dir})"
        )
    base = (args.served_model_name or [args.model])[0]
    prepared_root = opts.prepared_dir or adapter_prep.default_prepared_root()
    state = KaitoState(base_model=base, default_chat_model=base, prepared_root=prepared_root)
    modules = []
    for name, src in sources.items():
        if not (src / "adapter_config.json").is_file():
            raise OptionsError(f"adapter {name!r}: {src} has no adapter_config.json")
        strength = strengths.get(name, 1.0)
        try:
            served = adapter_prep.prepare(src, strength, prepared_root)
        except adapter_prep.AdapterError as e:
            raise OptionsError(f"adapter {name!r}: {e}") from None
        modules.append(LoRAModulePath(name=name, path=str(served)))
        state.adapters[name] = AdapterInfo(name, str(src), str(served), strength, "startup")
    if not modules:
        return state
    args.lora_modules = modules
    args.enable_lora = True
    rank = max(adapter_rank(Path(m.path)) for m in modules)
    if rank > args.max_lora_rank:
        fit = next((r for r in LORA_RANKS if r >= rank), rank)
        log.info(
            "raising --max-lora-rank from %s to %s to fit the adapters", args.max_lora_rank, fit
        )
        args.max_lora_rank = fit
    if not any(a == "--max-loras" or a.startswith("--max-loras=") for a in argv):
        args.max_loras = max(args.max_loras, min(len(modules), MAX_AUTO_LORAS))
    if len(modules) == 1:
        state.default_chat_model = modules[0].name  # the old server merged adapters into /chat
    return state


async def serve(args: Namespace, opts: LauncherOptions, state: KaitoState) -> None:
    import uvicorn
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import propagate_flash_late_interaction
    from vllm.entrypoints.launchers.launcher import NoSignalServer, serve_http, setup_server
    from vllm.entrypoints.launchers.utils.server_utils import get_uvicorn_log_config
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    listen_address, sock = setup_server(args, reuse_port=False)
    # Answer 503 on the bound port while the engine loads. uvicorn closes the sockets it serves,
    # so the loading server gets a duplicate and the real server keeps the original.
    loading = NoSignalServer(
        uvicorn.Config(loading_app, lifespan="off", log_level="warning", access_log=False)
    )
    loading_task = asyncio.create_task(loading.serve(sockets=[sock.dup()]))

    async def stop_loading() -> None:
        loading.should_exit = True
        await loading_task

    engine: Any = None
    try:
        engine_args = AsyncEngineArgs.from_cli_args(args)
        propagate_flash_late_interaction(args, engine_args)
        usage = UsageContext.OPENAI_API_SERVER
        vllm_config = await asyncio.to_thread(engine_args.create_engine_config, usage_context=usage)
        # Engine start-up blocks for seconds (it spawns and handshakes with the engine core);
        # a worker thread keeps the loading server answering meanwhile.
        engine = await asyncio.to_thread(
            AsyncLLM.from_vllm_config,
            vllm_config=vllm_config,
            usage_context=usage,
            enable_log_requests=engine_args.enable_log_requests,
            aggregate_engine_logging=engine_args.aggregate_engine_logging,
            disable_log_stats=engine_args.disable_log_stats,
        )
        await engine.reset_mm_cache()
        supported = await engine.get_supported_tasks()
        guard = guard_middleware(opts.max_queue_depth, opts.max_request_bytes)
        args.middleware = [*(args.middleware or []), guard]
        app = build_app(args, supported, engine.model_config)
        install_routes(app, state)
        await init_app_state(engine, app.state, args, supported)
        await stop_loading()
        kwargs: dict[str, Any] = {}
        log_config = get_uvicorn_log_config(args)
        if log_config is not None:
            kwargs["log_config"] = log_config
        log.info("serving on %s (adapters: %s)", listen_address, sorted(state.adapters) or "none")
        shutdown = await serve_http(
            app,
            sock=sock,
            enable_ssl_refresh=args.enable_ssl_refresh,
            host=args.host,
            port=args.port,
            log_level=args.uvicorn_log_level,
            access_log=not args.disable_uvicorn_access_log,
            ssl_keyfile=args.ssl_keyfile,
            ssl_certfile=args.ssl_certfile,
            ssl_ca_certs=args.ssl_ca_certs,
            ssl_cert_reqs=args.ssl_cert_reqs,
            ssl_ciphers=args.ssl_ciphers,
            h11_max_incomplete_event_size=args.h11_max_incomplete_event_size,
            h11_max_header_count=args.h11_max_header_count,
            **kwargs,
        )
        await shutdown
    finally:
        if not loading_task.done():
            await stop_loading()
        if engine is not None:
            engine.shutdown(timeout=engine.vllm_config.shutdown_timeout)
        sock.close()


def early_model_check(vllm_argv: Sequence[str]) -> bool:
    """Check ``--model`` before importing vLLM (a minute on a busy CPU); False if not given."""
    quick = argparse.ArgumentParser(add_help=False)
    quick.add_argument("--model")
    quick.add_argument("--revision")
    known, _ = quick.parse_known_args(list(vllm_argv))
    if not known.model:
        return False
    check_model_source(known.model, known.revision)
    return True


def _log_to_stderr(logger: logging.Logger) -> None:
    """Our own INFO lines (serving on ..., client went away, ...) on stderr.

    vLLM sets up its own loggers and leaves the root logger at WARNING, so without this the
    launcher's INFO messages were silently dropped.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    try:
        opts, vllm_argv = split_args(argv)
        checked = early_model_check(vllm_argv)  # before vLLM's imports, which take a while
        lora_fix.install()
        from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
        from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
        from vllm.logger import configure_logging_from_args

        cli_env_setup()
        default_cpu_kv_cache()
        args = parse_vllm_args(vllm_argv)
        configure_logging_from_args(args)
        _log_to_stderr(log)
        if not checked:
            check_model_source(args.model, getattr(args, "revision", None))
        state = configure_adapters(args, opts, vllm_argv)
        validate_parsed_serve_args(args)
    except OptionsError as e:
        print(f"serving: {e}", file=sys.stderr)
        report_termination(str(e))
        raise SystemExit(2) from None

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt("terminated")

    signal.signal(signal.SIGTERM, interrupt)  # until serve_http installs its own handlers
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args, opts, state))
