"""Helpers for e2e tests that run serving processes (hack/run-pod) beside the cluster."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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


def tiny_model() -> Path:
    """The tests' tiny model (built once by tests.serving.tiny_model): model/ and adapters/."""
    py = serving_python()
    assert py is not None, "serving venv absent: run hack/serving-env"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [str(py), "-m", "tests.serving.tiny_model"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


def push_tiny_model(host: str, authfile: Path) -> dict[str, str]:
    """Publish the tiny model's weights (the preset image) and one adapter to a registry;
    ``adapter_dir`` is that adapter's local directory (to mount as a volume adapter)."""
    tiny = tiny_model()
    weights = f"{host}/kaito-tiny-llama-test:0.1.0"
    adapter = f"{host}/tiny-adapter:0.1.0"
    for src, ref in ((tiny / "model", weights), (tiny / "adapters" / "adapter-a", adapter)):
        subprocess.run(
            [str(REPO / "hack" / "push-model"), str(src), ref, "--authfile", str(authfile)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    adapter_dir = str(tiny / "adapters" / "adapter-a")
    return {"weights": weights, "adapter": adapter, "adapter_dir": adapter_dir}


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


WRITE_CHAT_PARQUET = """
import sys, pyarrow as pa, pyarrow.parquet as pq
rows = [{"messages": [{"role": "user", "content": f"what is {i}"},
                      {"role": "assistant", "content": f"the answer is {i} blue green"}]}
        for i in range(8)]
pq.write_table(pa.Table.from_pylist(rows), sys.argv[1])
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def serve_chat_dataset(root: Path, host: str) -> Iterator[str]:
    """A small chat dataset (parquet) on an http server bound to `host`; yields its URL.

    Tuning tests put it where the seed's dataset URL was; the server stops on exit.
    """
    py = serving_python()
    assert py is not None
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(py), "-c", WRITE_CHAT_PARQUET, str(root / "chat.parquet")], check=True)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/chat.parquet"
    finally:
        server.shutdown()
        server.server_close()
