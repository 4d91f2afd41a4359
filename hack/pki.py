"""The local cluster's PKI: one CA, the API server's serving cert, client certs, kubeconfigs.

Standard library only, driven through the openssl command. Every certificate is signed by the
cluster CA in ``<pki>/ca.{crt,key}``; a client's identity is its subject (CN = user,
O = group), which is how the API server's RBAC and Node authorizer see it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

DAYS = "3650"
SERVICE_IP = "10.96.0.1"  # the first address of hack/cluster's service CIDR
CLIENT_EXT = (
    "basicConstraints=CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=clientAuth\n"
)


class PKIError(RuntimeError):
    """openssl refused; the message carries its own words."""


def openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise PKIError(f"openssl {args[0]} failed: {proc.stderr.decode().strip()}")


def server_ext(dns: list[str], ips: list[str]) -> str:
    sans = ",".join([*(f"DNS:{d}" for d in dns), *(f"IP:{i}" for i in ips)])
    return (
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={sans}\n"
    )


def issue(pki: Path, name: str, subject: str, ext: str) -> tuple[Path, Path]:
    """A key and a certificate signed by the cluster CA: ``<name>.crt`` and ``<name>.key``."""
    if (pki / f"{name}.crt").exists():
        return pki / f"{name}.crt", pki / f"{name}.key"
    (pki / f"{name}.ext").write_text(ext)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", subject, cwd=pki)  # fmt: skip
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", DAYS, "-extfile", f"{name}.ext",
            cwd=pki)  # fmt: skip
    return pki / f"{name}.crt", pki / f"{name}.key"


def make_cluster_pki(pki: Path) -> None:
    """CA, API server serving cert (loopback and service SANs), admin client cert, SA key."""
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "sa.key").exists():
        return
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", DAYS, "-subj", "/CN=kaito-local-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=pki,
    )  # fmt: skip
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"]  # fmt: skip
    issue(pki, "apiserver", "/CN=kube-apiserver", server_ext(names, ["127.0.0.1", SERVICE_IP]))
    issue(pki, "admin", "/O=system:masters/CN=kaito-admin", CLIENT_EXT)
    openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)


def write_kubeconfig(
    path: Path, pki: Path, api_port: int, cert: str = "admin", user: str = "kaito-admin"
) -> None:
    """A kubeconfig for the client cert ``<pki>/<cert>.{crt,key}`` against 127.0.0.1."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kaito-local",
                "cluster": {
                    "server": f"https://127.0.0.1:{api_port}",
                    "certificate-authority": str(pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki / f"{cert}.crt"),
                    "client-key": str(pki / f"{cert}.key"),
                },
            }
        ],
        "contexts": [{"name": "kaito-local", "context": {"cluster": "kaito-local", "user": user}}],
        "current-context": "kaito-local",
    }
    # JSON is valid YAML, and keeps this module free of third-party imports.
    path.write_text(json.dumps(config, indent=2) + "\n")
