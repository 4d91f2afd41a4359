"""Webhook rules as pure functions, and the HTTP server's behaviour on good and junk input."""

from __future__ import annotations

import base64
import copy
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from kaito.webhook import (
    WebhookServer,
    certs,
    default_patch,
    local_url,
    validate_create,
    validate_update,
    validating_webhook_configuration,
)
from kaito.webhook.addresses import url_problem
from kaito.webhook.view import ClusterView, Policy

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return data


def fields(errors: list[Any]) -> list[str]:
    return [e.field for e in errors]


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_accepted(path: Path) -> None:
    assert validate_create(yaml.safe_load(path.read_text()), None) == []


def test_unknown_preset_lists_accepted_names() -> None:
    ws = load("workspace-phi-3-mini.yaml")
    ws["inference"]["preset"]["name"] = "phi-9"
    (err,) = validate_create(ws, None)
    assert err.field == "inference.preset.name"
    assert err.message.startswith("unknown preset 'phi-9'; accepted: phi-4, ")  # closest first


def test_unknown_instance_type() -> None:
    ws = load("workspace-phi-3-mini.yaml")
    ws["resource"]["instanceType"] = "Standard_Bogus"
    (err,) = validate_create(ws, None)
    assert err.field == "resource.instanceType" and "Standard_NC6s_v3" in err.message


def test_model_too_large_unless_bypassed() -> None:
    ws = load("workspace-falcon-7b-adapter.yaml")
    ws["resource"]["instanceType"] = "Standard_D4s_v5"
    (err,) = validate_create(ws, None)
    assert err.field == "resource.instanceType"
    assert "fit" in err.message and "bypass-resource-checks" in err.message
    ws["metadata"]["annotations"] = {"kaito.sh/bypass-resource-checks": ""}
    assert validate_create(ws, None) == []


def test_adapters_need_a_lora_preset() -> None:
    ws = load("workspace-falcon-7b-adapter.yaml")
    ws["inference"]["preset"]["name"] = "gpt-oss-20b"
    ws["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    assert fields(validate_create(ws, None)) == ["inference.adapters"]


def test_tuning_preset_must_be_tunable() -> None:
    ws = load("workspace-tuning-phi-3.yaml")
    ws["tuning"]["preset"]["name"] = "llama-3.3-70b-instruct"
    (err,) = validate_create(ws, None)
    assert err.field == "tuning.preset.name" and "phi-3-mini-4k-instruct" in err.message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.parquet",
        "http://localhost:8080/x",
        "https://foo.localhost/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://172.16.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0x7f.1/x",
        "http://2130706433/x",
        "http://0.0.0.0/x",
        "ftp://example.com/x",
        "file:///etc/passwd",
        "http://[zz/x",
        "https:///x",
    ],
)
def test_unsafe_urls_are_refused(url: str) -> None:
    assert url_problem(url) is not None
    ws = load("workspace-tuning-phi-3.yaml")
    ws["tuning"]["input"]["urls"] = ["https://example.com/ok.parquet", url]
    (err,) = validate_create(ws, None)
    assert err.field == "tuning.input.urls[1]"
    assert validate_create(ws, None, Policy(allow_private_urls=True)) == []


@pytest.mark.parametrize(
    "url", ["https://huggingface.co/d.parquet", "http://8.8.8.8/x", "https://[2001:4860::1]/x"]
)
def test_public_urls_pass(url: str) -> None:
    assert url_problem(url) is None


def test_wrong_types_become_field_errors() -> None:
    ws = load("workspace-phi-3-mini.yaml")
    ws["resource"]["count"] = "many"
    ws["inference"]["adapters"] = [{"source": {"name": 5}}]
    got = fields(validate_create(ws, None))
    assert "resource.count" in got and "inference.adapters[0].source.name" in got
    assert fields(validate_create([], None)) == ["(root)"]  # type: ignore[arg-type]


def test_name_must_work_as_a_service_name() -> None:
    ws = load("workspace-phi-3-mini.yaml")
    ws["metadata"]["name"] = "1-phi"
    assert fields(validate_create(ws, None)) == ["metadata.name"]


def test_annotation_values_are_checked() -> None:
    ws = load("workspace-phi-3-mini.yaml")
    ws["metadata"]["annotations"] = {"kaito.sh/node-image-family": "windows"}
    (err,) = validate_create(ws, None)
    assert err.field == "metadata.annotations[kaito.sh/node-image-family]"
    assert "ubuntu" in err.message


def _byo() -> dict[str, Any]:
    ws = load("workspace-phi-3-mini-v1beta1.yaml")
    del ws["resource"]["instanceType"]
    return ws


def _node(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


GPU = {
    "apps": "phi-3",
    "nvidia.com/gpu.product": "NVIDIA-A100",
    "nvidia.com/gpu.count": "1",
    "nvidia.com/gpu.memory": "81920",
}


def test_byo_needs_matching_nodes_with_gpu_labels() -> None:
    ws = _byo()
    (err,) = validate_create(ws, ClusterView(selected_nodes=[]))
    assert err.field == "resource.labelSelector" and "no node matches" in err.message
    (err,) = validate_create(
        ws, ClusterView(selected_nodes=[_node("n1", {"apps": "phi-3"}), _node("n2", {"apps": "x"})])
    )
    assert err.field == "resource.labelSelector" and "n1" in err.message and "n2" not in err.message
    assert validate_create(ws, ClusterView(selected_nodes=[_node("n1", GPU)])) == []


def test_byo_preferred_nodes_must_be_selected() -> None:
    ws = _byo()
    ws["resource"]["preferredNodes"] = ["n1", "ghost"]
    assert fields(validate_create(ws, ClusterView(selected_nodes=[_node("n1", GPU)]))) == [
        "resource.preferredNodes[1]"
    ]


def test_byo_nodes_too_small() -> None:
    ws = _byo()
    small = GPU | {"nvidia.com/gpu.memory": "1024"}
    (err,) = validate_create(ws, ClusterView(selected_nodes=[_node("n1", small)]))
    assert err.field == "resource.labelSelector"


def test_update_only_checks_spec_changes() -> None:
    old = load("workspace-phi-3-mini.yaml")
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = ["workspace.finalizer.kaito.sh"]
    new["inference"]["preset"]["name"] = "bogus"  # would fail, but spec unchanged check first
    assert validate_update(new, old) != []
    new["inference"]["preset"]["name"] = old["inference"]["preset"]["name"]
    assert validate_update(new, old) == []
    bad = load("workspace-falcon-7b-adapter.yaml")
    bad_new = copy.deepcopy(bad)
    bad_new["inference"]["adapters"][0]["source"]["urls"] = ["http://10.0.0.1/a"]
    assert fields(validate_update(bad_new, bad)) == ["inference.adapters[0].source.urls"]
    bad_new["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert validate_update(bad_new, bad) == []


def test_v1alpha1_defaulting_keeps_explicit_instance_type() -> None:
    seed = load("workspace-phi-3-mini.yaml")
    assert default_patch(seed, seed["apiVersion"]) == []
    del seed["resource"]["instanceType"]
    assert default_patch(seed, seed["apiVersion"]) == [
        {"op": "add", "path": "/resource/instanceType", "value": "Standard_NC24ads_A100_v4"}
    ]
    assert default_patch(seed, "kaito.sh/v1beta1") == []


def test_certificates_cover_loopback(tmp_path: Path) -> None:
    bundle = certs.load_or_create(tmp_path)
    cert = x509.load_pem_x509_certificate(bundle.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert certs.load_or_create(tmp_path) == bundle  # reused, not re-minted
    ctx = ssl.create_default_context(cadata=bundle.ca_pem.decode())
    assert ctx.cert_store_stats()["x509_ca"] == 1
    assert isinstance(certs.server_context(tmp_path), ssl.SSLContext)


def test_configuration_points_at_local_url() -> None:
    config = validating_webhook_configuration(b"PEM", url_base=local_url(9443, path=""))
    hook = config["webhooks"][0]
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:9443/validate-workspace"
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == b"PEM"
    assert hook["rules"][0]["apiVersions"] == ["v1alpha1", "v1beta1"]


def _review(obj: Any, operation: str = "CREATE", old: Any = None) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "operation": operation, "object": obj, "oldObject": old},
    }


async def test_server_answers_and_survives_junk() -> None:
    server = WebhookServer()
    async with TestClient(TestServer(server.app())) as client:
        resp = await client.post(
            "/validate-workspace", json=_review(load("workspace-phi-3-mini.yaml"))
        )
        body = await resp.json()
        assert body["response"] == {"uid": "u-1", "allowed": True}

        bad = load("workspace-phi-3-mini.yaml")
        bad["resource"]["instanceType"] = "nope"
        body = await (await client.post("/validate-workspace", json=_review(bad))).json()
        assert body["response"]["allowed"] is False
        causes = body["response"]["status"]["details"]["causes"]
        assert causes[0]["field"] == "resource.instanceType"
        assert body["response"]["status"]["message"].startswith("resource.instanceType: ")

        for junk in (b"\x00\xff" * 512 * 1024, b"[1,2]", b'{"request": 5}', b"{}"):
            resp = await client.post("/validate-workspace", data=junk)
            assert resp.status == 400
        for obj in (
            5,
            "x",
            [],
            {"resource": 7},
            {"apiVersion": "kaito.sh/v1beta1", "junk": "x" * 2**20},
        ):
            body = await (await client.post("/validate-workspace", json=_review(obj))).json()
            assert body["response"]["allowed"] is False
        resp = await client.post("/validate-workspace", data=b"x" * (17 * 1024 * 1024))
        assert resp.status == 413
        assert (await client.get("/healthz")).status == 200


async def test_mutating_endpoint_defaults_v1alpha1_only() -> None:
    server = WebhookServer()
    obj = load("workspace-phi-3-mini.yaml")
    del obj["resource"]["instanceType"]
    async with TestClient(TestServer(server.app())) as client:
        body = await (await client.post("/mutate-workspace", json=_review(obj))).json()
        patch = json.loads(base64.b64decode(body["response"]["patch"]))
        assert patch[0]["value"] == "Standard_NC24ads_A100_v4"
        obj["apiVersion"] = "kaito.sh/v1beta1"
        body = await (await client.post("/mutate-workspace", json=_review(obj))).json()
        assert "patch" not in body["response"] and body["response"]["allowed"] is True
