"""The serving image's vLLM plugins: fixes that must run in every process vLLM creates.

vLLM's engine and worker processes are spawned, so patching the launcher's process is not
enough. vLLM loads ``vllm.general_plugins`` entry points in every process it creates;
:func:`install` writes a tiny distribution (metadata only) that registers ours under that
group, on a sys.path entry the spawned children inherit (``PYTHONPATH``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

PLUGINS = {
    "kaito_serving_lora_fix": "serving.lora_fix:register",
    "kaito_serving_pp_fix": "serving.pp_fix:register",
}
_DIST = "kaito_serving_plugins-1.0.dist-info"


def install(root: Path | None = None) -> Path:
    """Make :data:`PLUGINS` vLLM general plugins for this process and the ones it spawns.

    The directory is named after its content and this package's location, so launchers of
    another version or checkout on the same machine (sharing the temp dir) never rewrite the
    entry points this one's processes read.
    """
    package_parent = str(Path(__file__).resolve().parent.parent)
    entries = "".join(f"{name} = {target}\n" for name, target in PLUGINS.items())
    key = hashlib.sha256(f"{package_parent}\n{entries}".encode()).hexdigest()[:12]
    base = root or Path(tempfile.gettempdir()) / f"kaito-serving-plugins-{key}"
    dist = base / _DIST
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: kaito-serving-plugins\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[vllm.general_plugins]\n{entries}")
    for entry in (str(base), package_parent):
        if entry not in sys.path:
            sys.path.append(entry)
    # Spawned children rebuild sys.path from the parent's, but also honour PYTHONPATH.
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for entry in (str(base), package_parent):
        if entry not in parts:
            parts.append(entry)
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)
    allowed = os.environ.get("VLLM_PLUGINS")
    if allowed is not None:
        names = [p for p in allowed.split(",") if p]
        os.environ["VLLM_PLUGINS"] = ",".join([*names, *(n for n in PLUGINS if n not in names)])
    return base
