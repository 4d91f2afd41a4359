"""Starting and stopping servers (by PID) and computing transformers+peft reference outputs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SERVER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
    """A tiny blocking client for probes; returns (status, parsed JSON or text)."""
    data = None
    headers = {}
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    seen: list[tuple[int, Any]] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_server(
    argv: list[str], port: int, log: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> Server:
    """Start ``argv`` (its own process group) and wait for /health; records statuses seen."""
    full_env = {**os.environ, **SERVER_ENV, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *[p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    out = log.open("wb")
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            status, body = http("GET", server.url + "/health", timeout=5)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
            continue
        if not server.seen or server.seen[-1][0] != status:
            server.seen.append((status, body))
        if status == 200:
            return server
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"server not healthy in {timeout}s:\n{log.read_text()[-4000:]}")


def serving_argv(model: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "serving",
        "--model",
        str(model),
        "--served-model-name",
        "tiny",
        "--dtype",
        "float32",
        "--max-model-len",
        "256",
        "--enforce-eager",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


class Reference:
    """Greedy float32 generation with transformers (+peft), the oracle for vLLM's answers."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._cache: dict[tuple[str, float, tuple[int, ...], int], list[int]] = {}

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def greedy(
        self, prompt: list[int], n: int, adapter: Path | None = None, strength: float = 1.0
    ) -> list[int]:
        key = (str(adapter), strength, tuple(prompt), n)
        if key not in self._cache:
            self._cache[key] = self._generate(prompt, n, adapter, strength)
        return self._cache[key]

    def _generate(
        self, prompt: list[int], n: int, adapter: Path | None, strength: float
    ) -> list[int]:
        import torch
        from transformers import AutoModelForCausalLM

        model: Any = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.mul_(strength)
        model.eval()
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return [int(t) for t in out[0][len(prompt) :]]
