"""Output stage: publish the trained adapter as an OCI image.

The image has one gzip layer holding ``data/adapter_config.json`` and
``data/adapter_model.safetensors``: the layout an inference Workspace's adapter init container
(``python -m serving.fetch``) expects. The layer tar is reproducible (fixed owners and times),
so pushing the same adapter twice gives the same digest. The stage waits for the trainer's
``fine_tuning_completed.txt`` marker first, so a half-written adapter is never published.

Usage: python -m serving.tuning.push --source /mnt/results --image REGISTRY/REPO:TAG \
           --docker-config /root/.docker/config.json [--model-name PRESET]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import io
import json
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from serving.tuning.registry import Reference, Registry, load_credentials
from serving.tuning.report import StageError, event, run_stage
from serving.tuning.settings import ADAPTER_FILES, MARKER

STAGE = "push"
LAYER_ROOT = "data"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
MODEL_ANNOTATION = "sh.kaito.model.name"


@dataclass(frozen=True)
class Blob:
    path: Path
    digest: str
    size: int


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def wait_for_marker(source: Path, timeout: float, poll: float = 2.0) -> None:
    marker = source / MARKER
    deadline = time.monotonic() + timeout
    while not marker.is_file():
        if time.monotonic() >= deadline:
            raise StageError(
                f"{marker} did not appear within {timeout:g}s: the trainer did not finish, "
                "so there is no adapter to push"
            )
        time.sleep(poll)
    missing = [name for name in ADAPTER_FILES if not (source / name).is_file()]
    if missing:
        raise StageError(f"{source} has the completion marker but no {', '.join(missing)}")


def build_layer(source: Path, workdir: Path) -> tuple[Blob, str]:
    """The gzip layer blob and its diff id (digest of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo(LAYER_ROOT)
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        for name in ADAPTER_FILES:
            data = (source / name).read_bytes()
            info = tarfile.TarInfo(f"{LAYER_ROOT}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    compressed = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
    path = workdir / "layer.tar.gz"
    path.write_bytes(compressed)
    return Blob(path, _sha256(compressed), len(compressed)), _sha256(tar_bytes)


def _descriptor(media_type: str, blob: Blob) -> dict[str, object]:
    return {"mediaType": media_type, "digest": blob.digest, "size": blob.size}


def build_image(source: Path, workdir: Path, model_name: str | None) -> tuple[list[Blob], bytes]:
    """Layer and config blobs plus the manifest that ties them together."""
    layer, diff_id = build_layer(source, workdir)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    config_path = workdir / "config.json"
    config_path.write_bytes(config)
    config_blob = Blob(config_path, _sha256(config), len(config))
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": _descriptor(CONFIG_TYPE, config_blob),
        "layers": [_descriptor(LAYER_TYPE, layer)],
    }
    if model_name:
        manifest["annotations"] = {MODEL_ANNOTATION: model_name}
    return [layer, config_blob], json.dumps(manifest, sort_keys=True).encode()


async def push(
    ref: Reference,
    blobs: list[Blob],
    manifest: bytes,
    docker_config: Path | None,
    *,
    plain_http: bool,
) -> str:
    credentials = load_credentials(docker_config, ref.host)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        registry = Registry(session, ref, credentials, plain_http=plain_http)
        for blob in blobs:
            await registry.upload_blob(blob.digest, blob.path)
            event(STAGE, "blob", digest=blob.digest, bytes=blob.size)
        return await registry.put_manifest(manifest, MANIFEST_TYPE) or _sha256(manifest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.tuning.push", description=__doc__)
    parser.add_argument("--source", type=Path, required=True, help="the trainer's output_dir")
    parser.add_argument("--image", required=True, help="target reference registry/repo:tag")
    parser.add_argument("--docker-config", type=Path, help="dockerconfigjson with credentials")
    parser.add_argument("--model-name", help="base model, recorded as a manifest annotation")
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for marker")
    parser.add_argument("--plain-http", action="store_true", help="use http (auto for loopback)")
    args = parser.parse_args(argv)

    def run() -> None:
        ref = Reference.parse(args.image)
        wait_for_marker(args.source, args.wait)
        with tempfile.TemporaryDirectory(prefix="kaito-push-") as tmp:
            blobs, manifest = build_image(args.source, Path(tmp), args.model_name)
            digest = asyncio.run(
                push(ref, blobs, manifest, args.docker_config, plain_http=args.plain_http)
            )
        event(STAGE, "completed", image=str(ref), digest=digest)

    run_stage(STAGE, run)


if __name__ == "__main__":
    main()
