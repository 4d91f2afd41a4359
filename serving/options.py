"""The launcher's own flags, the config file's ``vllm:`` section, and adapter discovery.

Everything here is plain Python (no vLLM import) so it can be checked quickly and in isolation.
Launcher flags are taken out of argv; every other argument is passed to vLLM's own parser
untouched. The config file's ``vllm:`` entries are appended after the command-line flags, so they
win (as they do upstream, e.g. ``max-model-len`` set by the user overrides the controller's value).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_ADAPTER_DIR = Path("/mnt/adapter")
DEFAULT_CONFIG = Path("/mnt/config/inference_config.yaml")
# Keys of upstream's inference_config.yaml that have no meaning for this launcher.
IGNORED_CONFIG_KEYS = frozenset({"max_probe_steps", "kv_cache_cpu_memory_utilization"})


class OptionsError(ValueError):
    """A launcher flag, config file or adapter directory is wrong; the message says the fix."""


@dataclass
class LauncherOptions:
    """What the launcher consumes itself; vLLM never sees these flags."""

    adapter_dir: Path = DEFAULT_ADAPTER_DIR
    strengths: dict[str, float] = field(default_factory=dict)
    config_path: Path | None = None
    max_queue_depth: int = 0  # 0: no limit of our own
    max_request_bytes: int = 16 * 2**20  # request bodies above get 413; 0: no limit
    prepared_dir: Path | None = None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--adapter-strength", action="append", default=[], metavar="NAME=FLOAT")
    p.add_argument("--adapter-dir", type=Path, default=DEFAULT_ADAPTER_DIR)
    p.add_argument("--config", "--kaito-config-file", dest="config", type=Path, default=None)
    p.add_argument("--max-queue-depth", type=int, default=0)
    p.add_argument("--max-request-bytes", type=int, default=LauncherOptions.max_request_bytes)
    p.add_argument("--prepared-adapter-dir", dest="prepared_dir", type=Path, default=None)
    # Accepted for compatibility with upstream's wrapper; the value is not used.
    p.add_argument("--kaito-adapters-dir", dest="adapter_dir_compat", type=Path, default=None)
    return p


def parse_strength(text: str) -> tuple[str, float]:
    """``NAME=FLOAT`` → (name, strength); a clear error for anything else."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise OptionsError(f"--adapter-strength {text!r}: expected NAME=FLOAT, e.g. my-adapter=0.5")
    try:
        strength = float(value)
    except ValueError:
        raise OptionsError(
            f"--adapter-strength {text!r}: strength {value!r} is not a number"
        ) from None
    if not math.isfinite(strength) or not 0.0 <= strength <= 1.0:
        raise OptionsError(
            f"--adapter-strength {text!r}: strength must be between 0 and 1 (as the Workspace "
            "API allows)"
        )
    return name, strength


def split_args(argv: Sequence[str]) -> tuple[LauncherOptions, list[str]]:
    """Separate the launcher's flags from vLLM's and append the config file's ``vllm:`` flags."""
    ns, rest = _parser().parse_known_args(list(argv))
    if ns.max_queue_depth < 0:
        raise OptionsError("--max-queue-depth must be 0 (no limit) or a positive number")
    if ns.max_request_bytes < 0:
        raise OptionsError("--max-request-bytes must be 0 (no limit) or a positive number")
    opts = LauncherOptions(
        adapter_dir=ns.adapter_dir_compat or ns.adapter_dir,
        strengths=dict(parse_strength(s) for s in ns.adapter_strength),
        max_queue_depth=ns.max_queue_depth,
        max_request_bytes=ns.max_request_bytes,
        prepared_dir=ns.prepared_dir,
    )
    if ns.config is not None:
        if not ns.config.is_file():
            raise OptionsError(f"--config {ns.config}: no such file")
        opts.config_path = ns.config
    elif DEFAULT_CONFIG.is_file():
        opts.config_path = DEFAULT_CONFIG
    if opts.config_path is not None:
        rest += config_flags(load_config(opts.config_path))
    return opts, rest


def load_config(path: Path) -> dict[str, Any]:
    """Read inference_config.yaml; errors name the file and the offending key."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise OptionsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise OptionsError(
            f"{path}: expected a mapping at the top level, got {type(data).__name__}"
        )
    vllm = data.get("vllm", {}) or {}
    if not isinstance(vllm, dict):
        raise OptionsError(f"{path}: 'vllm' must be a mapping of vLLM flags to values")
    unknown = set(data) - {"vllm"} - IGNORED_CONFIG_KEYS
    if unknown:
        raise OptionsError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; put vLLM flags under 'vllm:'"
        )
    return {str(k): v for k, v in vllm.items()}


def config_flags(vllm: Mapping[str, Any]) -> list[str]:
    """``{max-model-len: 2048, enforce-eager: true}`` → ``--max-model-len 2048 --enforce-eager``."""
    out: list[str] = []
    for key, value in vllm.items():
        flag = "--" + key.removeprefix("--").replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + flag[2:])
        elif value is None:
            continue
        elif isinstance(value, list):
            out += [flag, *(str(v) for v in value)]
        elif isinstance(value, dict):
            out += [flag, json.dumps(value)]
        else:
            out += [flag, str(value)]
    return out


def discover_adapters(adapter_dir: Path) -> dict[str, Path]:
    """Every visible subdirectory of the adapter dir is an adapter named after the directory."""
    if not adapter_dir.is_dir():
        return {}
    found: dict[str, Path] = {}
    for sub in sorted(adapter_dir.iterdir()):
        if sub.name.startswith(".") or sub.name == "lost+found" or not sub.is_dir():
            continue
        if not (sub / "adapter_config.json").is_file():
            raise OptionsError(
                f"adapter directory {sub} has no adapter_config.json; an adapter image must hold "
                "adapter_config.json and adapter_model.safetensors under /data"
            )
        found[sub.name] = sub
    return found


def adapter_rank(path: Path) -> int:
    """The largest LoRA rank an adapter uses (``r`` and any ``rank_pattern`` entry)."""
    try:
        cfg = json.loads((path / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise OptionsError(f"{path}/adapter_config.json: cannot read it: {e}") from None
    ranks = [int(cfg.get("r", 8)), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())]
    return max(ranks)


def strengths_from_env(
    names: Sequence[str], env: Mapping[str, str] = os.environ
) -> dict[str, float]:
    """Upstream's controller sets one env var per adapter, ``<adapterName>=<strength>``."""
    out: dict[str, float] = {}
    for name in names:
        value = env.get(name)
        if value is None:
            continue
        try:
            strength = float(value)
        except ValueError:
            continue
        if math.isfinite(strength) and 0.0 <= strength <= 1.0:
            out[name] = strength
    return out
