"""Input stage: download the training data (parquet files) from http(s) URLs into a directory.

Every URL must answer with a parquet file; anything else (an HTML error page, a CSV) is caught
here by its magic bytes instead of deep inside the trainer. Connection errors, timeouts and
5xx/429 answers are retried with backoff; other HTTP errors are not, since retrying cannot help.

Usage: python -m serving.tuning.download --urls URL [URL ...] --dest /mnt/data
"""

from __future__ import annotations

import argparse
import asyncio
import os
import posixpath
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from serving.tuning.report import StageError, event, run_stage

STAGE = "download"
PARQUET_MAGIC = b"PAR1"
CHUNK = 1 << 20
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class _Retryable(Exception):
    """A failure that another try may not have."""


def target_names(urls: list[str]) -> list[str]:
    """A distinct ``*.parquet`` file name per URL, from the last path segment."""
    names: list[str] = []
    for index, url in enumerate(urls):
        base = posixpath.basename(unquote(urlsplit(url).path)) or f"data-{index}"
        base = "".join(c if c.isalnum() or c in "._-" else "_" for c in base).lstrip(".")
        if not base.endswith(".parquet"):
            base += ".parquet"
        if base in names:
            base = f"{index}-{base}"
        names.append(base)
    return names


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StageError(f"{url}: only http:// and https:// URLs can be downloaded")


def check_parquet(path: Path, url: str) -> None:
    """Parquet files start and end with ``PAR1``; say so when a URL gave something else."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(max(size - 4, 0))
        tail = fh.read(4)
    if size < 12 or head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        preview = head.decode("latin-1")
        raise StageError(
            f"{url}: not a parquet file ({size} bytes starting {preview!r}); "
            "tuning.input.urls must point at .parquet files"
        )


async def _fetch_once(session: aiohttp.ClientSession, url: str, part: Path) -> int:
    try:
        async with session.get(url) as response:
            if response.status in RETRYABLE_STATUS:
                raise _Retryable(f"HTTP {response.status} {response.reason}")
            if response.status >= 400:
                raise StageError(f"{url}: HTTP {response.status} {response.reason}")
            size = 0
            with part.open("wb") as out:  # small sequential writes; the event loop has no peers
                async for chunk in response.content.iter_chunked(CHUNK):
                    out.write(chunk)
                    size += len(chunk)
            return size
    except (aiohttp.ClientError, TimeoutError) as err:
        reason = str(err) or type(err).__name__
        raise _Retryable(reason) from err


async def download_to(
    session: aiohttp.ClientSession, url: str, target: Path, *, retries: int, backoff: float
) -> Path:
    part = target.with_name(f".{target.name}.part")
    last = ""
    for attempt in range(1, retries + 1):
        try:
            size = await _fetch_once(session, url, part)
        except _Retryable as err:
            last = str(err)
            event(STAGE, "retry", url=url, attempt=attempt, of=retries, reason=last)
            if attempt < retries:
                await asyncio.sleep(backoff * 2 ** (attempt - 1))
            continue
        try:
            check_parquet(part, url)
        except StageError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        event(STAGE, "downloaded", url=url, path=str(target), bytes=size)
        return target
    part.unlink(missing_ok=True)
    raise StageError(f"{url}: unreachable after {retries} tries ({last})")


async def download_all(
    urls: list[str], dest: Path, *, retries: int, backoff: float, io_timeout: float
) -> list[Path]:
    for url in urls:
        check_url(url)
    client_timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=io_timeout, sock_read=io_timeout
    )
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        jobs = [
            download_to(session, url, dest / name, retries=retries, backoff=backoff)
            for url, name in zip(urls, target_names(urls), strict=True)
        ]
        return list(await asyncio.gather(*jobs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.tuning.download", description=__doc__)
    parser.add_argument("--urls", nargs="+", required=True, help="http(s) URLs of parquet files")
    parser.add_argument("--dest", type=Path, required=True, help="directory to write them to")
    parser.add_argument("--retries", type=int, default=3, help="tries per URL (default 3)")
    parser.add_argument("--backoff", type=float, default=2.0, help="first retry delay, seconds")
    parser.add_argument("--timeout", type=float, default=60.0, help="connect/read timeout, s")
    args = parser.parse_args(argv)
    urls = [u for item in args.urls for u in item.split(",") if u.strip()]

    def run() -> None:
        args.dest.mkdir(parents=True, exist_ok=True)
        paths = asyncio.run(
            download_all(
                urls, args.dest, retries=args.retries, backoff=args.backoff, io_timeout=args.timeout
            )
        )
        event(STAGE, "completed", files=[p.name for p in paths])

    run_stage(STAGE, run)


if __name__ == "__main__":
    main()
