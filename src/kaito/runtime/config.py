"""Connection settings: kubeconfig or in-cluster service account, loaded by kubernetes-asyncio.

kubernetes-asyncio's ``client`` package imports every generated API model on import (tens of
MiB). We only need its ``Configuration`` and its kubeconfig/in-cluster loaders, so the two
package ``__init__`` modules are deferred: they run, unchanged, the first time anybody asks
for a name the deferred package does not have yet.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit


def _defer_package_init(name: str) -> ModuleType:
    """Register package ``name`` without running its ``__init__`` until a missing name is read."""
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(name)
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(attr: str) -> Any:
        module.__dict__.pop("__getattr__", None)
        for placeholder in [k for k, v in module.__dict__.items() if v is _PLACEHOLDER]:
            del module.__dict__[placeholder]
        loader.exec_module(module)
        return getattr(module, attr)

    module.__dict__["__getattr__"] = __getattr__
    sys.modules[name] = module
    return module


class _Placeholder:
    """Stands in for names the loaders import but never call on our path."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        real = sys.modules["kubernetes_asyncio.client"].ApiClient
        return real(*args, **kwargs)


_PLACEHOLDER = _Placeholder()


def _load_k8s_modules() -> tuple[Any, Any, Any]:
    if "kubernetes_asyncio.client" not in sys.modules:
        top = _defer_package_init("kubernetes_asyncio")
        client_pkg = _defer_package_init("kubernetes_asyncio.client")
        top.__dict__["client"] = client_pkg
        from kubernetes_asyncio.client.configuration import Configuration  # noqa: PLC0415

        client_pkg.__dict__["Configuration"] = Configuration
        if "ApiClient" not in client_pkg.__dict__:
            client_pkg.__dict__["ApiClient"] = _PLACEHOLDER
    from kubernetes_asyncio.client.configuration import Configuration  # noqa: PLC0415
    from kubernetes_asyncio.config import incluster_config, kube_config  # noqa: PLC0415

    return Configuration, kube_config, incluster_config


@dataclass
class ClientConfig:
    """Where the apiserver is and how to authenticate to it."""

    host: str
    ssl_context: ssl.SSLContext | None
    tls_server_name: str | None = None
    proxy: str | None = None
    # the kubernetes-asyncio Configuration; its hooks refresh exec/in-cluster tokens
    _configuration: Any = field(default=None, repr=False)
    qps_burst: tuple[float, int] | None = (
        None  # client-side limiter; None = off (as controller-runtime)
    )

    @property
    def host_label(self) -> str:
        """The ``host`` label value of REST metrics."""
        return urlsplit(self.host).netloc or self.host

    async def auth_headers(self) -> dict[str, str]:
        """The Authorization header, refreshed through the loader's hooks when they expire."""
        conf = self._configuration
        if conf is None:
            return {}
        token = await conf.get_api_key_with_prefix("BearerToken")
        if token:
            return {"Authorization": str(token)}
        if conf.username or conf.password:
            basic = conf.get_basic_auth_token()
            return {"Authorization": str(basic)} if basic else {}
        return {}

    @classmethod
    def from_configuration(cls, conf: Any) -> ClientConfig:
        ctx = ssl.create_default_context(cafile=conf.ssl_ca_cert)
        if conf.cert_file:
            ctx.load_cert_chain(conf.cert_file, keyfile=conf.key_file)
        if not conf.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        host = str(conf.host).rstrip("/")
        return cls(
            host=host,
            ssl_context=ctx if host.startswith("https") else None,
            tls_server_name=conf.tls_server_name,
            proxy=conf.proxy,
            _configuration=conf,
        )


def _kubeconfig_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The kubeconfig to read: explicit, else $KUBECONFIG, else ~/.kube/config if present."""
    chosen = explicit or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    if chosen is not None:
        return Path(chosen).expanduser().resolve()
    default = Path("~/.kube/config").expanduser()
    return default if default.exists() else None


async def load_config(
    kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None
) -> ClientConfig:
    """Load ``kubeconfig`` (or $KUBECONFIG, ~/.kube/config), else the in-cluster service account."""
    configuration_cls, kube_config, incluster_config = _load_k8s_modules()
    conf = configuration_cls()
    path = await asyncio.to_thread(_kubeconfig_path, kubeconfig)
    if path is None:
        await asyncio.to_thread(incluster_config.load_incluster_config, client_configuration=conf)
        return ClientConfig.from_configuration(conf)
    import yaml  # noqa: PLC0415

    text = await asyncio.to_thread(path.read_text)
    loader = kube_config.KubeConfigLoader(
        config_dict=yaml.safe_load(text),
        config_base_path=str(path.parent),
        active_context=context,
    )
    await loader.load_and_set(conf)
    return await asyncio.to_thread(ClientConfig.from_configuration, conf)
