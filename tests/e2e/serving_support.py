"""Helpers for e2e tests that run serving processes (hack/run-pod) beside the cluster."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def serving_python() -> Path | None:
    """The serving venv's python, or None when `hack/serving-env` has not built it."""
    out = subprocess.run(
        [str(REPO / "hack" / "serving-env"), "--print-only"],
        capture_output=True,
        text=True,
        check=False,
    )
    venv = Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None
    if venv is None or not (venv / ".kaito-serving-env-complete").exists():
        return None
    return venv / "bin" / "python3"


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST JSON; (status, decoded body) for successes and HTTP errors alike."""
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")
