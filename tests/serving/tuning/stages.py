"""Running the tuning stages as processes of the serving venv's python."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def stage_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",  # 2 shared cores: do not let torch spin on both
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def run_stage(
    python: Path, module: str, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", module, *args],
        cwd=ROOT,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def events(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line must be one JSON object: that is the progress contract."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]
