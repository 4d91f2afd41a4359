"""Admission for Workspaces: catalog- and cluster-aware validation, served over TLS by aiohttp.

Structural rules are CEL in the CRD; this package adds what needs the preset catalog or the
cluster.  The operator starts :class:`WebhookServer` and registers it with
:func:`validating_webhook_configuration` (URL for the local cluster, Service in-cluster).
"""

from kaito.webhook.certs import CertBundle, generate, load_or_create, server_context
from kaito.webhook.config import (
    MUTATE_PATH,
    VALIDATE_PATH,
    ServiceRef,
    local_url,
    mutating_webhook_configuration,
    validating_webhook_configuration,
)
from kaito.webhook.server import Lookups, NodeLister, WebhookServer, kube_lookups
from kaito.webhook.validation import (
    check_spec,
    default_patch,
    validate_create,
    validate_update,
)
from kaito.webhook.view import ClusterView, FieldError, Policy

__all__ = [
    "MUTATE_PATH",
    "VALIDATE_PATH",
    "CertBundle",
    "ClusterView",
    "FieldError",
    "Lookups",
    "NodeLister",
    "Policy",
    "ServiceRef",
    "WebhookServer",
    "check_spec",
    "default_patch",
    "generate",
    "kube_lookups",
    "load_or_create",
    "local_url",
    "mutating_webhook_configuration",
    "server_context",
    "validate_create",
    "validate_update",
    "validating_webhook_configuration",
]
