"""Publish a model directory as an OCI image, the seed's way of shipping preset weights.

The image has one layer holding the directory's files under ``/data`` — the layout
``serving.fetch`` (the model-weights-downloader init container) unpacks into
``/workspace/weights``.  skopeo does the push, so any registry and any of skopeo's
credential sources work.

  hack/push-model MODEL_DIR REGISTRY/REPOSITORY:TAG [--authfile dockerconfig.json]

For a catalog preset, push to ``$PRESET_REGISTRY_NAME/<image_repository>:<image_tag>``
(``kaito presets --json`` lists them).  Loopback registries are spoken to over plain HTTP.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from registry import oci_layout


def push(src: Path, ref: str, authfile: Path | None = None, plain_http: bool = False) -> None:
    if not src.is_dir() or not any(src.iterdir()):
        raise SystemExit(f"hack/push-model: {src} is not a non-empty directory")
    host = ref.split("/", 1)[0]
    loopback = host.startswith(("127.", "localhost"))
    with tempfile.TemporaryDirectory(prefix="kaito-push-model-") as tmp:
        layout = oci_layout(src, Path(tmp) / "layout", "data")
        cmd = ["skopeo", "copy", "--quiet"]
        if authfile is not None:
            cmd += ["--dest-authfile", str(authfile)]
        if loopback or plain_http:
            cmd += ["--dest-tls-verify=false"]
        cmd += [f"oci:{layout}:latest", f"docker://{ref}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"hack/push-model: push to {ref} failed: {proc.stderr.strip()}")
    print(ref)


def main() -> None:
    parser = argparse.ArgumentParser(prog="hack/push-model", description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="model directory (config, weights, tokenizer)")
    parser.add_argument("ref", help="REGISTRY/REPOSITORY:TAG")
    parser.add_argument("--authfile", type=Path, help="dockerconfigjson with push credentials")
    parser.add_argument(
        "--plain-http", action="store_true", help="the registry speaks HTTP (loopback: always)"
    )
    args = parser.parse_args()
    push(args.src, args.ref, args.authfile, args.plain_http)


if __name__ == "__main__":
    main()
