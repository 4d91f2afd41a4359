"""A small client for the OCI distribution API: enough to push one image with two blobs.

Credentials come from a dockerconfigjson file (a Kubernetes ``imagePushSecret``). A registry
answers 401 with ``WWW-Authenticate: Basic`` (htpasswd) or ``Bearer`` (token service); both are
followed, and a rejection names the registry, the user and the file so the fix is obvious.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp
from multidict import CIMultiDict

from serving.tuning.report import StageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_REF = re.compile(
    r"^(?:(?P<host>[^/]+(?:[.:][^/]*)|localhost)/)?(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?$"
)


@dataclass(frozen=True)
class Reference:
    """``host/repository:tag`` with Docker's defaults filled in."""

    host: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, ref: str) -> Reference:
        match = _REF.match(ref)
        if not match:
            raise StageError(f"{ref!r} is not an image reference like registry/repository:tag")
        host = match["host"] or DOCKER_HUB
        repo = match["repo"]
        if host == DOCKER_HUB and "/" not in repo:
            repo = f"library/{repo}"
        return cls(host, repo, match["tag"] or "latest")

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.host == DOCKER_HUB else self.host

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}:{self.tag}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str  # file the credentials came from, for error messages


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if host.count(":") <= 1 else host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load_credentials(path: Path | None, host: str) -> Credentials | None:
    """The entry for ``host`` in a dockerconfigjson file (``auths`` keyed by host or URL)."""
    if path is None:
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise StageError(f"cannot read docker config {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise StageError(f"docker config {path} is not JSON: {err}") from None
    auths = document.get("auths", {}) if isinstance(document, dict) else {}
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"]
    if host in (DOCKER_HUB, DOCKER_HUB_API):
        keys += ["https://index.docker.io/v1/", "index.docker.io"]
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("username") is not None:
            return Credentials(str(entry["username"]), str(entry.get("password", "")), str(path))
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                problem = f"auths[{key!r}].auth is not base64 user:password"
                raise StageError(f"docker config {path}: {problem}") from None
            return Credentials(user, password, str(path))
    return None


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class Registry:
    """Authenticated requests to one registry host for one repository."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        ref: Reference,
        credentials: Credentials | None,
        *,
        plain_http: bool = False,
    ) -> None:
        self.session = session
        self.ref = ref
        self.credentials = credentials
        scheme = "http" if plain_http or is_loopback(ref.api_host) else "https"
        self.base = f"{scheme}://{ref.api_host}"
        self.authorization: str | None = None

    def url(self, path: str) -> str:
        return f"{self.base}/v2/{self.ref.repository}/{path}"

    def _basic(self) -> str:
        assert self.credentials is not None
        raw = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _rejected(self, status: int) -> StageError:
        if self.credentials is None:
            return StageError(
                f"registry {self.ref.host} needs credentials (HTTP {status}) and the docker "
                "config has none for it; set tuning.output.imagePushSecret to a "
                "kubernetes.io/dockerconfigjson Secret for this registry"
            )
        return StageError(
            f"registry {self.ref.host} rejected the credentials of user "
            f"{self.credentials.username!r} from {self.credentials.source} (HTTP {status}); "
            "check the imagePushSecret"
        )

    async def _authenticate(self, header: str) -> None:
        scheme, params = _challenge(header)
        if self.credentials is None and scheme == "basic":
            raise self._rejected(401)
        if scheme == "basic":
            self.authorization = self._basic()
            return
        if scheme != "bearer" or "realm" not in params:
            raise StageError(f"registry {self.ref.host}: unsupported authentication {header!r}")
        query = {"scope": f"repository:{self.ref.repository}:pull,push"}
        if "service" in params:
            query["service"] = params["service"]
        headers = {"Authorization": self._basic()} if self.credentials else {}
        url = f"{params['realm']}?{urlencode(query)}"
        async with self.session.get(url, headers=headers) as response:
            if response.status in (401, 403):
                raise self._rejected(response.status)
            if response.status != 200:
                raise StageError(f"token service {params['realm']}: HTTP {response.status}")
            body = await response.json(content_type=None)
        token = body.get("token") or body.get("access_token")
        if not token:
            raise StageError(f"token service {params['realm']} returned no token")
        self.authorization = f"Bearer {token}"

    async def request(
        self,
        method: str,
        url: str,
        *,
        expect: tuple[int, ...],
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, CIMultiDict[str], bytes]:
        """One call, authenticating once on 401; any status not in ``expect`` is an error."""
        for attempt in range(2):
            sent = dict(headers or {})
            if self.authorization:
                sent["Authorization"] = self.authorization
            body = data() if callable(data) else data
            try:
                async with self.session.request(method, url, data=body, headers=sent) as response:
                    payload = await response.read()
                    status, answer = response.status, CIMultiDict(response.headers)
            except aiohttp.ClientError as err:
                raise StageError(f"cannot reach registry {self.ref.host}: {err}") from None
            if status == 401 and attempt == 0 and "WWW-Authenticate" in answer:
                await self._authenticate(answer["WWW-Authenticate"])
                continue
            if status in (401, 403):
                raise self._rejected(status)
            if status not in expect:
                detail = payload[:300].decode(errors="replace").strip()
                raise StageError(
                    f"registry {self.ref.host}: {method} {url} answered HTTP {status}: {detail}"
                )
            return status, answer, payload
        raise self._rejected(401)

    async def has_blob(self, digest: str) -> bool:
        status, _, _ = await self.request("HEAD", self.url(f"blobs/{digest}"), expect=(200, 404))
        return status == 200

    async def upload_blob(self, digest: str, path: Path) -> None:
        if await self.has_blob(digest):
            return
        _, headers, _ = await self.request("POST", self.url("blobs/uploads/"), expect=(202,))
        location = urljoin(self.base + "/", headers.get("Location", ""))
        separator = "&" if "?" in location else "?"
        await self.request(
            "PUT",
            f"{location}{separator}{urlencode({'digest': digest})}",
            data=lambda: path.open("rb"),
            headers={"Content-Type": "application/octet-stream"},
            expect=(201, 204),
        )

    async def put_manifest(self, manifest: bytes, media_type: str) -> str:
        _, headers, _ = await self.request(
            "PUT",
            self.url(f"manifests/{self.ref.tag}"),
            data=manifest,
            headers={"Content-Type": media_type},
            expect=(201, 200),
        )
        return headers.get("Docker-Content-Digest", "")
