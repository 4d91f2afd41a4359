"""The `kaito` CLI: offline verbs on the seed manifests, one-line errors, exit codes."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from hack.hub import LocalHub
from kaito.cli import human_duration, inferenceset_rows, main, status_rows

DATA = Path(__file__).parent / "presets" / "data"
SEED = DATA / "workspace-phi-3-mini.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str) -> None:
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("kaito: error: ")


def test_plan_seed_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "-f", str(SEED))
    assert code == 0, err
    assert "Preset:     phi-3-mini-4k-instruct" in out
    assert "SKU:        Standard_NC6s_v3 (1x NVIDIA V100 16 GiB" in out
    assert "Nodes:      1" in out
    assert "Command:    python3 -m serving" in out
    assert "--dtype float16" in out and "--served-model-name phi-3-mini-4k-instruct" in out
    assert "VLLM_NO_USAGE_STATS=1" in out


@pytest.mark.parametrize("path", sorted(p.name for p in DATA.glob("workspace-*.yaml")))
def test_plan_json_every_example(capsys: pytest.CaptureFixture[str], path: str) -> None:
    code, out, err = run(capsys, "plan", "--json", "-f", str(DATA / path))
    if path == "workspace-too-big.yaml":
        assert code == 1 and out == ""
        assert_one_line_error(err)
        assert "resource.instanceType" in err and "Standard_D32s_v5" in err
        return
    assert code == 0, err
    plan = json.loads(out)
    assert plan["estimate"]["node_count"] >= 1
    if plan["mode"] == "inference":
        assert plan["container"]["command"] == ["python3", "-m", "serving"]
    else:
        assert plan["container"] is None and plan["tuningMethod"] == "qlora"


def test_plan_adapter_seed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "plan", "--json", "-f", str(DATA / "workspace-phi-3-mini-adapter.yaml")
    )
    args = json.loads(out)["container"]["args"]
    assert code == 0
    assert "phi-3-adapter=/mnt/adapter/phi-3-adapter" in args
    assert "phi-3-adapter=1.0" in args


def test_plan_with_inference_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = yaml.safe_load(SEED.read_text())
    doc["inference"]["config"] = "my-config"
    ws = tmp_path / "ws.yaml"
    ws.write_text(yaml.safe_dump(doc))
    code, out, _ = run(capsys, "plan", "--json", "-f", str(ws))
    assert code == 0 and "--config" in json.loads(out)["container"]["args"]
    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text("vllm:\n  max-model-len: 1024\n")
    code, out, _ = run(capsys, "plan", "--json", "-f", str(ws), "--config", str(cfg))
    plan = json.loads(out)
    assert plan["estimate"]["max_model_len"] == 1024
    args = plan["container"]["args"]
    assert args[args.index("--max-model-len") + 1] == "1024"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"inference": {"preset": {"name": "no-such-model"}}}, "inference.preset.name"),
        ({"resource": {"instanceType": "Standard_Nope"}}, "resource.instanceType"),
        ({"apiVersion": "kaito.sh/v9"}, "apiVersion"),
        ({"resource": {"instanceType": "Standard_NC6s_v3", "count": -1}}, "resource.count"),
        (
            {
                "inference": {
                    "preset": {"name": "phi-3-mini-4k-instruct"},
                    "adapters": [{"source": {"name": "A_B"}, "strength": "1.0"}],
                }
            },
            "inference.adapters[0]",
        ),
        (
            {
                "inference": {
                    "preset": {"name": "phi-3-mini-4k-instruct"},
                    "adapters": [{"source": {"name": "a"}, "strength": "strong"}],
                }
            },
            "inference.adapters[0].strength",
        ),
        ({"tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}}}, "inference"),
    ],
)
def test_plan_errors_name_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, patch: dict[str, object], field: str
) -> None:
    doc = yaml.safe_load(SEED.read_text())
    doc.update(patch)
    ws = tmp_path / "ws.yaml"
    ws.write_text(yaml.safe_dump(doc))
    code, out, err = run(capsys, "plan", "-f", str(ws))
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert err.startswith(f"kaito: error: {field}: ")


@pytest.mark.parametrize(
    ("content", "needle"), [(None, "cannot read"), ("a: [", "not valid YAML"), ("[]", "Workspace")]
)
def test_plan_bad_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, needle: str
) -> None:
    path = tmp_path / "ws.yaml"
    if content is not None:
        path.write_text(content)
    code, _, err = run(capsys, "plan", "-f", str(path))
    assert code == 1
    assert_one_line_error(err)
    assert needle in err


@pytest.mark.parametrize(
    "argv", [[], ["plan"], ["no-such-verb"], ["presets", "--bogus"], ["models"], ["skus", "x"]]
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--help"],
        ["plan", "--help"],
        ["status", "--help"],
        ["chat", "--help"],
        ["deploy", "--help"],
        ["get-endpoint", "--help"],
        ["models", "list", "--help"],
        ["presets", "--help"],
        ["skus", "--help"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_presets_and_models_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "presets", "--json")
    names = {p["name"] for p in json.loads(out)}
    assert code == 0 and "phi-3-mini-4k-instruct" in names and "tiny-llama-test" not in names
    code, out, _ = run(capsys, "models", "list", "--all")
    assert code == 0 and "tiny-llama-test" in out and out.startswith("NAME")


def test_skus(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "skus", "--json")
    skus = {s["name"]: s for s in json.loads(out)}
    assert code == 0 and skus["Standard_NC6s_v3"]["supports_bf16"] is False
    code, out, _ = run(capsys, "skus")
    assert code == 0 and "Standard_ND96isr_H200_v5" in out


def test_chat_needs_url(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "chat", "ws", "hello")
    assert code == 2
    assert_one_line_error(err)
    assert "port-forward" in err and "--url" in err


@pytest.fixture
def chat_server() -> Iterator[tuple[str, list[dict[str, object]]]]:
    seen: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "body": body})
            reply = json.dumps({"Result": f"echo: {body['prompt']}"}).encode()
            self.send_response(200 if self.path == "/chat" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_chat_posts_prompt(
    capsys: pytest.CaptureFixture[str], chat_server: tuple[str, list[dict[str, object]]]
) -> None:
    url, seen = chat_server
    code, out, err = run(capsys, "chat", "ws", "hi there", "--url", url + "/")
    assert code == 0, err
    assert out == "echo: hi there\n"
    assert seen == [{"path": "/chat", "body": {"prompt": "hi there"}}]


def test_chat_unreachable_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "chat", "ws", "hi", "--url", "http://127.0.0.1:9", "--timeout", "5")
    assert code == 1
    assert_one_line_error(err)
    assert "cannot reach http://127.0.0.1:9/chat" in err


def test_status_without_kubeconfig(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, err = run(capsys, "status")
    assert code == 1
    assert_one_line_error(err)
    assert "KUBECONFIG" in err


def test_status_rows_show_seed_columns() -> None:
    now = dt.datetime(2026, 1, 2, 3, 0, tzinfo=dt.UTC)
    obj = {
        "metadata": {"name": "workspace-phi-3-mini", "creationTimestamp": "2026-01-02T01:55:00Z"},
        "resource": {"instanceType": "Standard_NC6s_v3"},
        "status": {
            "conditions": [
                {"type": "ResourceReady", "status": "True"},
                {"type": "InferenceReady", "status": "False"},
                {"type": "WorkspaceSucceeded", "status": "False"},
            ]
        },
    }
    rows = status_rows([obj], now)
    assert rows[0] == [
        "NAME",
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "WORKSPACEREADY",
        "AGE",
    ]
    assert rows[1] == ["workspace-phi-3-mini", "Standard_NC6s_v3", "True", "False", "False", "65m"]


def test_deploy_dry_run_round_trips_through_plan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(
        capsys,
        "deploy",
        "--workspace-name",
        "ws",
        "--model",
        "phi-4",
        "--instance-type",
        "Standard_NV36ads_A10_v5",
        "--dry-run",
    )
    assert code == 0, err
    path = tmp_path / "ws.yaml"
    path.write_text(out)
    code, out, _ = run(capsys, "plan", "--json", "-f", str(path))
    assert code == 0 and json.loads(out)["estimate"]["node_count"] == 2


def test_deploy_rejects_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "deploy", "--workspace-name", "ws", "--model", "nope", "--dry-run")
    assert code == 1
    assert_one_line_error(err)
    assert "--model" in err


def test_console_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kaito.cli", "plan", "-f", str(SEED)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Standard_NC6s_v3" in result.stdout


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 1200, "3h20m"),
        (20 * 3600, "20h"),
        (2 * 86400 + 5 * 3600, "2d5h"),
        (40 * 86400, "40d"),
        (800 * 86400, "2y70d"),
    ],
)
def test_age_like_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_inferenceset_rows_show_replicas_and_the_autoscaler() -> None:
    now = dt.datetime(2026, 1, 2, 3, 0, tzinfo=dt.UTC)
    sets = [
        {
            "metadata": {"name": "tiny", "creationTimestamp": "2026-01-02T02:58:00Z"},
            "spec": {"replicas": 2},
            "status": {
                "readyReplicas": 1,
                "updatedReplicas": 2,
                "conditions": [
                    {"type": "AutoscalerReady", "status": "False", "reason": "FailedGetPodsMetric"}
                ],
            },
        }
    ]
    label = {"inferenceset.kaito.sh/created-by": "tiny"}
    workspaces = [
        {
            "metadata": {"name": "tiny-0", "labels": label},
            "status": {"conditions": [{"type": "WorkspaceSucceeded", "status": "True"}]},
        },
        {"metadata": {"name": "tiny-1", "labels": label}},
        {"metadata": {"name": "other"}},
    ]
    rows = inferenceset_rows(sets, workspaces, now)
    assert rows[0] == [
        "INFERENCESET",
        "REPLICAS",
        "READY",
        "UPDATED",
        "AUTOSCALER",
        "REPLICA WORKSPACES",
        "AGE",
    ]
    assert rows[1] == [
        "tiny",
        "2",
        "1",
        "2",
        "False/FailedGetPodsMetric",
        "tiny-0(ready),tiny-1(not ready)",
        "2m",
    ]


HUB_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hub"
QWEN_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workspace-qwen3-0.6b-hub.yaml"


@pytest.fixture(scope="module")
def local_hub() -> Iterator[LocalHub]:
    hub = LocalHub.start(roots=[HUB_FIXTURES])
    yield hub
    hub.stop()


def test_plan_a_hub_model_shows_where_each_figure_came_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, local_hub: LocalHub
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    code, out, err = run(capsys, "plan", "-f", str(QWEN_EXAMPLE))
    assert code == 0, err
    assert "Preset:     qwen3-0.6b (Qwen/Qwen3-0.6B, 1.40 GiB, context 40960)" in out
    assert f"Sized from: config.json of {local_hub.url}/Qwen/Qwen3-0.6B@" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "1,503,300,328 bytes" in lines["weights"] and "model.safetensors" in lines["weights"]
    assert "2 (K and V) x 28 layers x 8 KV heads x 128 head dim x 2 bytes" in lines["KV/token"]
    assert "config max_position_embeddings" in lines["context"]
    assert "Qwen3ForCausalLM" in lines["arch"] and "supported list" in lines["arch"]
    assert "Nodes:      1" in out and f"HF_ENDPOINT={local_hub.url}" in out
    code, out, _ = run(capsys, "plan", "--json", "-f", str(QWEN_EXAMPLE))
    source = json.loads(out)["presetSource"]
    assert source["origin"] == "hub" and source["kvBytesPerToken"] == 114688
    assert source["provenance"]["num_layers"] == "config num_hidden_layers"


def test_plan_a_hub_model_without_a_hub_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    code, out, err = run(capsys, "plan", "-f", str(QWEN_EXAMPLE))
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert "inference.preset.name: cannot reach the model hub" in err


def test_deploy_takes_a_hub_id(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, local_hub: LocalHub
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    code, out, err = run(
        capsys, "deploy", "--workspace-name", "q", "--model", "Qwen/Qwen3-0.6B", "--dry-run"
    )
    assert code == 0, err
    assert yaml.safe_load(out)["inference"]["preset"]["name"] == "Qwen/Qwen3-0.6B"
