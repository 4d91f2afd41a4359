"""The chart and the plain manifests: generated, consistent with the code, least-privilege."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from kaito.controllers import metrics as kaito_metrics
from kaito.controllers.common import NODECLAIM, WORKSPACE
from kaito.controllers.inferenceset import INFERENCESET
from kaito.controllers.inferenceset_metrics import InferenceSetCollector
from kaito.runtime.cache import Cache
from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.metrics import Metrics
from kaito.webhook.config import ServiceRef, validating_webhook_configuration

REPO = Path(__file__).resolve().parents[3]
BASE = REPO / "manifests" / "base"
DASHBOARD = REPO / "charts" / "kaito" / "dashboards" / "kaito.json"


def _hack_manifests() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kaito_hack_manifests", REPO / "hack" / "manifests.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_docs() -> list[dict[str, Any]]:
    return [
        d for p in sorted(BASE.glob("*.yaml")) if p.name != "kustomization.yaml" for d in _docs(p)
    ]


@pytest.fixture(scope="module")
def helm() -> str:
    cached = sorted(Path.home().glob(".cache/kaito-py/helm*/bin/helm"))
    if not cached and shutil.which("go") is None:
        pytest.skip("no helm binary cached and no Go to build one (hack/helm)")
    return str(_hack_manifests().helm_binary())


def test_committed_manifests_are_what_the_chart_renders(helm: str) -> None:
    module = _hack_manifests()
    stale = module.stale(module.render(helm))
    assert not stale, f"stale generated files {stale}: run hack/manifests"


def test_helm_lint_is_clean(helm: str) -> None:
    for extra in ([], ["--set", "serviceMonitor.enabled=true,grafanaDashboard.enabled=true"]):
        out = subprocess.run(
            [helm, "lint", str(REPO / "charts" / "kaito"), "--strict", *extra],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr


class _StrictLoader(yaml.SafeLoader):
    """Refuses a mapping key given twice, as kubectl does (PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(
                None, None, f"keys given twice: {twice}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def test_plain_manifests_give_no_key_twice() -> None:
    for path in sorted(BASE.glob("*.yaml")):
        list(yaml.load_all(path.read_text(), Loader=_StrictLoader))


def test_rbac_has_no_wildcards_and_no_broad_secret_access() -> None:
    roles = [d for d in _all_docs() if d["kind"] in ("ClusterRole", "Role")]
    assert {r["kind"] for r in roles} == {"ClusterRole", "Role"}
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert "*" not in rule.get("apiGroups", []), rule
            if "secrets" in rule["resources"]:
                assert role["kind"] == "Role" and rule.get("resourceNames"), rule
            assert not {"pods/exec", "namespaces"} & set(rule["resources"]), rule


def test_deployment_is_hardened_and_probed() -> None:
    (deploy,) = [d for d in _all_docs() if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["readinessProbe"] and container["livenessProbe"]
    operator = pod["containers"][0]
    assert operator["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert operator["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["KAITO_BIND_ADDRESS"] == "0.0.0.0"
    assert env["KAITO_FEATURE_GATES"] == "disableNodeAutoProvisioning=false,vLLM=true"


def test_chart_webhook_matches_the_one_the_code_builds() -> None:
    (config,) = [d for d in _all_docs() if d["kind"] == "ValidatingWebhookConfiguration"]
    (service,) = [
        d
        for d in _all_docs()
        if d["kind"] == "Service" and d["metadata"]["name"] == "kaito-webhook"
    ]
    ref = ServiceRef(service["metadata"]["namespace"], service["metadata"]["name"])
    expected = validating_webhook_configuration(b"", service=ref)["webhooks"]
    for hook in expected:
        del hook["clientConfig"]["caBundle"]
        assert hook.pop("namespaceSelector") == {}
    assert config["webhooks"] == expected
    assert [h["rules"][0]["resources"] for h in expected] == [["workspaces"], ["inferencesets"]]
    (deploy,) = [d for d in _all_docs() if d["kind"] == "Deployment"]
    webhook = deploy["spec"]["template"]["spec"]["containers"][1]["command"]
    assert f"--configuration={config['metadata']['name']}" in webhook
    assert f"--service={ref.namespace}/{ref.name}" in webhook


# ---------------------------------------------------------------- dashboard
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_created")


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("definition")]
    return exprs


def dashboard_metrics() -> set[str]:
    names: set[str] = set()
    for expr in dashboard_exprs():
        found = set(SELECTOR.findall(expr)) | set(re.findall(r"label_values\(([^,]+),", expr))
        assert found, f"no metric selector in {expr!r}"
        names |= found
    return names


def operator_metric_names() -> set[str]:
    """Every series name the operator's registry can export (families and their suffixes)."""
    metrics = Metrics(CollectorRegistry())
    client = Client(ClientConfig(host="http://127.0.0.1:9", ssl_context=None), metrics=metrics)
    cache = Cache(client)
    kaito_metrics.register(
        metrics.registry, cache, workspace=WORKSPACE, claim=NODECLAIM, is_leader=lambda: True
    )
    metrics.registry.register(InferenceSetCollector(cache, INFERENCESET))
    return {family.name + suffix for family in metrics.registry.collect() for suffix in SUFFIXES}


def vllm_metric_names() -> set[str] | None:
    """Names vLLM declares, read from the serving venv when one was built (hack, tests)."""
    sources = sorted(
        Path.home().glob(
            ".cache/kaito-py/serving-venv-*/lib/python3*/site-packages/vllm/v1/metrics"
        )
    )
    if not sources:
        return None
    names = set()
    for path in sources[0].glob("*.py"):
        names |= set(re.findall(r'"(vllm:[a-z0-9_]+)"', path.read_text()))
    return {n + suffix for n in names for suffix in SUFFIXES}


async def test_dashboard_parses_and_names_only_exported_operator_metrics() -> None:
    used = dashboard_metrics()
    ours = {n for n in used if not n.startswith("vllm:")}
    assert {
        "kaito_workspace_count",
        "controller_runtime_reconcile_total",
        "workqueue_depth",
    } <= ours
    missing = ours - operator_metric_names()
    assert not missing, f"dashboard uses metrics the operator does not export: {missing}"


def test_dashboard_names_only_metrics_vllm_exports() -> None:
    used = {n for n in dashboard_metrics() if n.startswith("vllm:")}
    assert {"vllm:time_to_first_token_seconds_bucket", "vllm:kv_cache_usage_perc"} <= used
    known = vllm_metric_names()
    if known is None:
        pytest.skip("no serving venv with vLLM under ~/.cache/kaito-py")
    missing = used - known
    assert not missing, f"dashboard uses metrics vLLM does not export: {missing}"


def _template(helm: str, *sets: str) -> list[dict[str, Any]]:
    args = [helm, "template", "kaito", str(REPO / "charts" / "kaito")]
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_model_hub_values_set_hf_endpoint_and_opt_in_to_reading_access_secrets(
    helm: str,
) -> None:
    """Off by default (no Secret access); on, a get-only rule and HF_ENDPOINT in both containers."""
    docs = _template(helm, "modelHub.readAccessSecrets=true", "modelHub.endpoint=https://hub.test")
    roles = [d for d in docs if d["kind"] == "ClusterRole"]
    secret_rules = [r for d in roles for r in d["rules"] if "secrets" in r["resources"]]
    assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    for container in deploy["spec"]["template"]["spec"]["containers"]:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env["HF_ENDPOINT"] == "https://hub.test", container["name"]
    for doc in _template(helm):
        if doc["kind"] == "ClusterRole":
            assert all("secrets" not in r["resources"] for r in doc["rules"]), doc["metadata"]
