"""``python -m serving.fetch --image REF --dest DIR``: pull an adapter (or weights) image into DIR.

Runs as the init container that fills ``/mnt/adapter/<name>``. It speaks the OCI distribution
API directly (aiohttp), so the serving image needs no skopeo or oras binary. Credentials come from
a dockerconfigjson file (the projected imagePullSecret) or a directory of them. Kaito's adapter
images keep their files under ``/data``; an artifact (e.g. pushed by oras) has its files as
layers named by ``org.opencontainers.image.title``. Loopback registries are spoken to over plain
HTTP, as Docker does; others over HTTPS (``--plain-http`` forces HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import aiohttp

from serving.weights import report_termination

DOCKER_HUB = "registry-1.docker.io"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
TITLE = "org.opencontainers.image.title"
RETRIES = 3


class FetchError(RuntimeError):
    """A pull failed; the message says what and, where possible, how to fix it."""


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    reference: str  # tag or digest

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        ref = text.strip().removeprefix("docker://")
        if not ref or " " in ref:
            raise FetchError(f"--image {text!r}: not an image reference like registry/repo:tag")
        first, _, rest = ref.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, remainder = first, rest
        else:
            registry, remainder = DOCKER_HUB, ref
            if "/" not in remainder:
                remainder = "library/" + remainder
        if "@" in remainder:
            repo, reference = remainder.split("@", 1)
        else:
            head, sep, tag = remainder.rpartition(":")
            repo, reference = (head, tag) if sep and "/" not in tag else (remainder, "latest")
        if not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*", repo):
            raise FetchError(f"--image {text!r}: repository {repo!r} is not a valid name")
        return cls(registry, repo, reference)

    @property
    def plain_http(self) -> bool:
        host = (
            self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else self.registry
        )
        return host in {"localhost", "[::1]"} or host.startswith("127.")


def load_credentials(path: Path | None, registry: str) -> tuple[str, str] | None:
    """User and password for ``registry`` from a dockerconfigjson file or a directory of them."""
    if path is None:
        return None
    if path.is_dir():
        files: Iterable[Path] = sorted(p for p in path.rglob("*") if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise FetchError(f"--docker-config {path}: no such file or directory")
    aliases = {registry}
    if registry == DOCKER_HUB:
        aliases |= {"docker.io", "index.docker.io", "https://index.docker.io/v1/"}
    for file in files:
        try:
            data = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        auths = data.get("auths", data) if isinstance(data, dict) else {}
        for key, entry in auths.items() if isinstance(auths, dict) else []:
            host = re.sub(r"^https?://", "", key).rstrip("/")
            if (host not in aliases and key not in aliases) or not isinstance(entry, dict):
                continue
            if entry.get("auth"):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return user, password
            if entry.get("username"):
                return str(entry["username"]), str(entry.get("password", ""))
    return None


class RegistryClient:
    """Just enough of the distribution API to read manifests and blobs, with Basic/Bearer auth."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        ref: ImageRef,
        creds: tuple[str, str] | None,
        plain_http: bool,
        creds_source: str,
    ) -> None:
        self.session = session
        self.ref = ref
        self.creds = creds
        self.creds_source = creds_source
        scheme = "http" if plain_http or ref.plain_http else "https"
        self.base = f"{scheme}://{ref.registry}/v2/{ref.repository}"
        self.auth_header: str | None = None

    async def _authenticate(self, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self.creds is None:
                raise self._denied(401)
            token = base64.b64encode(":".join(self.creds).encode()).decode()
            self.auth_header = f"Basic {token}"
            return
        if scheme.lower() != "bearer":
            raise FetchError(f"registry {self.ref.registry}: unsupported auth scheme {scheme!r}")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        query = {k: v for k, v in fields.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{self.ref.repository}:pull")
        auth = aiohttp.BasicAuth(*self.creds) if self.creds else None
        async with self.session.get(fields.get("realm", ""), params=query, auth=auth) as r:
            if r.status in (401, 403):
                raise self._denied(r.status)
            if r.status != 200:
                raise FetchError(f"token endpoint {fields.get('realm')}: HTTP {r.status}")
            body = await r.json(content_type=None)
        token = body.get("token") or body.get("access_token")
        if not token:
            raise FetchError(f"token endpoint {fields.get('realm')}: no token in the answer")
        self.auth_header = f"Bearer {token}"

    def _denied(self, status: int) -> FetchError:
        where = f"{self.ref.registry}/{self.ref.repository}"
        if self.creds is None:
            return FetchError(
                f"registry {where} needs credentials (HTTP {status}); pass --docker-config "
                "with a dockerconfigjson (the workspace's imagePullSecret)"
            )
        return FetchError(
            f"registry {where} rejected the credentials for user {self.creds[0]!r} from "
            f"{self.creds_source} (HTTP {status}); check the imagePullSecret"
        )

    async def get(self, path: str, accept: str | None = None) -> aiohttp.ClientResponse:
        """GET with auth; the caller must release the response."""
        for attempt in range(2):
            headers = {"Accept": accept} if accept else {}
            if self.auth_header:
                headers["Authorization"] = self.auth_header
            r = await self.session.get(self.base + path, headers=headers)
            if r.status == 401 and attempt == 0 and "WWW-Authenticate" in r.headers:
                challenge = r.headers["WWW-Authenticate"]
                r.release()
                await self._authenticate(challenge)
                continue
            if r.status in (401, 403):
                r.release()
                raise self._denied(r.status)
            if r.status == 404:
                r.release()
                kind, _, name = path.strip("/").partition("/")
                what = "blob" if kind == "blobs" else "tag or digest"
                raise FetchError(
                    f"{self.ref.registry}/{self.ref.repository}: {what} {name!r} not found "
                    "(check the image name and tag)"
                )
            if r.status != 200:
                text = await r.text()
                r.release()
                raise FetchError(f"GET {self.base}{path}: HTTP {r.status}: {text[:200]}")
            return r
        raise AssertionError("unreachable")

    async def manifest(self, reference: str) -> dict[str, Any]:
        r = await self.get(f"/manifests/{reference}", MANIFEST_TYPES)
        try:
            raw = await r.read()
        finally:
            r.release()
        if reference.startswith("sha256:") and _sha256(raw) != reference:
            raise FetchError(f"manifest {reference}: digest mismatch")
        doc: dict[str, Any] = json.loads(raw)
        media = doc.get("mediaType") or r.headers.get("Content-Type", "").split(";")[0]
        if media in INDEX_TYPES or "manifests" in doc:
            chosen = _pick_platform(doc.get("manifests", []))
            return await self.manifest(chosen["digest"])
        return doc

    async def blob(self, digest: str, dest: Path) -> None:
        r = await self.get(f"/blobs/{digest}")
        h = hashlib.sha256()
        try:
            with dest.open("wb") as f:
                async for chunk in r.content.iter_chunked(1 << 20):
                    h.update(chunk)
                    await asyncio.to_thread(f.write, chunk)
        finally:
            r.release()
        if f"sha256:{h.hexdigest()}" != digest:
            raise FetchError(f"blob {digest}: content does not match its digest")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _pick_platform(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    if not manifests:
        raise FetchError("the image index lists no manifests")
    for m in manifests:
        p = m.get("platform", {})
        if p.get("os") == "linux" and p.get("architecture") in ("amd64", None):
            return m
    return manifests[0]


UNPACK = "io.deis.oras.content.unpack"  # oras: a pushed directory, tarred


def _layer_is_tree(media_type: str, annotations: dict[str, str]) -> bool:
    """Image layers (no title) and oras directory tarballs are unpacked; titled files are not."""
    if ".tar" not in media_type:
        return False
    return TITLE not in annotations or annotations.get(UNPACK) == "true"


def _inside(root: Path, name: str) -> bool:
    return (root / name).resolve().is_relative_to(root.resolve())


def _checked(member: tarfile.TarInfo, root: Path) -> tarfile.TarInfo:
    """Refuse what tarfile's "data" filter refuses, for Pythons that lack it (< 3.11.4).

    Debian bookworm's python3 (the serving image's) is 3.11.2: no extraction filters there.
    """
    if member.name.startswith("/") or not _inside(root, member.name):
        raise FetchError(f"layer member {member.name!r} escapes the destination")
    if member.issym() and not _inside(root, str(Path(member.name).parent / member.linkname)):
        raise FetchError(f"layer symlink {member.name!r} points outside the destination")
    if member.islnk() and not _inside(root, member.linkname):
        raise FetchError(f"layer hard link {member.name!r} points outside the destination")
    if member.isdev():
        raise FetchError(f"layer member {member.name!r} is a device file")
    member.mode &= 0o755  # no setuid/setgid, no group/other write
    return member


def _extract_layer(blob: Path, media_type: str, root: Path) -> None:
    if "zstd" in media_type:
        raise FetchError(f"layer type {media_type} (zstd) is not supported; push with gzip")
    with tarfile.open(blob, "r:*") as tar:
        members = []
        for m in tar.getmembers():
            name = Path(m.name)
            if name.name.startswith(".wh."):  # whiteouts: drop the file they hide
                if not _inside(root, str(name.parent)):
                    raise FetchError(f"layer whiteout {m.name!r} escapes the destination")
                hidden = root / name.parent / name.name.removeprefix(".wh.")
                if hidden.is_dir():
                    shutil.rmtree(hidden)
                else:
                    hidden.unlink(missing_ok=True)
                continue
            members.append(_checked(m, root))
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, members=members, filter="data")
        else:
            tar.extractall(root, members=members)  # each member checked above


def _place_file(blob: Path, tree: Path, title: str) -> None:
    target = (tree / title).resolve()
    if not target.is_relative_to(tree.resolve()):
        raise FetchError(f"layer title {title!r} escapes the destination")
    target.parent.mkdir(parents=True, exist_ok=True)
    blob.rename(target)


def _install(tree: Path, dest: Path, image: str) -> list[Path]:
    """Move the pulled files (those under /data when present) into ``dest``."""
    content = tree / "data" if (tree / "data").is_dir() else tree
    items = sorted(content.iterdir())
    if not items:
        raise FetchError(f"{image}: the image holds no files (expected them under /data)")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for item in items:
        target = dest / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        shutil.move(str(item), target)
        written.append(target)
    return written


def _workdir(dest: Path) -> Path:
    """A scratch dir next to ``dest`` (same filesystem, so the final moves are renames)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest.parent))
    (work / "rootfs").mkdir()
    return work


async def pull(
    image: str,
    dest: Path,
    docker_config: Path | None = None,
    plain_http: bool = False,
    limit_s: float = 600,
) -> list[Path]:
    """Pull ``image`` into ``dest`` (its ``/data`` when present); returns the files written."""
    ref = ImageRef.parse(image)
    creds = load_credentials(docker_config, ref.registry)
    work = await asyncio.to_thread(_workdir, dest)
    tree = work / "rootfs"
    try:
        client_timeout = aiohttp.ClientTimeout(total=limit_s, sock_connect=30)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            client = RegistryClient(session, ref, creds, plain_http, str(docker_config))
            manifest = await _retry(lambda: client.manifest(ref.reference))
            layers = manifest.get("layers") or []
            if not layers:
                raise FetchError(f"{image}: the manifest has no layers")
            for i, layer in enumerate(layers):
                blob = work / f"blob-{i}"
                await _retry(lambda layer=layer, blob=blob: client.blob(layer["digest"], blob))
                media = str(layer.get("mediaType", ""))
                annotations = layer.get("annotations") or {}
                title = annotations.get(TITLE)
                if _layer_is_tree(media, annotations):
                    await asyncio.to_thread(_extract_layer, blob, media, tree)
                elif title:
                    await asyncio.to_thread(_place_file, blob, tree, title)
                else:
                    raise FetchError(f"layer {layer['digest']}: media type {media!r} has no file")
        return await asyncio.to_thread(_install, tree, dest, image)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


async def _retry(op: Any) -> Any:
    for attempt in range(RETRIES):
        try:
            return await op()
        except (aiohttp.ClientConnectionError, TimeoutError) as e:
            if attempt == RETRIES - 1:
                raise FetchError(f"registry unreachable after {RETRIES} tries: {e!r}") from None
            await asyncio.sleep(2**attempt)
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m serving.fetch", description=__doc__.splitlines()[0])
    p.add_argument("--image", required=True, help="registry/repository:tag or @sha256:digest")
    p.add_argument("--dest", required=True, type=Path, help="directory to fill")
    p.add_argument(
        "--docker-config",
        type=Path,
        default=Path(os.environ["DOCKER_CONFIG_PATH"])
        if os.environ.get("DOCKER_CONFIG_PATH")
        else None,
        help="dockerconfigjson file, or a directory of them (projected pull secrets)",
    )
    p.add_argument("--plain-http", action="store_true", help="HTTP instead of HTTPS")
    p.add_argument("--timeout", type=float, default=600, help="seconds for the whole pull")
    args = p.parse_args(argv)
    try:
        files = asyncio.run(
            pull(args.image, args.dest, args.docker_config, args.plain_http, args.timeout)
        )
    except FetchError as e:
        fail(f"fetch: {e}")
    except aiohttp.ClientError as e:
        fail(f"fetch: {args.image}: {e!r}")
    print(f"fetch: {args.image} → {args.dest} ({', '.join(f.name for f in files)})")


def fail(message: str) -> NoReturn:
    """Say why on stderr and in the termination log (the Workspace's condition shows it)."""
    print(message, file=sys.stderr)
    report_termination(message)
    raise SystemExit(1)


if __name__ == "__main__":
    main()
