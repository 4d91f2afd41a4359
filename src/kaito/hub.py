"""Reading a model's metadata from the Hugging Face hub, and the cache of presets sized from it.

:class:`HubClient` speaks the hub's HTTP API with aiohttp: model info, the recursive file tree
(with sizes, following ``Link`` pages), ``config.json``, ``tokenizer_config.json`` and
``generation_config.json`` through ``resolve/``, and the safetensors index when the listing gives
no sizes. It fills a :class:`~kaito.presets.hub_sizing.HubModel`; the pure sizing code in
``kaito.presets`` decides the rest. :class:`HubPresets` caches the resulting presets by id with
a size bound and a TTL and lets concurrent callers share one fetch.

The hub is ``HF_ENDPOINT`` (default https://huggingface.co), as the Hugging Face libraries read
it; the operator passes the same address to the serving pods so their weight download goes
there too. Failures are typed, never tracebacks: :class:`~kaito.presets.SpecError` for a model
that does not exist, is gated without an accepted token, or cannot be served (the Workspace
field to fix is named), :class:`~kaito.presets.errors.SourceUnavailable` when the hub cannot be
reached or answers 429/5xx (retry later; the Workspace may be fine).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from kaito.presets.catalog import Preset
from kaito.presets.errors import SourceUnavailable, SpecError
from kaito.presets.hub_sizing import MODEL_FIELD, HubFile, HubModel, preset_from_hub

log = logging.getLogger("kaito.hub")

DEFAULT_ENDPOINT = "https://huggingface.co"
ACCESS_FIELD = "inference.preset.presetOptions.modelAccessSecret"
TIMEOUT_S = 20.0
MAX_JSON_BYTES = 8 * 1024**2
MAX_INDEX_BYTES = 64 * 1024**2  # a 1000-shard model's weight map
MAX_PAGES = 100
OPTIONAL_FILES = ("tokenizer_config.json", "generation_config.json")
INDEX_FILE = "model.safetensors.index.json"
USER_AGENT = "kaito-operator"
MODEL_INFO = "model info"


def hub_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The hub's base URL: HF_ENDPOINT as the Hugging Face libraries read it, else the hub."""
    env = os.environ if environ is None else environ
    return (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")


def _token_note(token: str | None) -> str:
    return "with the HF_TOKEN from presetOptions.modelAccessSecret" if token else "anonymously"


class HubClient:
    """The hub's model API over one aiohttp session (created on first use)."""

    def __init__(self, endpoint: str | None = None, *, timeout_s: float = TIMEOUT_S) -> None:
        self.endpoint = (endpoint or hub_endpoint()).rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(10.0, timeout_s))
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HubClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ HTTP
    async def _get(
        self,
        url: str,
        *,
        repo_id: str,
        token: str | None,
        limit: int | None = None,
        what: str = "",
    ) -> tuple[Any, Mapping[str, str]]:
        """GET JSON of at most `limit` bytes (MAX_JSON_BYTES); typed errors for every failure."""
        limit = limit or MAX_JSON_BYTES
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with self._open().get(url, headers=headers, allow_redirects=True) as resp:
                if resp.status != 200:
                    body = (await resp.content.read(2048)).decode(errors="replace")
                    raise self._error(
                        resp.status,
                        headers=resp.headers,
                        repo_id=repo_id,
                        token=token,
                        what=what,
                        body=body,
                    )
                too_big = SpecError(MODEL_FIELD, f"{repo_id}: {what} is larger than {limit} bytes")
                if resp.content_length is not None and resp.content_length > limit:
                    raise too_big
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > limit:
                        raise too_big
                    chunks.append(chunk)
                raw = b"".join(chunks)
                headers_out = dict(resp.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            reason = str(err) or type(err).__name__
            raise SourceUnavailable(
                MODEL_FIELD,
                f"cannot reach the model hub {self.endpoint} for {repo_id}'s {what}: {reason}",
            ) from None
        try:
            return json.loads(raw), headers_out
        except ValueError:
            raise SpecError(MODEL_FIELD, f"{repo_id}: the hub's {what} is not valid JSON") from None

    def _error(
        self,
        status: int,
        *,
        headers: Mapping[str, str],
        repo_id: str,
        token: str | None,
        what: str,
        body: str,
    ) -> SpecError:
        code = headers.get("X-Error-Code", "")
        where = f"{self.endpoint}/{repo_id}"
        if status == 429 or status >= 500:
            detail = body.strip().splitlines()[0][:200] if body.strip() else ""
            return SourceUnavailable(
                MODEL_FIELD,
                f"the model hub {self.endpoint} answered HTTP {status} for {repo_id}'s {what}"
                + (f": {detail}" if detail else "")
                + "; retrying",
            )
        if code == "RevisionNotFound":
            return SpecError(MODEL_FIELD, f"{repo_id} has no such revision on {self.endpoint}")
        if code == "RepoNotFound" or (status in (401, 404) and not code and what == MODEL_INFO):
            private = "" if token else " (a private model needs presetOptions.modelAccessSecret)"
            return SpecError(
                MODEL_FIELD,
                f"no model {repo_id} on {self.endpoint}{private}; check the id "
                "(owner/name, as on the hub)",
            )
        if code == "GatedRepo" or status in (401, 403):
            if token:
                return SpecError(
                    ACCESS_FIELD,
                    f"{repo_id} is gated and the hub refused the HF_TOKEN from "
                    f"presetOptions.modelAccessSecret (HTTP {status}): accept the model's terms "
                    f"on {where} with that token's account",
                )
            return SpecError(
                ACCESS_FIELD,
                f"{repo_id} is gated (HTTP {status}): set presetOptions.modelAccessSecret to a "
                "Secret whose HF_TOKEN has been granted access",
            )
        if code == "EntryNotFound" or status == 404:
            return SpecError(MODEL_FIELD, f"{repo_id} has no {what} on {self.endpoint}")
        return SpecError(
            MODEL_FIELD,
            f"the model hub {self.endpoint} answered HTTP {status} for {repo_id}'s {what} "
            f"({_token_note(token)})",
        )

    def _api(self, repo_id: str, *parts: str) -> str:
        return "/".join([self.endpoint, "api", "models", repo_id, *parts])

    def _file(self, repo_id: str, revision: str, path: str) -> str:
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    # ------------------------------------------------------------------ metadata
    async def _tree(self, repo_id: str, revision: str, token: str | None) -> list[HubFile]:
        url: str | None = self._api(repo_id, "tree", quote(revision, safe="")) + "?recursive=true"
        files: list[HubFile] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return files
            page, headers = await self._get(url, repo_id=repo_id, token=token, what="file listing")
            if not isinstance(page, list):
                raise SpecError(MODEL_FIELD, f"{repo_id}: the hub's file listing is not a list")
            for entry in page:
                if isinstance(entry, dict) and entry.get("type") == "file" and entry.get("path"):
                    size = entry.get("size")
                    lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else {}
                    size = lfs.get("size", size) if lfs else size
                    files.append(
                        HubFile(
                            path=str(entry["path"]), size=size if isinstance(size, int) else None
                        )
                    )
            url = _next_link(headers.get("Link", ""))
        raise SpecError(MODEL_FIELD, f"{repo_id}: the file listing has more than {MAX_PAGES} pages")

    async def model(
        self, repo_id: str, *, revision: str = "main", token: str | None = None
    ) -> HubModel:
        """Everything the sizing reads about `repo_id` at `revision`."""
        info, _ = await self._get(
            self._api(repo_id, "revision", quote(revision, safe="")),
            repo_id=repo_id,
            token=token,
            what=MODEL_INFO,
        )
        if not isinstance(info, dict):
            raise SpecError(MODEL_FIELD, f"{repo_id}: the hub's model info is not an object")
        sha = info.get("sha") if isinstance(info.get("sha"), str) else None
        at = sha or revision
        files = await self._tree(repo_id, at, token)
        if not files:  # a listing we may not read: fall back to the info's file names
            files = [
                HubFile(path=str(s["rfilename"]), size=s.get("size"))
                for s in info.get("siblings") or []
                if isinstance(s, dict) and s.get("rfilename")
            ]
        names = {f.path for f in files}
        config, _ = await self._get(
            self._file(repo_id, at, "config.json"), repo_id=repo_id, token=token, what="config.json"
        )
        if not isinstance(config, dict):
            raise SpecError(MODEL_FIELD, f"{repo_id}: config.json is not a JSON object")
        optional: dict[str, dict[str, Any] | None] = {}
        for name in OPTIONAL_FILES:
            optional[name] = None
            if name in names:
                try:
                    loaded, _ = await self._get(
                        self._file(repo_id, at, name), repo_id=repo_id, token=token, what=name
                    )
                except SourceUnavailable:
                    raise
                except SpecError as err:  # optional: sized without it
                    log.info("%s: %s skipped: %s", repo_id, name, err)
                    continue
                optional[name] = loaded if isinstance(loaded, dict) else None
        total = None
        weights_sized = all(
            f.size is not None
            for f in files
            if "/" not in f.path and f.path.endswith((".safetensors", ".bin"))
        )
        if not weights_sized and INDEX_FILE in names:
            index, _ = await self._get(
                self._file(repo_id, at, INDEX_FILE),
                repo_id=repo_id,
                token=token,
                limit=MAX_INDEX_BYTES,
                what=INDEX_FILE,
            )
            metadata = index.get("metadata") if isinstance(index, dict) else None
            if isinstance(metadata, dict) and isinstance(metadata.get("total_size"), int):
                total = int(metadata["total_size"])
        counts = (info.get("safetensors") or {}).get("parameters")
        gated = info.get("gated")
        return HubModel(
            repo_id=repo_id,
            revision=revision,
            sha=sha,
            endpoint=self.endpoint,
            gated=bool(gated) and gated != "false",
            files=tuple(files),
            config=config,
            generation_config=optional["generation_config.json"],
            tokenizer_config=optional["tokenizer_config.json"],
            safetensors_total=total,
            parameter_counts=counts if isinstance(counts, dict) else None,
        )


def _next_link(header: str) -> str | None:
    """The URL of a ``Link: <url>; rel="next"`` header, as the hub paginates."""
    for part in header.split(","):
        if 'rel="next"' in part and "<" in part and ">" in part:
            return part[part.index("<") + 1 : part.index(">")]
    return None


@dataclass
class _Entry:
    expires: float
    preset: Preset | None = None
    error: SpecError | None = None


class HubPresets:
    """Presets sized from the hub, by id: a bounded LRU with a TTL, one fetch per key at a time.

    A model that cannot be served (not found, unsupported, gated without access) is remembered
    for `failure_ttl_s` so a retrying controller or a burst of admissions does not hammer the
    hub; a hub that cannot be reached is not remembered (the next call tries again).
    """

    def __init__(
        self,
        client: HubClient,
        *,
        ttl_s: float = 600.0,
        failure_ttl_s: float = 30.0,
        max_entries: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.failure_ttl_s = failure_ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.fetches = 0
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._inflight: dict[tuple[str, str, str], asyncio.Future[Preset]] = {}

    @property
    def endpoint(self) -> str:
        return self.client.endpoint

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(repo_id: str, revision: str, token: str | None) -> tuple[str, str, str]:
        secret = hashlib.sha256(token.encode()).hexdigest()[:16] if token else ""
        return repo_id.strip().lower(), revision, secret

    async def preset(
        self, repo_id: str, *, revision: str = "main", token: str | None = None
    ) -> Preset:
        """The preset for `repo_id`; SpecError / SourceUnavailable say why there is none."""
        key = self._key(repo_id, revision, token)
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and entry.expires > now:
            self._entries.move_to_end(key)
            if entry.error is not None:
                raise entry.error
            assert entry.preset is not None
            return entry.preset
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Preset] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            preset = await self._fetch(repo_id.strip(), revision, token)
        except SourceUnavailable as err:
            future.set_exception(err)
            raise
        except SpecError as err:
            self._store(key, _Entry(self.clock() + self.failure_ttl_s, error=err))
            future.set_exception(err)
            raise
        except BaseException as err:  # cancelled: waiters retry on their own
            future.set_exception(SourceUnavailable(MODEL_FIELD, f"{repo_id}: {err!r}"))
            raise
        else:
            self._store(key, _Entry(self.clock() + self.ttl_s, preset=preset))
            future.set_result(preset)
            return preset
        finally:
            self._inflight.pop(key, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" warning without waiters

    async def _fetch(self, repo_id: str, revision: str, token: str | None) -> Preset:
        self.fetches += 1
        model = await self.client.model(repo_id, revision=revision, token=token)
        return preset_from_hub(model)

    def _store(self, key: tuple[str, str, str], entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
