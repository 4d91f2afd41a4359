"""Webhook configurations that point the API server at our admission endpoints.

Two ways to reach the server: a URL (the local cluster, where the operator runs next to the
API server on 127.0.0.1) or an in-cluster Service.  Either way the caBundle is the webhook CA.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from kaito.api import constants

VALIDATE_PATH = "/validate-workspace"
VALIDATE_INFERENCESET_PATH = "/validate-inferenceset"
MUTATE_PATH = "/mutate-workspace"
VALIDATING_NAME = "kaito-workspace-validation"
MUTATING_NAME = "kaito-workspace-defaulting"


@dataclass(frozen=True)
class ServiceRef:
    """An in-cluster Service in front of the operator's webhook port."""

    namespace: str
    name: str
    port: int = 443


def local_url(port: int, path: str = VALIDATE_PATH, host: str = "127.0.0.1") -> str:
    return f"https://{host}:{port}{path}"


def _client_config(
    ca_pem: bytes, path: str, url_base: str | None, service: ServiceRef | None
) -> dict[str, Any]:
    if (url_base is None) == (service is None):
        raise ValueError("give exactly one of url_base or service")
    config: dict[str, Any] = {"caBundle": base64.b64encode(ca_pem).decode()}
    if url_base is not None:
        config["url"] = url_base.rstrip("/") + path
    else:
        assert service is not None
        config["service"] = {
            "namespace": service.namespace,
            "name": service.name,
            "path": path,
            "port": service.port,
        }
    return config


def _namespace_selector(namespaces: list[str] | None) -> dict[str, Any]:
    if not namespaces:
        return {}
    return {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}
        ]
    }


def _webhook(
    name: str,
    client_config: dict[str, Any],
    versions: list[str],
    operations: list[str],
    namespaces: list[str] | None,
    *,
    resource: str = constants.WORKSPACE_PLURAL,
) -> dict[str, Any]:
    return {
        "name": name,
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": [constants.GROUP],
                "apiVersions": versions,
                "operations": operations,
                "resources": [resource],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": _namespace_selector(namespaces),
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "matchPolicy": "Exact",
        "timeoutSeconds": 10,
    }


def validating_webhook_configuration(
    ca_pem: bytes,
    *,
    url_base: str | None = None,
    service: ServiceRef | None = None,
    namespaces: list[str] | None = None,
    name: str = VALIDATING_NAME,
) -> dict[str, Any]:
    """Validate Workspace and InferenceSet CREATE/UPDATE of both versions; `namespaces`
    limits the scope."""
    hook = _webhook(
        "validation.workspace.kaito.sh",
        _client_config(ca_pem, VALIDATE_PATH, url_base, service),
        [constants.V1ALPHA1, constants.V1BETA1],
        ["CREATE", "UPDATE"],
        namespaces,
    )
    sets = _webhook(
        "validation.inferenceset.kaito.sh",
        _client_config(ca_pem, VALIDATE_INFERENCESET_PATH, url_base, service),
        [constants.V1ALPHA1, constants.V1BETA1],
        ["CREATE", "UPDATE"],
        namespaces,
        resource=constants.INFERENCESET_PLURAL,
    )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kaito-py"}},
        "webhooks": [hook, sets],
    }


def mutating_webhook_configuration(
    ca_pem: bytes,
    *,
    url_base: str | None = None,
    service: ServiceRef | None = None,
    namespaces: list[str] | None = None,
    name: str = MUTATING_NAME,
) -> dict[str, Any]:
    """Optional v1alpha1 defaulting (instanceType) on CREATE; v1beta1 is never mutated."""
    hook = _webhook(
        "defaulting.workspace.kaito.sh",
        _client_config(ca_pem, MUTATE_PATH, url_base, service),
        [constants.V1ALPHA1],
        ["CREATE"],
        namespaces,
    )
    hook["reinvocationPolicy"] = "Never"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kaito-py"}},
        "webhooks": [hook],
    }
