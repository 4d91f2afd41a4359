"""Install and observe on the real local control plane.

The chart is installed with Helm and its objects are accepted by the apiserver; the operator
then runs out of cluster *as the chart's ServiceAccount* (a bound token), so the RBAC is
proven sufficient by real work; a real Prometheus scrapes it; uninstall leaves nothing behind.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import REPO, Cluster
from ..controllers.conftest import Operator, condition, get_json, wait_until
from ..prometheus_support import Prometheus
from .conftest import SERVICE_ACCOUNT, Release, service_account_kubeconfig

pytestmark = pytest.mark.e2e

DASHBOARD = REPO / "charts" / "kaito" / "dashboards" / "kaito.json"
WS = "workspace-phi-3-mini"


def test_plain_manifests_apply_with_kustomize(cluster: Cluster) -> None:
    try:
        out = cluster.kubectl("apply", "-k", str(REPO / "manifests")).stdout
        assert "deployment.apps/kaito-operator created" in out or "configured" in out, out
        deploy = get_json(cluster, "deployment", "kaito-operator", "-n", "kaito-system")
        assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == "kaito-operator"
        hook = get_json(cluster, "validatingwebhookconfiguration", "kaito-workspace-validation")
        assert hook["webhooks"][0]["clientConfig"]["service"]["name"] == "kaito-webhook"
        for crd in ("workspaces.kaito.sh", "nodeclaims.karpenter.sh"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
        # the same objects again: idempotent
        cluster.kubectl("apply", "-k", str(REPO / "manifests"))
    finally:
        # its webhook (failurePolicy Fail, no pod behind it) would block every other test
        cluster.kubectl(
            "delete", "-k", str(REPO / "manifests" / "base"), "--wait=true", check=False
        )


# ---------------------------------------------------------------- RBAC
def can_i(cluster: Cluster, rel: Release, verb: str, resource: str, *where: str) -> bool:
    proc = cluster.kubectl(
        "auth", "can-i", verb, resource, f"--as={rel.service_account}", *where, check=False
    )
    return proc.stdout.strip() == "yes"


ALLOWED = [
    ("watch", "workspaces.kaito.sh", "-A"),
    ("patch", "workspaces.kaito.sh", "-n", "any"),
    ("patch", "workspaces.kaito.sh", "--subresource=status", "-n", "any"),
    ("update", "workspaces.kaito.sh", "--subresource=finalizers", "-n", "any"),
    ("create", "workspaces.kaito.sh", "-n", "any"),  # InferenceSet replicas
    ("delete", "workspaces.kaito.sh", "-n", "any"),
    ("watch", "inferencesets.kaito.sh", "-A"),
    ("patch", "inferencesets.kaito.sh", "--subresource=status", "-n", "any"),
    ("update", "inferencesets.kaito.sh", "--subresource=finalizers", "-n", "any"),
    ("patch", "inferencesets.kaito.sh", "--subresource=scale", "-n", "any"),
    ("create", "horizontalpodautoscalers.autoscaling", "-n", "any"),
    ("patch", "horizontalpodautoscalers.autoscaling", "-n", "any"),
    ("delete", "horizontalpodautoscalers.autoscaling", "-n", "any"),
    ("create", "nodeclaims.karpenter.sh"),
    ("delete", "nodeclaims.karpenter.sh"),
    ("patch", "nodeclaims.karpenter.sh", "--subresource=status"),
    ("patch", "machines.karpenter.sh", "--subresource=status"),
    ("create", "machines.karpenter.sh"),
    ("watch", "nodes"),
    ("create", "nodes"),  # the KWOK backend
    ("patch", "nodes"),  # accelerator=nvidia on provisioned GPU nodes, as upstream labels them
    ("create", "statefulsets.apps", "-n", "any"),
    ("patch", "statefulsets.apps", "-n", "any"),
    ("create", "controllerrevisions.apps", "-n", "any"),
    ("patch", "services", "-n", "any"),
    ("delete", "services", "-n", "any"),  # a set switching to or from scale to zero
    ("list", "pods", "-A"),
    ("get", "configmaps", "-n", "any"),
    ("watch", "configmaps", "-A"),  # the Workspace-owned default training configs
    ("create", "configmaps", "-n", "any"),
    ("create", "events", "-n", "any"),
    ("create", "jobs.batch", "-n", "any"),
    ("update", "leases.coordination.k8s.io", "-n", "{ns}"),
    ("patch", "secrets/{release}-webhook-cert", "-n", "{ns}"),
    ("patch", "validatingwebhookconfigurations/{release}-workspace-validation"),
]
DENIED = [
    ("list", "secrets", "-A"),
    ("get", "secrets/other", "-n", "{ns}"),
    ("get", "secrets", "-n", "kube-system"),
    ("delete", "namespaces"),
    ("delete", "configmaps", "-n", "any"),
    ("create", "pods", "--subresource=exec", "-n", "any"),
    ("create", "pods", "-n", "any"),
    ("update", "workspaces.kaito.sh", "--subresource=status", "-n", "any"),
    ("delete", "inferencesets.kaito.sh", "-n", "any"),
    ("patch", "inferencesets.kaito.sh", "-n", "any"),  # the user's spec (scale aside)
    ("update", "inferencesets.kaito.sh", "--subresource=status", "-n", "any"),
    ("patch", "horizontalpodautoscalers.autoscaling", "--subresource=status", "-n", "any"),
    ("create", "deployments.apps", "-n", "any"),
    ("update", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io", "-n", "{ns}"),
    ("patch", "validatingwebhookconfigurations/someone-elses"),
    ("patch", "mutatingwebhookconfigurations"),
    ("update", "leases.coordination.k8s.io", "-n", "kube-system"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "serviceaccounts", "--subresource=token", "-n", "{ns}"),
]


def _fill(rel: Release, args: tuple[str, ...]) -> list[str]:
    return [a.format(ns=rel.namespace, release=rel.name) for a in args]


def test_service_account_may_do_what_the_controllers_need_and_no_more(
    cluster: Cluster, release: Release
) -> None:
    wrongly_denied = [a for a in ALLOWED if not can_i(cluster, release, *_fill(release, a))]
    wrongly_allowed = [a for a in DENIED if can_i(cluster, release, *_fill(release, a))]
    assert not wrongly_denied, f"the operator needs: {wrongly_denied}"
    assert not wrongly_allowed, f"the operator should not be allowed: {wrongly_allowed}"


# ---------------------------------------------------------------- webhook certificates
def _serve_webhook(kubeconfig: Path, rel: Release, cert_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "kaito.webhook", "serve", f"--kubeconfig={kubeconfig}",
            "--port=0", f"--cert-dir={cert_dir}",
            f"--service={rel.namespace}/{rel.name}-webhook",
            f"--cert-secret={rel.namespace}/{rel.name}-webhook-cert",
            f"--configuration={rel.name}-workspace-validation",
        ],
        stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert json.loads(line)["ready"] is True, line
    return proc


def test_webhook_mints_its_certificate_into_the_chart_secret_and_caBundle(
    cluster: Cluster, release: Release, tmp_path: Path
) -> None:
    kubeconfig = service_account_kubeconfig(cluster, release, tmp_path / "sa.kubeconfig")
    secret_name = f"{release.name}-webhook-cert"
    assert not get_json(cluster, "secret", secret_name, "-n", release.namespace).get("data")
    cas = []
    for attempt in range(2):  # the second start reuses the stored certificate
        proc = _serve_webhook(kubeconfig, release, tmp_path / f"certs-{attempt}")
        try:
            data = get_json(cluster, "secret", secret_name, "-n", release.namespace)["data"]
            ca = base64.b64decode(data["ca.crt"])
            hook = get_json(
                cluster, "validatingwebhookconfiguration", f"{release.name}-workspace-validation"
            )
            assert base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"]) == ca
            assert (tmp_path / f"certs-{attempt}" / "tls.crt").read_text()
            cas.append(ca)
        finally:
            proc.terminate()
            proc.wait(10)
    assert cas[0] == cas[1]


# ---------------------------------------------------------------- the operator as the chart's SA
@pytest.fixture(scope="module")
def workspace_ns(cluster: Cluster) -> Iterator[str]:
    name = "kaito-install-e2e"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def sa_operator(
    cluster: Cluster, release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    folder = tmp_path_factory.mktemp("sa-operator")
    kubeconfig = service_account_kubeconfig(cluster, release, folder / "sa.kubeconfig")
    op = Operator(
        cluster,
        folder,
        [
            f"--kubeconfig={kubeconfig}",  # the last --kubeconfig wins
            "--leader-elect",
            f"--leader-election-namespace={release.namespace}",
        ],
    )
    op.start()
    yield op
    op.stop()


def test_operator_with_only_the_chart_rbac_makes_a_seed_workspace_ready(
    cluster: Cluster, sa_operator: Operator, workspace_ns: str
) -> None:
    doc = yaml.safe_load((REPO / "examples" / f"{WS}.yaml").read_text())
    cluster.apply(doc, workspace_ns)

    def ready() -> bool:
        ws = cluster.get("workspace", WS, workspace_ns)
        cond = condition(ws, "WorkspaceSucceeded")
        return bool(cond and cond["status"] == "True")

    wait_until("seed Workspace ready", ready, timeout=90)
    assert sa_operator.metric("rest_client_requests_total", code="403") == 0
    assert sa_operator.metric("leader_election_master_status") == 1
    wait_until(
        "kaito_workspace_count succeeded",
        lambda: sa_operator.metric("kaito_workspace_count", phase="succeeded") >= 1,
        timeout=10,
    )
    preset = {"preset_name": "phi-3-mini-4k-instruct"}
    assert sa_operator.metric("kaito_workspace_preset_count", **preset) >= 1
    assert sa_operator.metric("kaito_nodeclaim_count", state="ready") >= 1
    count = "kaito_workspace_provisioning_duration_seconds_count"
    assert sa_operator.metric(count, **preset) >= 1
    assert (
        sa_operator.metric("kaito_workspace_inference_ready_duration_seconds_count", **preset) >= 1
    )


def test_operator_with_only_the_chart_rbac_serves_an_upstream_inferenceset(
    cluster: Cluster, sa_operator: Operator, workspace_ns: str
) -> None:
    """Upstream's example, unchanged: a replica Workspace, its Service and the HPA it asks for."""
    path = REPO / "tests" / "fixtures" / "upstream" / "inferenceset"
    doc = yaml.safe_load((path / "kaito_inferenceset_mistral_7b-instruct.yaml").read_text())
    cluster.apply(doc, workspace_ns)
    name = doc["metadata"]["name"]

    def ready() -> bool:
        iset = cluster.get("inferenceset", name, workspace_ns) or {}
        return (iset.get("status") or {}).get("readyReplicas") == 1

    wait_until("upstream InferenceSet ready", ready, timeout=90)
    wait_until("its HPA", lambda: cluster.get("hpa", name, workspace_ns), timeout=30)
    assert cluster.get("service", name, workspace_ns) is not None
    assert sa_operator.metric("rest_client_requests_total", code="403") == 0
    wait_until(
        "kaito_inferenceset_replicas",
        lambda: sa_operator.metric("kaito_inferenceset_replicas", state="ready") >= 1,
        timeout=10,
    )


# ---------------------------------------------------------------- real Prometheus
@pytest.fixture
def prometheus(sa_operator: Operator, tmp_path: Path) -> Iterator[Prometheus]:
    if shutil.which("prometheus") is None:
        pytest.skip("the prometheus package is not installed")
    prom = Prometheus(tmp_path, {"kaito-operator": f"127.0.0.1:{sa_operator.metrics_port}"})
    yield prom
    prom.stop()


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(r["value"][1]) for r in result]


def test_prometheus_scrapes_the_operator(
    prometheus: Prometheus, sa_operator: Operator, workspace_ns: str
) -> None:
    def scraped() -> bool:
        try:
            return bool(prometheus.query('up{job="kaito-operator"} == 1'))
        except OSError:
            return False

    wait_until("Prometheus scraped the operator", scraped, timeout=60)
    reconciles = prometheus.query('sum(controller_runtime_reconcile_total{controller="workspace"})')
    assert _values(reconciles)[0] >= 1
    depth = prometheus.query("workqueue_depth")
    assert {r["metric"]["name"] for r in depth} >= {"workspace", "machine"}
    assert all(v >= 0 for v in _values(depth))
    requests = prometheus.query('sum by (code) (rest_client_requests_total{code=~"2.."})')
    assert _values(requests) and _values(requests)[0] > 10
    phases = {
        r["metric"]["phase"]: float(r["value"][1])
        for r in prometheus.query("kaito_workspace_count")
    }
    assert set(phases) == {"succeeded", "pending", "error", "deleting"}
    assert phases["succeeded"] >= 1 and phases["error"] == 0

    # every dashboard query is valid PromQL and every operator metric in it is really scraped
    dash = json.loads(DASHBOARD.read_text())
    live = {
        m["__name__"] for m in prometheus.api("series", **{"match[]": '{job="kaito-operator"}'})
    }
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = (
                target["expr"].replace("$__rate_interval", "1m").replace("$__range", "5m")
                .replace("$namespace", ".*").replace("$model", ".*")
                .replace("${inferenceset:regex}", ".*").replace("$inferenceset", ".*")
            )  # fmt: skip
            prometheus.query(expr)  # raises on a PromQL error
            names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))
            ours = {n for n in names if not n.startswith("vllm:")}
            assert ours <= live, f"{panel['title']}: not scraped {ours - live}"


# ---------------------------------------------------------------- uninstall
def test_uninstall_leaves_no_garbage(
    cluster: Cluster, release: Release, sa_operator: Operator, workspace_ns: str
) -> None:
    # the InferenceSet's replica goes with it (garbage collector, then its finalizer)
    cluster.kubectl("-n", workspace_ns, "delete", "inferencesets", "--all", "--wait=false")
    cluster.kubectl("-n", workspace_ns, "delete", "workspace", WS, "--wait=false")
    wait_until(
        "Workspace finalized with its NodeClaims and nodes",
        lambda: (
            not get_json(cluster, "workspaces", "-n", workspace_ns)["items"]
            and not get_json(cluster, "nodeclaims", "-l", f"kaito.sh/workspace={WS}")["items"]
            and not get_json(cluster, "nodes", "-l", f"kaito.sh/workspace={WS}")["items"]
        ),
        timeout=60,
    )
    sa_operator.stop()
    release.run("uninstall", release.name, "--namespace", release.namespace, "--wait")
    selector = f"app.kubernetes.io/instance={release.name}"
    kinds = (
        "deployments,services,secrets,serviceaccounts,configmaps,roles,rolebindings,"
        "clusterroles,clusterrolebindings,validatingwebhookconfigurations"
    )
    left = get_json(cluster, kinds, "-A", "-l", selector)["items"]
    assert not left, [f"{o['kind']}/{o['metadata']['name']}" for o in left]
    assert cluster.get("secret", f"{release.name}-webhook-cert", release.namespace) is None
    assert cluster.get("serviceaccount", SERVICE_ACCOUNT, release.namespace) is None
    # Helm never deletes CRDs from crds/ (it would delete every user's Workspaces with them)
    assert cluster.get("crd", "workspaces.kaito.sh") is not None
