"""The launcher's pre-flight check names the weights source and the fix (no vLLM needed)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from serving.options import OptionsError
from serving.weights import check_model_source


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there once the socket is closed


class FakeHub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if "gated" in self.path:
            code = 200 if self.headers.get("Authorization") == "Bearer good" else 401
        elif "missing" in self.path:
            code = 404
        else:
            code = 200
        body = json.dumps({"id": "x"}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield url
    server.shutdown()


def test_unreachable_hub_names_the_hub_and_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(OptionsError) as info:
        check_model_source("microsoft/Phi-3-mini-4k-instruct", timeout=2)
    message = str(info.value)
    assert endpoint in message and "Phi-3-mini-4k-instruct" in message
    assert "modelAccessSecret" in message and "hack/push-model" in message


def test_refused_token_points_at_the_model_access_secret(
    hub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(OptionsError, match=r"HTTP 401.*set presetOptions.modelAccessSecret"):
        check_model_source("org/gated-model")
    monkeypatch.setenv("HF_TOKEN", "wrong")
    with pytest.raises(OptionsError, match=r"HF_TOKEN from presetOptions\.modelAccessSecret"):
        check_model_source("org/gated-model")
    monkeypatch.setenv("HF_TOKEN", "good")
    check_model_source("org/gated-model")


def test_missing_repository_and_public_model(hub: str) -> None:
    with pytest.raises(OptionsError, match=r"org/missing-model \(revision abc\) was not found"):
        check_model_source("org/missing-model", "abc")
    check_model_source("org/public-model")


def test_empty_weights_directory_blames_the_init_container(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="model-weights-downloader"):
        check_model_source(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    check_model_source(str(tmp_path))


def test_the_launcher_refuses_missing_weights_before_importing_vllm(tmp_path: Path) -> None:
    """A crash loop should say why at once, not after a minute of vLLM imports."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from serving import launcher\n"
        "try:\n"
        "    launcher.main(['--model', sys.argv[1]])\n"
        "except SystemExit as e:\n"
        "    print(e.code, 'vllm' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.stdout.split() == ["2", "False"], done.stderr[-2000:]
    assert "no config.json" in done.stderr
