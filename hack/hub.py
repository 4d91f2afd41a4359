#!/usr/bin/env python3
"""A local Hugging Face hub look-alike: the model API and ``resolve/`` routes over directories.

Nothing can be downloaded from the real hub here, so the real clients (Kaito's hub client,
``huggingface_hub``, transformers and vLLM through ``HF_ENDPOINT``) are pointed at this server.
It speaks what they rely on:

* ``GET /api/models/{owner}/{name}`` and ``.../revision/{rev}``: model info (``sha``,
  ``siblings``, ``gated``, ``config``);
* ``GET /api/models/{owner}/{name}/tree/{rev}[/{path}]``: the file listing with sizes and LFS
  info, paginated with a ``Link: <...>; rel="next"`` header like the hub;
* ``POST /api/models/{owner}/{name}/paths-info/{rev}``: listing entries for given paths;
* ``HEAD``/``GET /{owner}/{name}/resolve/{rev}/{path}``: the bytes, with ``X-Repo-Commit``,
  ``ETag`` (``X-Linked-Etag``/``X-Linked-Size`` for LFS files) and byte ranges.

Errors carry the hub's ``X-Error-Code`` (``RepoNotFound``, ``GatedRepo``, ``EntryNotFound``,
``RevisionNotFound``). A gated repository's files need ``Authorization: Bearer <token>`` with a
token given by ``--token``; its listing is public, as on the hub.

Repositories come from ``--root`` (``<owner>/<name>/`` directories; an optional ``hub.json``
lists files too large to carry by size only, and ``"gated": true``; see tests/fixtures/hub) and
from ``--publish OWNER/NAME=DIR`` (a real model directory, e.g. the tiny test model). Loopback
test hooks: ``POST /admin/fail {"status": 503, "count": N}`` answers the next N API and file
requests with that status; ``GET /admin/requests`` lists the requests served.

    python hack/hub.py --root tests/fixtures/hub --publish kaito-test/tiny-llama=DIR --token T

prints one JSON line (``url``, ``pid``) and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from aiohttp import web

MANIFEST = "hub.json"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".model")
PAGE_SIZE = 1000  # the hub's page size for tree listings


@dataclass(frozen=True)
class RepoFile:
    """One file of a repository; ``local`` is None for a file known by its size only."""

    path: str
    size: int
    local: Path | None

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES) or self.local is None

    def _digest(self, kind: str) -> str:
        if self.local is None:  # not carried: a stable stand-in, never served
            return hashlib.new(kind, f"{self.path}:{self.size}".encode()).hexdigest()
        data = self.local.read_bytes()
        if kind == "sha1":  # git's blob id
            return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return hashlib.sha256(data).hexdigest()

    @cached_property
    def git_oid(self) -> str:
        return self._digest("sha1")

    @cached_property
    def sha256(self) -> str:
        return self._digest("sha256")


@dataclass
class Repo:
    """A model repository: its files, whether it is gated, and one commit (``sha``)."""

    repo_id: str
    files: dict[str, RepoFile]
    gated: bool = False
    sha: str = field(default="")

    def __post_init__(self) -> None:
        if not self.sha:
            listing = json.dumps(sorted((f.path, f.size) for f in self.files.values()))
            self.sha = hashlib.sha1(f"{self.repo_id}\n{listing}".encode()).hexdigest()

    @classmethod
    def load(cls, repo_id: str, directory: Path) -> Repo:
        manifest: dict[str, Any] = {}
        if (directory / MANIFEST).is_file():
            manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        files: dict[str, RepoFile] = {}
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory).as_posix()
            if path.is_file() and relative != MANIFEST and not relative.startswith("."):
                files[relative] = RepoFile(relative, path.stat().st_size, path)
        for relative, size in (manifest.get("files") or {}).items():
            files.setdefault(relative, RepoFile(relative, int(size), None))
        return cls(repo_id, files, gated=bool(manifest.get("gated")))

    def config(self) -> dict[str, Any]:
        entry = self.files.get("config.json")
        if entry is None or entry.local is None:
            return {}
        try:
            loaded = json.loads(entry.local.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        keys = ("architectures", "model_type")
        return {k: loaded[k] for k in keys if k in loaded} if isinstance(loaded, dict) else {}

    def entry(self, f: RepoFile) -> dict[str, Any]:
        """A tree/paths-info entry, as the hub writes it."""
        item: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
        if f.lfs:
            item["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
        return item

    def directories(self) -> set[str]:
        dirs: set[str] = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return dirs


@dataclass
class Hub:
    """The served repositories, accepted tokens, fault injection and a request log."""

    repos: dict[str, Repo]
    tokens: frozenset[str] = frozenset()
    page_size: int = PAGE_SIZE
    fail_status: int = 0
    fail_count: int = 0
    requests: list[str] = field(default_factory=list)

    def find(self, owner: str, name: str) -> Repo | None:
        return self.repos.get(f"{owner}/{name}".lower())


HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": message},
        status=status,
        headers={"X-Error-Code": code, "X-Error-Message": message},
    )


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def _repo_or_error(request: web.Request) -> Repo | web.Response:
    hub: Hub = request.app[HUB]
    repo = hub.find(request.match_info["owner"], request.match_info["name"])
    if repo is None:
        token = _token(request)
        message = (
            "Repository Not Found for url: "
            f"{request.url}. Please make sure you specified the correct `repo_id`."
        )
        return _error(404 if token else 401, "RepoNotFound", message)
    revision = request.match_info.get("revision", "main")
    if revision not in ("main", repo.sha):
        return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    return repo


def _authorized(request: web.Request, repo: Repo) -> web.Response | None:
    if not repo.gated:
        return None
    hub: Hub = request.app[HUB]
    token = _token(request)
    if token is None:
        return _error(
            401,
            "GatedRepo",
            f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
            "authenticated to access it. Please log in.",
        )
    if token not in hub.tokens:
        return _error(
            403,
            "GatedRepo",
            f"Access to model {repo.repo_id} is restricted and you are not in the authorized list.",
        )
    return None


async def model_info(request: web.Request) -> web.Response:
    repo = _repo_or_error(request)
    if isinstance(repo, web.Response):
        return repo
    blobs = request.query.get("blobs", "").lower() in ("1", "true")
    siblings = []
    for f in repo.files.values():
        sibling: dict[str, Any] = {"rfilename": f.path}
        if blobs:
            sibling |= {"size": f.size, "blobId": f.git_oid}
            if f.lfs:
                sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
        siblings.append(sibling)
    owner = repo.repo_id.split("/", 1)[0]
    return web.json_response(
        {
            "_id": repo.sha[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": owner,
            "sha": repo.sha,
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "private": False,
            "disabled": False,
            "gated": "manual" if repo.gated else False,
            "downloads": 0,
            "likes": 0,
            "library_name": "transformers",
            "tags": ["transformers", "safetensors"],
            "pipeline_tag": "text-generation",
            "config": repo.config(),
            "siblings": siblings,
            "usedStorage": sum(f.size for f in repo.files.values()),
        }
    )


def _listing(repo: Repo, base: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = f"{base.strip('/')}/" if base.strip("/") else ""
    out: list[dict[str, Any]] = []
    for directory in sorted(repo.directories()):
        if directory.startswith(prefix) and (recursive or "/" not in directory[len(prefix) :]):
            oid = hashlib.sha1(directory.encode()).hexdigest()
            out.append({"type": "directory", "oid": oid, "size": 0, "path": directory})
    for f in sorted(repo.files.values(), key=lambda f: f.path):
        if f.path.startswith(prefix) and (recursive or "/" not in f.path[len(prefix) :]):
            out.append(repo.entry(f))
    return out


async def tree(request: web.Request) -> web.Response:
    repo = _repo_or_error(request)
    if isinstance(repo, web.Response):
        return repo
    hub: Hub = request.app[HUB]
    base = request.match_info.get("path", "")
    recursive = request.query.get("recursive", "").lower() in ("1", "true")
    entries = _listing(repo, base, recursive)
    if base and not entries and base.strip("/") not in repo.files:
        return _error(404, "EntryNotFound", f"{base} does not exist on {repo.sha}")
    start = int(request.query.get("cursor", "0") or 0)
    page = entries[start : start + hub.page_size]
    headers = {}
    if start + hub.page_size < len(entries):
        query = {**request.query, "cursor": str(start + hub.page_size)}
        link = request.url.with_query(query)
        headers["Link"] = f'<{link}>; rel="next"'
    return web.json_response(page, headers=headers)


async def paths_info(request: web.Request) -> web.Response:
    repo = _repo_or_error(request)
    if isinstance(repo, web.Response):
        return repo
    if request.content_type == "application/json":
        body = await request.json()
        paths = list(body.get("paths") or [])
    else:
        form = await request.post()
        paths = [str(p) for p in form.getall("paths", [])]
    entries = []
    dirs = repo.directories()
    for path in (p.strip("/") for p in paths):
        if path in repo.files:
            entries.append(repo.entry(repo.files[path]))
        elif path in dirs:
            oid = hashlib.sha1(path.encode()).hexdigest()
            entries.append({"type": "directory", "oid": oid, "size": 0, "path": path})
    return web.json_response(entries)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


async def resolve(request: web.Request) -> web.StreamResponse:
    repo = _repo_or_error(request)
    if isinstance(repo, web.Response):
        return repo
    denied = _authorized(request, repo)
    if denied is not None:
        return denied
    path = request.match_info["path"]
    f = repo.files.get(path)
    if f is None or f.local is None:
        why = "is not carried by this local hub" if f is not None else "does not exist"
        return _error(404, "EntryNotFound", f"{path} {why} on {repo.repo_id}@{repo.sha}")
    headers = {
        "X-Repo-Commit": repo.sha,
        "ETag": f'"{f.git_oid}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    if f.lfs:
        headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)}
    start, end = 0, f.size - 1
    status = 200
    match = _RANGE.match(request.headers.get("Range", ""))
    if match and (match.group(1) or match.group(2)):
        if match.group(1):
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else f.size - 1
        else:  # a suffix range: the last N bytes
            start = max(0, f.size - int(match.group(2)))
        end = min(end, f.size - 1)
        if start > end:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{f.size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return web.Response(status=status, headers=headers)
    local = f.local
    data = await asyncio.to_thread(lambda: local.read_bytes()[start : end + 1])
    return web.Response(status=status, body=data, headers=headers)


@web.middleware
async def _faults_and_log(request: web.Request, handler: Any) -> web.StreamResponse:
    hub: Hub = request.app[HUB]
    if not request.path.startswith("/admin/"):
        hub.requests.append(f"{request.method} {request.path_qs}")
        if hub.fail_count > 0:
            hub.fail_count -= 1
            return _error(hub.fail_status, "InjectedFault", "fault injected by the local hub")
    response: web.StreamResponse = await handler(request)
    return response


async def admin_fail(request: web.Request) -> web.Response:
    hub: Hub = request.app[HUB]
    body = await request.json()
    hub.fail_status = int(body.get("status", 503))
    hub.fail_count = int(body.get("count", 1))
    return web.json_response({"status": hub.fail_status, "count": hub.fail_count})


async def admin_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[HUB].requests)


def make_app(hub: Hub) -> web.Application:
    app = web.Application(middlewares=[_faults_and_log])
    app[HUB] = hub
    repo = "/{owner}/{name}"
    app.router.add_get(f"/api/models{repo}", model_info)
    app.router.add_get(f"/api/models{repo}/revision/{{revision}}", model_info)
    app.router.add_get(f"/api/models{repo}/tree/{{revision}}", tree)
    app.router.add_get(f"/api/models{repo}/tree/{{revision}}/{{path:.*}}", tree)
    app.router.add_post(f"/api/models{repo}/paths-info/{{revision}}", paths_info)
    app.router.add_get(f"{repo}/resolve/{{revision}}/{{path:.+}}", resolve)
    app.router.add_post("/admin/fail", admin_fail)
    app.router.add_get("/admin/requests", admin_requests)
    return app


def load_repos(roots: Iterable[Path], published: Mapping[str, Path]) -> dict[str, Repo]:
    """Every ``<owner>/<name>`` directory under the roots, then the published directories."""
    repos: dict[str, Repo] = {}
    for root in roots:
        for directory in sorted(p for p in root.glob("*/*") if p.is_dir()):
            repo_id = f"{directory.parent.name}/{directory.name}"
            repos[repo_id.lower()] = Repo.load(repo_id, directory)
    for repo_id, directory in published.items():
        repos[repo_id.lower()] = Repo.load(repo_id, directory)
    return repos


async def serve(hub: Hub, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start serving `hub`; returns the runner (clean it up to stop) and the base URL."""
    runner = web.AppRunner(make_app(hub), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, f"http://{host}:{bound}"


@dataclass
class LocalHub:
    """The server as a child process (for tests that outlive one event loop)."""

    url: str
    pid: int
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        *,
        roots: Iterable[Path] = (),
        publish: Mapping[str, Path] | None = None,
        tokens: Iterable[str] = (),
        log: Path | None = None,
        python: str = sys.executable,
        timeout: float = 30,
    ) -> LocalHub:
        args = [python, str(Path(__file__).resolve()), "--port", "0"]
        for root in roots:
            args += ["--root", str(root)]
        for repo_id, directory in (publish or {}).items():
            args += ["--publish", f"{repo_id}={directory}"]
        for token in tokens:
            args += ["--token", token]
        stderr = log.open("wb") if log else subprocess.DEVNULL
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and not line:
            line = proc.stdout.readline()
            if proc.poll() is not None:
                break
        if not line:
            proc.kill()
            raise RuntimeError(f"the local hub did not start (exit {proc.poll()})")
        info = json.loads(line)
        return cls(info["url"], proc.pid, proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def fail_next(self, count: int, status: int = 503) -> None:
        self._post("/admin/fail", {"status": status, "count": count})

    def requests(self) -> list[str]:
        import urllib.request  # noqa: PLC0415

        with urllib.request.urlopen(self.url + "/admin/requests", timeout=10) as resp:
            served: list[str] = json.loads(resp.read())
            return served

    def _post(self, path: str, body: Mapping[str, Any]) -> None:
        import urllib.request  # noqa: PLC0415

        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass


def _published(values: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for value in values:
        repo_id, sep, directory = value.partition("=")
        if not sep or repo_id.count("/") != 1:
            raise SystemExit(f"--publish takes OWNER/NAME=DIR, got {value!r}")
        if not Path(directory).is_dir():
            raise SystemExit(f"--publish {value}: {directory} is not a directory")
        out[repo_id] = Path(directory)
    return out


async def _main(args: argparse.Namespace) -> None:
    hub = Hub(
        load_repos([Path(r) for r in args.root], _published(args.publish)),
        tokens=frozenset(args.token),
        page_size=args.page_size,
    )
    runner, url = await serve(hub, args.host, args.port)
    print(json.dumps({"url": url, "pid": os.getpid(), "repos": sorted(hub.repos)}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--root", action="append", default=[], help="dir of OWNER/NAME dirs")
    parser.add_argument(
        "--publish", action="append", default=[], help="OWNER/NAME=DIR (repeatable)"
    )
    parser.add_argument("--token", action="append", default=[], help="a token gated repos accept")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE, help="tree entries per page")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
