"""Loading the package's own YAML data files and turning validation errors into one clear line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from kaito.presets.errors import CatalogError

M = TypeVar("M", bound=BaseModel)

DATA_DIR = Path(__file__).with_name("data")


def data_files(pattern: str) -> list[Path]:
    """The package data files matching `pattern`, in a stable order."""
    return sorted(DATA_DIR.glob(pattern))


def read_entries(path: Path, key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (label, mapping) for every entry of the top-level list `key` in a YAML file."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise CatalogError(f"{path.name}: not valid YAML: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise CatalogError(f"{path.name}: expected a top-level '{key}:' list")
    for index, entry in enumerate(document[key]):
        label = f"{key}[{index}]"
        if not isinstance(entry, dict):
            raise CatalogError(f"{path.name}: entry {label}: expected a mapping")
        name = entry.get("name")
        if isinstance(name, str):
            label = f"{label} ({name})"
        yield label, entry


def validate_entry(model: type[M], path: Path, label: str, entry: dict[str, Any]) -> M:
    """Validate one entry; the first problem is reported with file, entry and field."""
    try:
        return model.model_validate(entry)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(entry)"
        raise CatalogError(f"{path.name}: entry {label}: field '{field}': {first['msg']}") from None
