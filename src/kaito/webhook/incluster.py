"""The in-cluster certificate story, without cert-manager.

At start the webhook reads its serving certificate from a Secret (the chart ships it empty).
When the Secret holds nothing usable (missing, expiring, wrong names) it mints a fresh CA and
certificate and writes them back with a resourceVersion precondition, so of several replicas
starting together one wins and the others read the winner's.  Then it copies the CA into the
``caBundle`` of its webhook configuration, which the chart also ships without one.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from typing import Any

from cryptography import x509

from kaito.webhook import certs

log = logging.getLogger(__name__)

RENEW_BEFORE = dt.timedelta(days=30)
"""A certificate that expires sooner than this is replaced at start."""
SECRET_KEYS = {"ca.crt": "ca_pem", "tls.crt": "cert_pem", "tls.key": "key_pem"}


def bundle_from_data(data: dict[str, str] | None) -> certs.CertBundle | None:
    """The bundle in a Secret's (base64) data, or None when a key is missing."""
    data = data or {}
    if not all(data.get(k) for k in SECRET_KEYS):
        return None
    decoded = {attr: base64.b64decode(data[k]) for k, attr in SECRET_KEYS.items()}
    return certs.CertBundle(**decoded)


def bundle_to_data(bundle: certs.CertBundle) -> dict[str, str]:
    return {k: base64.b64encode(getattr(bundle, attr)).decode() for k, attr in SECRET_KEYS.items()}


def usable(bundle: certs.CertBundle, dns_names: list[str], now: dt.datetime | None = None) -> bool:
    """True when the serving certificate names every DNS name and is not about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(bundle.cert_pem)
        x509.load_pem_x509_certificate(bundle.ca_pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    now = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    return set(dns_names) <= set(sans.get_values_for_type(x509.DNSName))


async def ensure_secret(
    api_client: Any, namespace: str, name: str, dns_names: list[str]
) -> certs.CertBundle:
    """Read the serving bundle from Secret `namespace/name`, minting and storing one if needed."""
    from kubernetes_asyncio import client  # noqa: PLC0415
    from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415

    core: Any = client.CoreV1Api(api_client)
    for _ in range(5):
        try:
            secret = await core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            secret = None
        existing = bundle_from_data(secret.data if secret is not None else None)
        if existing is not None and usable(existing, dns_names):
            return existing
        bundle = certs.generate(dns_names, ip_addresses=[])
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace},
            "data": bundle_to_data(bundle),
        }
        try:
            if secret is None:
                await core.create_namespaced_secret(namespace, body)
            else:
                body["metadata"]["resourceVersion"] = secret.metadata.resource_version
                await core.patch_namespaced_secret(name, namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            continue  # another replica wrote first: use theirs
        log.info("stored a new webhook certificate in Secret %s/%s", namespace, name)
        return bundle
    raise RuntimeError(f"Secret {namespace}/{name} kept changing under us; giving up")


async def inject_ca_bundle(api_client: Any, configuration: str, ca_pem: bytes) -> bool:
    """Set every webhook's caBundle in ValidatingWebhookConfiguration `configuration`.

    Returns True when it changed anything.
    """
    from kubernetes_asyncio import client  # noqa: PLC0415

    api: Any = client.AdmissionregistrationV1Api(api_client)
    config = await api.read_validating_webhook_configuration(configuration)
    ca = base64.b64encode(ca_pem).decode()
    hooks = config.webhooks or []
    patch = [
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": config.metadata.resource_version,
        }
    ]
    for i, hook in enumerate(hooks):
        current = hook.client_config.ca_bundle
        if current != ca:
            patch.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": ca})
    if len(patch) == 1:
        return False
    await api.patch_validating_webhook_configuration(
        configuration, patch, _content_type="application/json-patch+json"
    )
    log.info("set the caBundle of ValidatingWebhookConfiguration %s", configuration)
    return True
