"""A self-signed CA and a serving certificate for the admission webhook.

The API server only calls webhooks over TLS and checks the certificate against the caBundle
registered in the webhook configuration, so the operator mints both itself: no cert-manager.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"


@dataclass(frozen=True)
class CertBundle:
    """PEM-encoded CA certificate, serving certificate and its private key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use to reach an in-cluster Service."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def generate(
    dns_names: list[str] | None = None,
    ip_addresses: list[str] | None = None,
    days: int = 365,
) -> CertBundle:
    """Mint a CA and a serving cert for the given SANs (default: localhost, 127.0.0.1, ::1)."""
    dns_names = ["localhost"] if dns_names is None else dns_names
    ip_addresses = ["127.0.0.1", "::1"] if ip_addresses is None else ip_addresses
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kaito-webhook-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0] if dns_names else ip_addresses[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return CertBundle(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def write(bundle: CertBundle, directory: Path) -> None:
    """Store the bundle as ca.crt, tls.crt and tls.key (the key readable by the owner only)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CA_FILE).write_bytes(bundle.ca_pem)
    (directory / CERT_FILE).write_bytes(bundle.cert_pem)
    key = directory / KEY_FILE
    key.touch(mode=0o600)
    key.write_bytes(bundle.key_pem)


def load(directory: Path) -> CertBundle | None:
    """The bundle stored in `directory`, or None when any file is missing."""
    paths = [directory / n for n in (CA_FILE, CERT_FILE, KEY_FILE)]
    if not all(p.exists() for p in paths):
        return None
    ca, cert, key = (p.read_bytes() for p in paths)
    return CertBundle(ca_pem=ca, cert_pem=cert, key_pem=key)


def load_or_create(
    directory: Path, dns_names: list[str] | None = None, ip_addresses: list[str] | None = None
) -> CertBundle:
    """Reuse the bundle in `directory` or mint and store a new one."""
    bundle = load(directory)
    if bundle is None:
        bundle = generate(dns_names, ip_addresses)
        write(bundle, directory)
    return bundle


def server_context(directory: Path) -> ssl.SSLContext:
    """A TLS server context from tls.crt/tls.key in `directory`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(directory / CERT_FILE, directory / KEY_FILE)
    return context
