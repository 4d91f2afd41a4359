#!/usr/bin/env python3
"""A local OCI registry for tests: Debian's docker-registry on 127.0.0.1 with htpasswd auth.

``hack/registry.py start --dir D`` starts it (storage and config under D, a free port) and prints
``REGISTRY=127.0.0.1:PORT`` plus the user, password and a dockerconfigjson path;
``hack/registry.py stop --dir D`` stops it by the PID recorded in D. ``push-dir`` lays a directory
out as an adapter image (files under /data) and pushes it with skopeo.
Needs: apt-get install docker-registry skopeo apache2-utils.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

USER = "kaito"


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LocalRegistry:
    dir: Path
    host: str
    user: str
    password: str
    pid: int

    @property
    def docker_config(self) -> Path:
        """A dockerconfigjson with this registry's credentials (what a pull secret holds)."""
        return self.dir / "dockerconfig.json"

    @classmethod
    def start(cls, root: Path, timeout: float = 30, bind: str = "127.0.0.1") -> LocalRegistry:
        """Start on a free port of `bind` (a real node's pods reach its bridge address)."""
        root.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(12)
        htpasswd = root / "htpasswd"
        out = subprocess.run(
            ["htpasswd", "-Bbn", USER, password], check=True, capture_output=True, text=True
        ).stdout
        htpasswd.write_text(out)
        port = _free_port(bind)
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {bind}:{port}\n"
            f"auth:\n  htpasswd:\n    realm: kaito-test\n    path: {htpasswd}\n"
        )
        log = (root / "registry.log").open("wb")
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        (root / "pid").write_text(str(proc.pid))
        reg = cls(root, f"{bind}:{port}", USER, password, proc.pid)
        auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
        reg.docker_config.write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(root / 'registry.log').read_text()}")
            try:
                urllib.request.urlopen(f"http://{reg.host}/v2/", timeout=2)
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return reg
            except OSError:
                pass
            time.sleep(0.2)
        reg.stop()
        raise TimeoutError("docker-registry did not answer in time")

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.kill(self.pid, 0)
                os.waitpid(self.pid, os.WNOHANG)
            except (ProcessLookupError, ChildProcessError):
                return
            time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)

    def push_dir(self, src: Path, repo_tag: str, prefix: str = "data") -> str:
        """Push ``src``'s files as a one-layer image, under ``/<prefix>``; returns the ref."""
        layout = self.dir / "layouts" / hashlib.sha256(repo_tag.encode()).hexdigest()[:12]
        oci_layout(src, layout, prefix)
        ref = f"{self.host}/{repo_tag}"
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-creds",
                f"{self.user}:{self.password}",
                f"oci:{layout}:latest",
                f"docker://{ref}",
            ],
            check=True,
            capture_output=True,
        )
        return ref


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}", len(data)


def oci_layout(src: Path, layout: Path, prefix: str = "data") -> Path:
    """An OCI image layout (one gzip layer) holding ``src``'s files under ``prefix``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            tar.add(
                f, arcname=f"{prefix}/{f.relative_to(src)}" if prefix else str(f.relative_to(src))
            )
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    layer_digest, layer_size = _blob(layout, gzip.compress(raw.getvalue(), mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    cfg_digest, cfg_size = _blob(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": cfg_digest,
            "size": cfg_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    m_digest, m_size = _blob(layout, json.dumps(manifest).encode())
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": m_digest,
                "size": m_size,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def _load(root: Path) -> LocalRegistry:
    cfg = json.loads((root / "dockerconfig.json").read_text())
    host, entry = next(iter(cfg["auths"].items()))
    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    return LocalRegistry(root, host, user, password, int((root / "pid").read_text()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["start", "stop", "push-dir"])
    p.add_argument("--dir", type=Path, required=True, help="state directory of this registry")
    p.add_argument("--src", type=Path, help="push-dir: directory whose files to push")
    p.add_argument("--ref", help="push-dir: repository:tag")
    p.add_argument("--bind", default="127.0.0.1", help="start: address to listen on")
    a = p.parse_args()
    if a.command == "start":
        reg = LocalRegistry.start(a.dir, bind=a.bind)
        print(f"REGISTRY={reg.host}\nREGISTRY_USER={reg.user}\nREGISTRY_PASSWORD={reg.password}")
        print(f"REGISTRY_DOCKER_CONFIG={reg.docker_config}\nREGISTRY_PID={reg.pid}")
    elif a.command == "stop":
        _load(a.dir).stop()
    else:
        if not (a.src and a.ref):
            p.error("push-dir needs --src and --ref")
        print(_load(a.dir).push_dir(a.src, a.ref))


if __name__ == "__main__":
    main()
