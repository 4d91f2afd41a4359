"""Is a URL safe for the tuning job to download?  Refuse loopback, private, link-local and
cloud-metadata targets, so a Workspace cannot make the cluster fetch its own secrets (SSRF).

Only literal addresses and obviously local names are judged; no DNS lookup happens here, which
keeps admission fast and free of blocking calls.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.google",
        "metadata.internal",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def literal_ip(host: str) -> IpAddress | None:
    """The address a host string denotes by itself, including forms like 0x7f.1 or 2130706433."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _blocked(ip: IpAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _blocked(ip.ipv4_mapped)
    for flag, what in (
        (ip.is_loopback, "a loopback"),
        (ip.is_link_local, "a link-local (cloud metadata)"),
        (ip.is_private, "a private"),
        (ip.is_unspecified, "an unspecified"),
        (ip.is_multicast, "a multicast"),
        (ip.is_reserved, "a reserved"),
    ):
        if flag:
            return f"points at {what} address ({ip})"
    return None


def url_problem(url: str) -> str | None:
    """Why `url` may not be downloaded, or None when it is acceptable."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not host:
        return "has no host name"
    host = host.rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "points at localhost"
    if host in METADATA_HOSTS:
        return f"points at a cloud metadata service ({host})"
    ip = literal_ip(host)
    if ip is not None:
        return _blocked(ip)
    return None
