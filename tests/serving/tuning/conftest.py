"""Fixtures for the tuning stages run as processes: the serving venv, the tiny model, a local
http server with parquet files, and a Debian docker-registry with htpasswd auth on 127.0.0.1.

The stages need torch/transformers/peft/pyarrow, which live in the serving venv (hack/serving-env),
not in the operator's venv; tests run them as subprocesses of that venv's python and are skipped,
with the reason, when it is missing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.serving.tuning.stages import stage_env

HERE = Path(__file__).resolve().parent
NEEDED = ("torch", "transformers", "peft", "pyarrow", "aiohttp", "yaml", "tokenizers")


def _cache_dir() -> Path:
    return Path(os.environ.get("KAITO_CACHE_DIR", Path.home() / ".cache" / "kaito-py"))


def _find_serving_python() -> tuple[Path | None, str]:
    explicit = os.environ.get("KAITO_SERVING_PYTHON")
    candidates = [Path(explicit)] if explicit else []
    candidates += [
        d / "bin" / "python"
        for d in sorted(_cache_dir().glob("serving-venv-*"))
        if (d / ".kaito-serving-env-complete").exists()
    ]
    if not candidates:
        return None, "no serving venv (run hack/serving-env, or set KAITO_SERVING_PYTHON)"
    missing_report = ""
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
    return None, f"serving venv unusable for tuning: {missing_report} (pip install pyarrow)"


@pytest.fixture(scope="session")
def serving_python() -> Path:
    python, reason = _find_serving_python()
    if python is None:
        pytest.skip(reason)
    return python


@pytest.fixture(scope="session")
def tiny_model(serving_python: Path) -> Path:
    out = subprocess.run(
        [str(serving_python), str(HERE / "tiny_model.py")],
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


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
class LocalRegistry:
    host: str
    user: str
    password: str
    docker_config: Path  # correct credentials
    wrong_docker_config: Path


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    for tool in ("docker-registry", "htpasswd", "skopeo"):
        if shutil.which(tool) is None:
            pytest.skip(
                f"{tool} is not installed (apt-get install docker-registry apache2-utils skopeo)"
            )
    root = tmp_path_factory.mktemp("registry")
    user, password = "kaito", "tuning-secret"
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True
    ).stdout
    (root / "htpasswd").write_text(htpasswd)
    host = f"127.0.0.1:{free_port()}"
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
        f"http:\n  addr: {host}\n  secret: kaito-tests\n"
        f"auth:\n  htpasswd:\n    realm: kaito\n    path: {root / 'htpasswd'}\n"
    )
    log = (root / "registry.log").open("w")
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=1)
            except urllib.error.HTTPError:
                break  # 401: up and asking for credentials
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"docker-registry did not start: {(root / 'registry.log').read_text()}"
                    ) from None
                time.sleep(0.2)
        good, bad = root / "good.json", root / "bad.json"
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        good.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
        bad.write_text(json.dumps({"auths": {host: {"username": user, "password": "nope"}}}))
        yield LocalRegistry(host, user, password, good, bad)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
