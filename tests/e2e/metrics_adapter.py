"""prometheus-adapter as a local process, registered as the cluster's custom metrics API.

The adapter is built from the Go module proxy (``hack/build-metrics-adapter.sh``, cached) and
runs beside the local control plane.  The API server reaches it the way aggregated APIs are
reached: an APIService for custom.metrics.k8s.io names a Service, here of type ExternalName
``localhost`` (loopback cannot be an Endpoint), and the aggregator authenticates to it with the
front-proxy client certificate the API server is started with (:func:`front_proxy_args`).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

from .conftest import REPO, Cluster
from .kube_http import ApiError, KubeHttp
from .prometheus_support import free_port

RULES = REPO / "hack" / "prometheus-adapter.yaml"
GROUP = "custom.metrics.k8s.io"
SERVICE = "kaito-custom-metrics"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def front_proxy_args(pki: Path) -> str:
    """kube-apiserver flags for the aggregation layer, with a front-proxy CA made in `pki`."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "front-proxy-ca.key",
        "-out", "front-proxy-ca.crt", "-days", "30", "-subj", "/CN=front-proxy-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=pki,
    )  # fmt: skip
    (pki / "client.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "front-proxy-client.key",
        "-out", "front-proxy-client.csr", "-subj", "/CN=front-proxy-client", cwd=pki,
    )  # fmt: skip
    _openssl("x509", "-req", "-in", "front-proxy-client.csr", "-CA", "front-proxy-ca.crt",
             "-CAkey", "front-proxy-ca.key", "-CAcreateserial", "-out", "front-proxy-client.crt",
             "-days", "30", "-extfile", "client.ext", cwd=pki)  # fmt: skip
    return " ".join(
        [
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        ]
    )


def adapter_binary() -> Path:
    out = subprocess.run(
        [str(REPO / "hack" / "build-metrics-adapter.sh")],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


class MetricsAdapter:
    """One prometheus-adapter process and its APIService registration."""

    def __init__(self, cluster: Cluster, prometheus_url: str, directory: Path) -> None:
        self.cluster = cluster
        self.api = KubeHttp(cluster.kubeconfig)
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        kubeconfig = str(cluster.kubeconfig)
        self.log_path = directory / "prometheus-adapter.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                str(adapter_binary()), f"--secure-port={self.port}", "--bind-address=127.0.0.1",
                f"--cert-dir={directory / 'certs'}", f"--lister-kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--prometheus-url={prometheus_url}", "--metrics-relist-interval=5s",
                f"--config={RULES}", "--v=2",
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._register()

    def _register(self) -> None:
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": "kube-system"},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        }
        with contextlib.suppress(ApiError):
            self.api.post("/api/v1/namespaces/kube-system/services", service)
        for version in ("v1beta1", "v1beta2"):
            body = {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": f"{version}.{GROUP}"},
                "spec": {
                    "group": GROUP,
                    "version": version,
                    "service": {"namespace": "kube-system", "name": SERVICE, "port": self.port},
                    "insecureSkipTLSVerify": True,
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100 if version == "v1beta2" else 50,
                },
            }
            with contextlib.suppress(ApiError):
                self.api.post("/apis/apiregistration.k8s.io/v1/apiservices", body)

    def available(self) -> bool:
        for version in ("v1beta1", "v1beta2"):
            try:
                svc = self.api.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{version}.{GROUP}")
            except ApiError:
                return False
            conditions = (svc.get("status") or {}).get("conditions") or ()
            conds = {c["type"]: c["status"] for c in conditions}
            if conds.get("Available") != "True":
                return False
        return True

    def wait_available(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            if self.available():
                return
            time.sleep(0.5)
        raise AssertionError(
            "the custom metrics APIService never became Available:\n"
            + self.log_path.read_text()[-3000:]
        )

    def pod_metric(self, namespace: str, metric: str, selector: str) -> dict[str, float]:
        """What the HPA reads: the metric per pod, through the API server's aggregator."""
        path = f"/apis/{GROUP}/v1beta2/namespaces/{namespace}/pods/*/{metric}"
        items = self.api.get(path, labelSelector=selector)["items"]
        out = {}
        for item in items:
            value = str(item["value"])
            number = float(value[:-1]) / 1000 if value.endswith("m") else float(value)
            out[item["describedObject"]["name"]] = number
        return out

    def stop(self) -> None:
        for version in ("v1beta1", "v1beta2"):
            with contextlib.suppress(ApiError, OSError):
                self.api.delete(f"/apis/apiregistration.k8s.io/v1/apiservices/{version}.{GROUP}")
        with contextlib.suppress(ApiError, OSError):
            self.api.delete(f"/api/v1/namespaces/kube-system/services/{SERVICE}")
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
