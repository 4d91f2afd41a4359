"""Fixtures for the tuning stages run as processes: the serving venv, the tiny model, a local
http server with parquet files, and a Debian docker-registry with htpasswd auth on 127.0.0.1.

The stages need torch/transformers/peft/pyarrow, which live in the serving venv (hack/serving-env),
not in the operator's venv; tests run them as subprocesses of that venv's python and are skipped,
with the reason, when it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hack.registry import LocalRegistry
from tests.serving.tuning.stages import ROOT, stage_env

NEEDED = ("torch", "transformers", "peft", "pyarrow", "aiohttp", "yaml", "tokenizers")


def _cache_dir() -> Path:
    return Path(os.environ.get("KAITO_CACHE_DIR", Path.home() / ".cache" / "kaito-py"))


def _find_serving_python() -> tuple[Path | None, str]:
    explicit = os.environ.get("KAITO_SERVING_PYTHON")
    candidates = [Path(explicit)] if explicit else [Path(sys.executable)]
    candidates += [
        d / "bin" / "python"
        for d in sorted(_cache_dir().glob("serving-venv-*"))
        if (d / ".kaito-serving-env-complete").exists()
    ]
    missing_report = "no serving venv found"
    for python in candidates:
        probe = (
            "import importlib.util as u, sys; "
            "print(','.join(m for m in sys.argv[1:] if not u.find_spec(m)))"
        )
        out = subprocess.run(
            [str(python), "-c", probe, *NEEDED], capture_output=True, text=True, check=False
        )
        missing = out.stdout.strip()
        if out.returncode == 0 and not missing:
            return python, ""
        missing_report = f"{python} lacks {missing or out.stderr.strip()[-200:]}"
    return None, (
        f"the tuning stages need torch, transformers, peft and pyarrow: {missing_report}; "
        "run hack/serving-env (or set KAITO_SERVING_PYTHON to a python that has them)"
    )


@pytest.fixture(scope="session")
def serving_python() -> Path:
    python, reason = _find_serving_python()
    if python is None:
        pytest.skip(reason)
    return python


@pytest.fixture(scope="session")
def tiny_model(serving_python: Path) -> Path:
    """The serving tests' tiny Llama (tests/serving/tiny_model.py), built once, as a directory."""
    out = subprocess.run(
        [str(serving_python), "-m", "tests.serving.tiny_model"],
        cwd=ROOT,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return Path(out.stdout.strip().splitlines()[-1]) / "model"


WRITE_DATA = """
import sys, pyarrow as pa, pyarrow.parquet as pq
dest = sys.argv[1]
chat = [{"messages": [{"role": "user", "content": f"what is {i}"},
                      {"role": "assistant", "content": f"the answer is {i} blue green"}]}
        for i in range(12)]
pq.write_table(pa.Table.from_pylist(chat), f"{dest}/chat.parquet")
pairs = [{"question": f"hello {i}", "answer": f"world {i} red"} for i in range(12)]
pq.write_table(pa.Table.from_pylist(pairs), f"{dest}/pairs.parquet")
"""


@dataclass(frozen=True)
class DataServer:
    root: Path
    base: str

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def data_server(
    serving_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DataServer]:
    root = tmp_path_factory.mktemp("http-data")
    subprocess.run([str(serving_python), "-c", WRITE_DATA, str(root)], check=True, timeout=120)
    (root / "page.parquet").write_text("<html><body>Not Found</body></html>\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield DataServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Registry:
    host: str
    user: str
    password: str
    docker_config: Path  # correct credentials
    wrong_docker_config: Path


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """hack/registry.py's docker-registry (htpasswd auth) on 127.0.0.1, stopped by PID."""
    for tool in ("docker-registry", "htpasswd", "skopeo"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing (apt-get install docker-registry apache2-utils skopeo)")
    local = LocalRegistry.start(tmp_path_factory.mktemp("registry"))
    try:
        wrong = local.dir / "wrong-dockerconfig.json"
        entry = {"username": local.user, "password": local.password + "-wrong"}
        wrong.write_text(json.dumps({"auths": {local.host: entry}}))
        yield Registry(local.host, local.user, local.password, local.docker_config, wrong)
    finally:
        local.stop()
