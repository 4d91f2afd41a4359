"""Run the Workspace admission webhook on its own (the operator embeds the same server).

    python -m kaito.webhook serve --port 9443 --cert-dir DIR [--kubeconfig K] [--register]
    python -m kaito.webhook config --port 9443 --cert-dir DIR   # print the configurations

``--register`` applies Validating/MutatingWebhookConfigurations pointing at
https://127.0.0.1:<port>, with the CA from DIR as caBundle, and removes them on exit.

In cluster (the chart's webhook container) the certificate lives in a Secret instead and the
configuration is the chart's own; ``--service``, ``--cert-secret`` and ``--configuration``
(see :mod:`kaito.webhook.incluster`):

    python -m kaito.webhook serve --host 0.0.0.0 --cert-dir /tmp/certs \
        --service kaito-system/kaito-webhook --cert-secret kaito-system/kaito-webhook-cert \
        --configuration kaito-workspace-validation
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from kaito import featuregates
from kaito.hub import HubClient, HubPresets
from kaito.provisioner.azure.settings import AzureSettings
from kaito.webhook import certs, incluster
from kaito.webhook.config import (
    local_url,
    mutating_webhook_configuration,
    validating_webhook_configuration,
)
from kaito.webhook.server import WebhookServer, kube_lookups
from kaito.webhook.view import Policy


def _configurations(args: argparse.Namespace, ca_pem: bytes, port: int) -> list[dict[str, Any]]:
    base = local_url(port, path="", host=args.host)
    namespaces = args.namespace or None
    configs = [validating_webhook_configuration(ca_pem, url_base=base, namespaces=namespaces)]
    if not args.no_defaulting:
        configs.append(mutating_webhook_configuration(ca_pem, url_base=base, namespaces=namespaces))
    return configs


async def _apply(api_client: Any, configs: list[dict[str, Any]], delete: bool = False) -> None:
    from kubernetes_asyncio import client  # noqa: PLC0415
    from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415

    api: Any = client.AdmissionregistrationV1Api(api_client)
    for config in configs:
        name = config["metadata"]["name"]
        validating = config["kind"] == "ValidatingWebhookConfiguration"
        if delete:
            with contextlib.suppress(ApiException):
                if validating:
                    await api.delete_validating_webhook_configuration(name)
                else:
                    await api.delete_mutating_webhook_configuration(name)
            continue
        try:
            if validating:
                await api.create_validating_webhook_configuration(config)
            else:
                await api.create_mutating_webhook_configuration(config)
        except ApiException as exc:
            if exc.status != 409:
                raise
            patch = {"webhooks": config["webhooks"]}
            if validating:
                await api.patch_validating_webhook_configuration(name, patch)
            else:
                await api.patch_mutating_webhook_configuration(name, patch)


def _namespaced(value: str, flag: str) -> tuple[str, str]:
    namespace, _, name = value.partition("/")
    if not namespace or not name:
        raise SystemExit(f"{flag} takes NAMESPACE/NAME, got {value!r}")
    return namespace, name


async def _api_client(args: argparse.Namespace) -> Any:
    """From --kubeconfig, else the pod's ServiceAccount when the in-cluster flags ask for one."""
    from kubernetes_asyncio import client  # noqa: PLC0415
    from kubernetes_asyncio import config as kube_config  # noqa: PLC0415

    if args.kubeconfig:
        return await kube_config.new_client_from_config(config_file=str(args.kubeconfig))
    if args.cert_secret or args.configuration:
        configuration = client.Configuration()
        load_incluster: Any = kube_config.load_incluster_config
        load_incluster(client_configuration=configuration)
        return client.ApiClient(configuration=configuration)
    return None


async def _bundle(args: argparse.Namespace, api_client: Any) -> certs.CertBundle:
    if not args.cert_secret:
        return certs.load_or_create(args.cert_dir, ip_addresses=[args.host])
    if not args.service:
        raise SystemExit("--cert-secret needs --service NAMESPACE/NAME (the certificate's names)")
    namespace, name = _namespaced(args.cert_secret, "--cert-secret")
    svc_namespace, svc_name = _namespaced(args.service, "--service")
    dns_names = certs.service_dns_names(svc_name, svc_namespace)
    bundle = await incluster.ensure_secret(api_client, namespace, name, dns_names)
    certs.write(bundle, args.cert_dir)
    return bundle


async def _serve(args: argparse.Namespace) -> int:
    api_client = await _api_client(args)
    bundle = await _bundle(args, api_client)
    if args.configuration:
        await incluster.inject_ca_bundle(api_client, args.configuration, bundle.ca_pem)
    policy, cloud = _policy(args)
    hub_client = HubClient()  # HF_ENDPOINT, as the Hugging Face libraries read it
    server = WebhookServer(
        kube_lookups(api_client, cloud.describe if cloud else None) if api_client else None,
        policy,
        hub=HubPresets(hub_client),
    )
    port = await server.start(args.host, args.port, certs.server_context(args.cert_dir))
    configs = _configurations(args, bundle.ca_pem, port)
    if args.register and api_client is not None:
        await _apply(api_client, configs)
    print(json.dumps({"ready": True, "port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if args.register and api_client is not None:
        await _apply(api_client, configs, delete=True)
    await server.stop()
    await hub_client.close()
    if cloud is not None:
        await cloud.close()
    if api_client is not None:
        await api_client.close()
    return 0


def _policy(args: argparse.Namespace) -> tuple[Policy, Any]:
    """The operator's settings (same flags and environment), and Azure's SKU list if on."""
    try:
        gates = featuregates.parse(args.feature_gates)
    except featuregates.FeatureGateError as exc:
        raise SystemExit(str(exc)) from None
    provisioner = args.node_provisioner
    if gates.enabled("disableNodeAutoProvisioning"):
        provisioner = "byo"
    cloud = None
    location = None
    if provisioner == "azure":
        from kaito.provisioner.azure import AzureSettings  # noqa: PLC0415 (cloud SDK import)
        from kaito.provisioner.azure.skus import ResourceSkus  # noqa: PLC0415

        settings = AzureSettings.from_args(args)
        cloud, location = ResourceSkus(settings), settings.location
    policy = Policy(
        allow_private_urls=args.allow_private_urls,
        node_provisioner=provisioner,
        enable_mig=gates.enabled("enableMIG"),
        enable_accelerator=gates.enabled("enableAccelerator"),
        azure_location=location,
    )
    return policy, cloud


def _env(name: str, default: str) -> str:
    return os.environ.get(f"KAITO_{name.upper().replace('-', '_')}", default)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kaito.webhook")
    parser.add_argument("command", choices=["serve", "config"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--kubeconfig", type=Path)
    parser.add_argument("--register", action="store_true")
    parser.add_argument("--namespace", action="append", help="limit admission to a namespace")
    parser.add_argument("--no-defaulting", action="store_true")
    parser.add_argument("--allow-private-urls", action="store_true")
    parser.add_argument("--service", help="NAMESPACE/NAME of the Service in front of the webhook")
    parser.add_argument(
        "--cert-secret", help="NAMESPACE/NAME of the Secret holding the certificate"
    )
    parser.add_argument("--configuration", help="ValidatingWebhookConfiguration to set caBundle in")
    parser.add_argument(
        "--node-provisioner",
        choices=("kwok", "azure", "byo", "external"),
        default=_env("node-provisioner", "kwok"),
        help="the operator's node provisioner (env KAITO_NODE_PROVISIONER)",
    )
    parser.add_argument(
        "--feature-gates",
        default=_env("feature-gates", ""),
        help="the operator's feature gates (env KAITO_FEATURE_GATES)",
    )
    AzureSettings.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.command == "config":
        bundle = certs.load_or_create(args.cert_dir, ip_addresses=[args.host])
        for config in _configurations(args, bundle.ca_pem, args.port):
            print("---")
            print(json.dumps(config, indent=2))
        return 0
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
