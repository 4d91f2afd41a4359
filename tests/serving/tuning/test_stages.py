"""The tuning Job's stages as processes: download -> train -> push -> pull -> load with peft.

Real parts only: a local http server with parquet files, the tiny Llama model trained for a
few steps on CPU, the Debian docker-registry with htpasswd auth, and serving.fetch (the
adapter init container) to pull the image back.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito.presets.tuning import default_config, validate_training_config
from tests.serving.tuning.conftest import DataServer, Registry, free_port
from tests.serving.tuning.stages import events, run_stage, stage_env

pytestmark = pytest.mark.slow

LOGIT_CHECK = """
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
ids = torch.tensor([[1, 20, 40, 60, 80, 100]])
with torch.no_grad():
    before = base(ids).logits
model = PeftModel.from_pretrained(base, sys.argv[2])
with torch.no_grad():
    after = model(ids).logits
print(json.dumps({"max_abs_diff": float((after - before).abs().max()),
                  "peft_type": model.peft_config["default"].peft_type.value}))
"""


def _config(tmp: Path, method: str, output: Path, **dataset: Any) -> Path:
    """The operator's default config for ``method``, shortened to a few fast steps."""
    config = default_config(method)
    config["ModelConfig"]["torch_dtype"] = "float32"
    config["TrainingArguments"].update(
        output_dir=str(output), max_steps=3, learning_rate=0.01, per_device_train_batch_size=2
    )
    config["DatasetConfig"].update(dataset)
    # the trainer must accept what the operator accepts; only output_dir is local here
    validate_training_config({**config, "TrainingArguments": {"output_dir": "/mnt/x"}}, method)
    path = tmp / f"{method}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _first_error(proc: subprocess.CompletedProcess[str]) -> str:
    errors = [e for e in events(proc.stdout) if e["event"] == "error"]
    assert errors, proc.stdout + proc.stderr
    return str(errors[0]["message"])


def test_download_train_push_pull_and_load(
    serving_python: Path,
    tiny_model: Path,
    data_server: DataServer,
    registry: Registry,
    tmp_path: Path,
) -> None:
    data, results = tmp_path / "data", tmp_path / "results"
    proc = run_stage(
        serving_python,
        "serving.tuning.download",
        "--urls",
        data_server.url("chat.parquet"),
        "--dest",
        str(data),
    )
    assert proc.returncode == 0, proc.stderr
    assert (data / "chat.parquet").read_bytes() == (data_server.root / "chat.parquet").read_bytes()
    assert events(proc.stdout)[-1]["event"] == "completed"

    # the seed's method: qlora. No CUDA here, so it must fall back to LoRA and say so.
    config = _config(tmp_path, "qlora", results)
    proc = run_stage(
        serving_python,
        "serving.tuning.train",
        "--config",
        str(config),
        "--data",
        str(data),
        "--model",
        str(tiny_model),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = events(proc.stdout)
    warnings = [e for e in log if e["event"] == "warning"]
    assert warnings and "plain LoRA" in str(warnings[0]["message"])
    dataset = next(e for e in log if e["event"] == "dataset")
    assert (dataset["format"], dataset["train_rows"]) == ("chat", 12)
    progress = [e for e in log if e["event"] == "progress" and "loss" in e]
    assert [e["step"] for e in progress] == [1, 2, 3]
    assert all(isinstance(e["loss"], float) and e["epoch"] > 0 for e in progress)
    marker = json.loads((results / "fine_tuning_completed.txt").read_text())
    assert marker["steps"] == 3 and marker["quantized"] is False

    image = f"{registry.host}/adapters/tiny-chat:v1"
    proc = run_stage(
        serving_python,
        "serving.tuning.push",
        "--source",
        str(results),
        "--image",
        image,
        "--docker-config",
        str(registry.docker_config),
        "--model-name",
        "tiny-llama",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert events(proc.stdout)[-1]["event"] == "completed"

    # pulled back the way an inference Workspace's adapter init container does it
    adapter = tmp_path / "adapter"
    proc = run_stage(
        serving_python,
        "serving.fetch",
        "--image",
        image,
        "--dest",
        str(adapter),
        "--docker-config",
        str(registry.docker_config),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (adapter / name).read_bytes() == (results / name).read_bytes()
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            f"{registry.user}:{registry.password}",
            f"docker://{image}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    manifest = json.loads(raw.stdout)
    assert manifest["annotations"] == {"sh.kaito.model.name": "tiny-llama"}
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"

    check = subprocess.run(
        [str(serving_python), "-c", LOGIT_CHECK, str(tiny_model), str(adapter)],
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    outcome = json.loads(check.stdout.strip().splitlines()[-1])
    assert outcome["peft_type"] == "LORA"
    assert outcome["max_abs_diff"] > 1e-4  # the trained adapter changes the model's output


def test_prompt_completion_columns_from_dataset_config(
    serving_python: Path, tiny_model: Path, data_server: DataServer, tmp_path: Path
) -> None:
    data, results = tmp_path / "data", tmp_path / "results"
    data.mkdir()
    (data / "pairs.parquet").write_bytes((data_server.root / "pairs.parquet").read_bytes())
    config = _config(tmp_path, "lora", results, context_column="question", response_column="answer")
    proc = run_stage(
        serving_python,
        "serving.tuning.train",
        "--config",
        str(config),
        "--data",
        str(data),
        "--model",
        str(tiny_model),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = events(proc.stdout)
    assert not [e for e in log if e["event"] == "warning"]  # lora: nothing to fall back from
    assert next(e for e in log if e["event"] == "dataset")["format"] == "pair"
    assert {p.name for p in results.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "fine_tuning_completed.txt",
    }


def test_train_names_a_missing_column(
    serving_python: Path, tiny_model: Path, data_server: DataServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "chat.parquet").write_bytes((data_server.root / "chat.parquet").read_bytes())
    config = _config(tmp_path, "lora", tmp_path / "out", messages_column="conversation")
    proc = run_stage(
        serving_python,
        "serving.tuning.train",
        "--config",
        str(config),
        "--data",
        str(data),
        "--model",
        str(tiny_model),
    )
    assert proc.returncode == 2
    message = _first_error(proc)
    assert "'conversation'" in message and "messages" in message
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "fine_tuning_completed.txt").exists()


def test_download_unreachable_url_is_named(serving_python: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/train.parquet"  # nothing listens there
    proc = run_stage(
        serving_python,
        "serving.tuning.download",
        "--urls",
        url,
        "--dest",
        str(tmp_path),
        "--retries",
        "2",
        "--backoff",
        "0.1",
    )
    assert proc.returncode == 2
    message = _first_error(proc)
    assert url in message and "unreachable after 2 tries" in message
    assert [e["attempt"] for e in events(proc.stdout) if e["event"] == "retry"] == [1, 2]
    assert f"download: error: {url}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_download_rejects_a_file_that_is_not_parquet(
    serving_python: Path, data_server: DataServer, tmp_path: Path
) -> None:
    url = data_server.url("page.parquet")
    proc = run_stage(
        serving_python, "serving.tuning.download", "--urls", url, "--dest", str(tmp_path)
    )
    assert proc.returncode == 2
    message = _first_error(proc)
    assert message.startswith(url) and "not a parquet file" in message
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_download_http_errors_and_schemes(
    serving_python: Path, data_server: DataServer, tmp_path: Path
) -> None:
    missing = data_server.url("missing.parquet")
    proc = run_stage(
        serving_python, "serving.tuning.download", "--urls", missing, "--dest", str(tmp_path)
    )
    assert proc.returncode == 2
    assert _first_error(proc) == f"{missing}: HTTP 404 File not found"
    proc = run_stage(
        serving_python,
        "serving.tuning.download",
        "--urls",
        "ftp://example.com/x.parquet",
        "--dest",
        str(tmp_path),
    )
    assert proc.returncode == 2
    assert "only http:// and https://" in _first_error(proc)


def _fake_adapter(root: Path) -> Path:
    root.mkdir()
    (root / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (root / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    (root / "fine_tuning_completed.txt").write_text("{}")
    return root


def test_push_with_wrong_or_missing_credentials(
    serving_python: Path, registry: Registry, tmp_path: Path
) -> None:
    source = _fake_adapter(tmp_path / "results")
    image = f"{registry.host}/adapters/denied:v1"
    proc = run_stage(
        serving_python,
        "serving.tuning.push",
        "--source",
        str(source),
        "--image",
        image,
        "--docker-config",
        str(registry.wrong_docker_config),
    )
    assert proc.returncode == 2
    message = _first_error(proc)
    assert f"registry {registry.host} rejected the credentials of user 'kaito'" in message
    assert str(registry.wrong_docker_config) in message and "imagePushSecret" in message
    proc = run_stage(
        serving_python, "serving.tuning.push", "--source", str(source), "--image", image
    )
    assert proc.returncode == 2
    assert "needs credentials" in _first_error(proc)


def test_push_waits_for_the_marker(
    serving_python: Path, registry: Registry, tmp_path: Path
) -> None:
    source = _fake_adapter(tmp_path / "results")
    (source / "fine_tuning_completed.txt").unlink()
    proc = run_stage(
        serving_python,
        "serving.tuning.push",
        "--source",
        str(source),
        "--image",
        f"{registry.host}/adapters/early:v1",
        "--docker-config",
        str(registry.docker_config),
        "--wait",
        "1",
    )
    assert proc.returncode == 2
    assert "fine_tuning_completed.txt did not appear within 1s" in _first_error(proc)
