"""A user's ``inference_config.yaml``: parsing, and checking its ``vllm:`` flags against vLLM.

The serving launcher appends every ``vllm:`` entry to vLLM's own command line, where an unknown
flag or a badly typed value stops the server before it loads a byte: a crash loop minutes after
``kubectl apply``.  The table in ``data/vllm-flags.yaml`` is generated from the ``vllm serve``
parser of the vLLM the serving image ships (``hack/vllm-flags``), so the same mistakes are
refused at admission with the flag's name and what it takes.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from kaito.presets._datafiles import DATA_DIR
from kaito.presets.errors import CatalogError, SpecError

CONFIG_KEY = "inference_config.yaml"
CONFIG_FIELD = "inference.config"
# Top-level keys of upstream's inference_config.yaml besides vllm: (the launcher ignores them).
TOP_LEVEL_KEYS = ("vllm", "max_probe_steps", "kv_cache_cpu_memory_utilization")
FLAGS_FILE = DATA_DIR / "vllm-flags.yaml"

FlagType = Literal["int", "float", "bool", "switch", "str", "json", "list"]


class Flag(BaseModel):
    """One ``vllm serve`` flag: its value type and, where argparse has them, its choices."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: FlagType
    choices: tuple[str, ...] = ()
    retired: str | None = None
    """Set for flags vLLM no longer has: why, and what to write instead."""


class FlagTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vllm_version: str
    flags: dict[str, Flag]


@cache
def flag_table() -> FlagTable:
    """The generated table (see the module docstring)."""
    try:
        document = yaml.safe_load(FLAGS_FILE.read_text(encoding="utf-8"))
        return FlagTable.model_validate(document)
    except (OSError, yaml.YAMLError, ValueError) as err:
        raise CatalogError(f"{FLAGS_FILE.name}: {err}") from None


def parse_inference_config(text: str) -> dict[str, Any]:
    """Parse inference_config.yaml text; SpecError names the problem and the fix."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError(CONFIG_FIELD, f"{CONFIG_KEY} is not valid YAML{where}: {err}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise SpecError(
            CONFIG_FIELD,
            f"{CONFIG_KEY} must be a mapping (e.g. 'vllm: {{max-model-len: 4096}}'), "
            f"got {type(document).__name__}",
        )
    unknown = sorted(str(k) for k in document if k not in TOP_LEVEL_KEYS)
    if unknown:
        raise SpecError(
            CONFIG_FIELD,
            f"{CONFIG_KEY}: unknown top-level key(s) {', '.join(unknown)}; vLLM flags go under "
            f"'vllm:' (accepted top-level keys: {', '.join(TOP_LEVEL_KEYS)})",
        )
    section = document.get("vllm")
    if section is not None and not isinstance(section, dict):
        raise SpecError(
            f"{CONFIG_FIELD} (vllm)", "the vllm: section must be a mapping of flag: value"
        )
    return document


def inference_config_from_data(
    name: str, namespace: str, data: Mapping[str, str] | None
) -> dict[str, Any]:
    """The parsed config of ConfigMap `name` (its ``data``; None: the ConfigMap is missing)."""
    if data is None:
        raise SpecError(
            CONFIG_FIELD,
            f"ConfigMap {name!r} not found in namespace {namespace!r}; create it with key "
            f"{CONFIG_KEY} first, or remove inference.config",
        )
    text = data.get(CONFIG_KEY)
    if text is None:
        raise SpecError(
            CONFIG_FIELD,
            f"ConfigMap {name!r} has no key {CONFIG_KEY} (it has: "
            f"{', '.join(sorted(data)) or 'no keys'}); put the vLLM settings under that key",
        )
    return parse_inference_config(text)


def _flag_name(key: object) -> str:
    return str(key).strip().lstrip("-").replace("_", "-")


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())


def _is_float(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _type_problem(flag: Flag, value: object) -> str | None:
    """What is wrong with `value` for `flag` (None: fine)."""
    scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
    if flag.type == "bool":
        ok = isinstance(value, bool)
        want = "true or false"
    elif flag.type == "switch":
        if value is False:
            return "is off by default and cannot be set to false; remove it"
        ok, want = value is True or value is None or value == "", "true (a switch)"
    elif flag.type == "int":
        ok, want = _is_int(value), "an integer"
    elif flag.type == "float":
        ok, want = _is_float(value), "a number"
    elif flag.type == "json":
        ok, want = isinstance(value, Mapping | str), "a mapping or JSON"
    elif flag.type == "list":
        ok = isinstance(value, list) or scalar
        want = "a value or a list of values"
    else:
        ok, want = scalar, "a single value"
    if not ok:
        return f"must be {want}, got {value!r}"
    if flag.choices and scalar and str(value) not in flag.choices:
        return f"must be one of {', '.join(flag.choices)}, got {value!r}"
    return None


def check_vllm_flags(config: Mapping[str, Any] | None) -> None:
    """Every ``vllm:`` key is a flag of the vLLM we ship, with a value of its type."""
    section = (config or {}).get("vllm") or {}
    table = flag_table()
    for key, value in section.items():
        name = _flag_name(key)
        field = f"{CONFIG_FIELD} (vllm.{key})"
        base, dot, _ = name.partition(".")
        flag = table.flags.get(base if dot else name)
        if flag is None:
            close = difflib.get_close_matches(name, list(table.flags), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SpecError(
                field,
                f"{name!r} is not a flag of vLLM {table.vllm_version}{hint}; see "
                "`vllm serve --help` for the flags it takes",
            )
        if flag.retired:
            raise SpecError(
                field, f"vLLM {table.vllm_version} no longer has {name!r}: {flag.retired}"
            )
        if dot:
            if flag.type != "json":
                raise SpecError(field, f"{base!r} takes no sub-keys; set {base} itself")
            continue
        problem = _type_problem(flag, value)
        if problem:
            raise SpecError(field, problem)
