"""The project's container images, built here without a Docker engine.

The Dockerfiles in docker/ are the one recipe; Debian's ``buildah`` runs them (chroot
isolation, overlay storage under the cache dir). Their base is a Debian image made by
``mmdebstrap`` from Debian packages (no public image registry is reachable here), passed as
the ``BASE_IMAGE`` build argument; Python packages come from wheelhouses prepared on the host
(``--build-context wheels=DIR``), so a build downloads nothing.

Every image is tagged with a hash of what it is built from (Dockerfile, the files it copies,
its base and its wheels), so an unchanged image is neither rebuilt nor pushed again:
``hack/images ref NAME --registry HOST`` names exactly the image that ``build``/``push``
produce.

  hack/images build [NAME ...]                build (default: all), print local references
  hack/images push --registry HOST [NAME ...]  build if needed and push (plain HTTP registry)
  hack/images ref NAME [--registry HOST]       the reference, without building
  hack/images list                             names, tags, sizes

Standard library only. Needs root, buildah, mmdebstrap and gcc (hack/setup installs them).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
# Debian packages of the shared base: Python for the serving and operator images, the C and
# NUMA runtimes vLLM's CPU kernels load, and curl for the test client.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libgomp1", "libnuma1", "curl")
PREFIX = "kaito-py"


class ImageError(RuntimeError):
    """A failure the user can act on; printed without a traceback."""


@dataclass(frozen=True)
class Image:
    """How one image is built: its Dockerfile, the repo files it copies, its wheels."""

    dockerfile: str
    inputs: tuple[str, ...]  # repo paths (files or directories) that the build reads
    build_args: dict[str, str] = field(default_factory=dict)
    wheels: str | None = None  # "serving" or "operator": a wheelhouse as build context
    uses_base: bool = True


IMAGES: dict[str, Image] = {
    "pause": Image("docker/pause.Dockerfile", ("docker/pause.c",), uses_base=False),
    "curl": Image("docker/curl.Dockerfile", ()),
    "serving": Image(
        "docker/serving.Dockerfile",
        ("serving", "serving/requirements.lock"),
        {"VLLM_VARIANT": "cpu"},
        wheels="serving",
    ),
    "operator": Image(
        "docker/operator.Dockerfile", ("pyproject.toml", "README.md", "src"), wheels="operator"
    ),
}


def cache_root() -> Path:
    base = os.environ.get("KAITO_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kaito-py"


def images_dir() -> Path:
    return cache_root() / "images"


def say(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def buildah(*args: str) -> list[str]:
    d = images_dir()
    return ["buildah", "--root", str(d / "storage"), "--runroot", str(d / "run"),
            "--storage-driver", "overlay", *args]  # fmt: skip


def _run_logged(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run a long step with its output in a log file; on failure name the file."""
    log = images_dir() / "logs" / f"{what}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise ImageError(f"{what} failed (exit {proc.returncode}); full log: {log}\n{tail}")
    return log.read_text(errors="replace")


@contextmanager
def storage_lock() -> Iterator[None]:
    """One build at a time in the shared buildah storage."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with open(images_dir() / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def local_exists(ref: str) -> bool:
    proc = subprocess.run(
        buildah("inspect", "--type", "image", ref), capture_output=True, check=False
    )
    return proc.returncode == 0


def _hash_paths(h: hashlib._Hash, paths: tuple[str, ...]) -> None:
    for rel in paths:
        path = REPO / rel
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" in f.parts or any(part.endswith(".egg-info") for part in f.parts):
                continue  # build by-products, not inputs
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")


# ------------------------------------------------------------------------------- base


def apt_sources() -> list[str]:
    """The host's enabled apt sources, handed to mmdebstrap as they are."""
    found = []
    if Path("/etc/apt/sources.list").is_file():
        found.append("/etc/apt/sources.list")
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        found += sorted(str(p) for p in d.iterdir() if p.suffix in {".list", ".sources"})
    if not found:
        raise ImageError("no apt sources on this machine: mmdebstrap needs a Debian mirror")
    return found


def base_ref() -> str:
    key = hashlib.sha256(f"{SUITE} {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:12]
    return f"localhost/{PREFIX}/debian-base:{SUITE}-{key}"


def build_base() -> str:
    ref = base_ref()
    if local_exists(ref):
        return ref
    t0 = time.monotonic()
    say(f"base image from Debian packages ({SUITE}: {', '.join(BASE_PACKAGES)})")
    with tempfile.TemporaryDirectory(prefix="kaito-base-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        _run_logged(
            ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             "--aptopt=Acquire::Check-Valid-Until \"false\"", SUITE, str(tar), *apt_sources()],
            "base-mmdebstrap",
        )  # fmt: skip
        ctr = subprocess.run(buildah("from", "scratch"), capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
        try:
            subprocess.run(buildah("add", ctr, str(tar), "/"), capture_output=True, check=True)
            subprocess.run(
                buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                        "/usr/bin:/sbin:/bin", "--env", "LANG=C.UTF-8", "--cmd", "/bin/bash",
                        ctr),
                capture_output=True, check=True,
            )  # fmt: skip
            subprocess.run(buildah("commit", "--quiet", ctr, ref), capture_output=True, check=True)
        finally:
            subprocess.run(buildah("rm", ctr), capture_output=True, check=False)
    say(f"base image built in {time.monotonic() - t0:.0f} s")
    return ref


# ----------------------------------------------------------------------------- wheels


def wheelhouse(kind: str) -> Path:
    """The wheels an image installs from, prepared with the host's pip (and its cache)."""
    if kind == "serving":
        out = subprocess.run([str(REPO / "hack" / "serving-env"), "--wheelhouse"],
                             stdout=subprocess.PIPE, text=True, check=False)  # fmt: skip
        if out.returncode != 0:
            raise ImageError("preparing the serving wheelhouse failed (see above)")
        return Path(out.stdout.strip().splitlines()[-1])
    h = hashlib.sha256()
    _hash_paths(h, IMAGES["operator"].inputs)
    house = cache_root() / f"wheelhouse-operator-{h.hexdigest()[:12]}"
    if not (house / ".complete").exists():
        shutil.rmtree(house, ignore_errors=True)
        house.mkdir(parents=True)
        python = REPO / ".venv" / "bin" / "python"
        pip = [str(python if python.exists() else sys.executable), "-m", "pip"]
        _run_logged([*pip, "wheel", "--quiet", "--wheel-dir", str(house), str(REPO)],
                    "operator-wheels")  # fmt: skip
        (house / ".complete").touch()
    return house


# ------------------------------------------------------------------------------ build


def tag(name: str) -> str:
    """The content tag: changes exactly when something the build reads changes."""
    spec = IMAGES[name]
    h = hashlib.sha256()
    _hash_paths(h, (spec.dockerfile, *spec.inputs))
    h.update(json.dumps(spec.build_args, sort_keys=True).encode())
    if spec.uses_base:
        h.update(base_ref().encode())
    return h.hexdigest()[:12]


def local_ref(name: str) -> str:
    return f"localhost/{PREFIX}/{name}:{tag(name)}"


def ref(name: str, registry: str | None = None) -> str:
    if registry is None:
        return local_ref(name)
    return f"{registry}/{PREFIX}/{name}:{tag(name)}"


def build(name: str) -> str:
    if name not in IMAGES:
        raise ImageError(f"unknown image {name!r}; one of {', '.join(IMAGES)}")
    spec = IMAGES[name]
    out = local_ref(name)
    with storage_lock():
        if local_exists(out):
            return out
        t0 = time.monotonic()
        # --layers: an unchanged step (the 6 GB venv of the serving image) is reused, so a
        # change to serving/ rebuilds and pushes only the layer it touches
        args = ["bud", "--isolation", "chroot", "--pull-never", "--layers",
                "-f", str(REPO / spec.dockerfile), "-t", out]  # fmt: skip
        for k, v in spec.build_args.items():
            args += ["--build-arg", f"{k}={v}"]
        if spec.uses_base:
            args += ["--build-arg", f"BASE_IMAGE={build_base()}"]
        if spec.wheels:
            args += ["--build-context", f"wheels={wheelhouse(spec.wheels)}"]
        with tempfile.TemporaryDirectory(prefix=f"kaito-{name}-") as tmp:
            context = REPO
            if name == "pause":  # the context is the static binary (no compiler in an image)
                context = Path(tmp)
                _run_logged(["gcc", "-Os", "-static", "-o", str(context / "pause"),
                             str(REPO / "docker" / "pause.c")], "pause-gcc")  # fmt: skip
            say(f"building {name} ({spec.dockerfile})")
            _run_logged(buildah(*args, str(context)), f"build-{name}")
        took, size = time.monotonic() - t0, size_mib(out)
        say(f"{name}: built in {took:.0f} s, {size:.0f} MiB")
        record_figures(name, {"tag": tag(name), "build_s": round(took, 1), "size_mib": round(size)})
        prune_local(name, keep=out)
    return out


def figures() -> dict[str, dict[str, object]]:
    """What the last build of each image took and weighed (bench/real_node.py prints it)."""
    try:
        data: dict[str, dict[str, object]] = json.loads((images_dir() / "figures.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def record_figures(name: str, values: dict[str, object]) -> None:
    data = figures()
    data[name] = values
    (images_dir() / "figures.json").write_text(json.dumps(data, indent=1))


def prune_local(name: str, keep: str) -> None:
    """Drop this image's older builds (several GB each for serving); `keep` stays."""
    listing = subprocess.run(buildah("images", "--format", "{{.Name}}:{{.Tag}}"),
                             capture_output=True, text=True, check=False).stdout  # fmt: skip
    mine = f"localhost/{PREFIX}/{name}:"
    stale = [r for r in listing.split() if r.startswith(mine) and r != keep]
    for old in stale:
        subprocess.run(buildah("rmi", "--force", old), capture_output=True, check=False)
    if stale:
        subprocess.run(buildah("rmi", "--prune"), capture_output=True, check=False)


def current_tags() -> dict[str, str]:
    """Repository (``kaito-py/NAME``) → the tag a build of today's tree has."""
    return {f"{PREFIX}/{name}": tag(name) for name in IMAGES}


def size_mib(local: str) -> float:
    """The image's size as buildah reports it ("229 MB", decimal units)."""
    out = subprocess.run(buildah("images", "--json", local), capture_output=True, text=True,
                         check=False).stdout  # fmt: skip
    try:
        number, unit = json.loads(out)[0]["size"].split()
    except (json.JSONDecodeError, IndexError, KeyError, ValueError):
        return 0.0
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}.get(unit.upper(), 1)
    return float(number) * scale / 2**20


def remote_exists(registry: str, remote: str) -> bool:
    repository, reference = remote.removeprefix(f"{registry}/").rsplit(":", 1)
    req = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{reference}",
        method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def push(name: str, registry: str) -> str:
    """Build if needed, then push to a plain-HTTP registry (a no-op when it has the tag)."""
    local = build(name)  # its tag is the one the build started with, whatever changed since
    remote = f"{registry}/{PREFIX}/{name}:{local.rsplit(':', 1)[1]}"
    if remote_exists(registry, remote):
        return remote
    t0 = time.monotonic()
    # zstd: a fraction of gzip's CPU for the 6 GB serving image, and containerd reads it.
    _run_logged(
        buildah("push", "--tls-verify=false", "--compression-format", "zstd",
                local, f"docker://{remote}"),
        f"push-{name}",
    )  # fmt: skip
    took = time.monotonic() - t0
    say(f"{name}: pushed to {registry} in {took:.0f} s")
    record_figures(name, {**figures().get(name, {}), "push_s": round(took, 1)})
    return remote


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/images", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (default: all) and print local references")
    b.add_argument("names", nargs="*")
    p = sub.add_parser("push", help="build if needed and push to a plain-HTTP registry")
    p.add_argument("--registry", required=True)
    p.add_argument("names", nargs="*")
    r = sub.add_parser("ref", help="print an image's reference without building it")
    r.add_argument("name", choices=sorted(IMAGES))
    r.add_argument("--registry")
    sub.add_parser("list", help="names, tags and whether they are built")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            for name in args.names or list(IMAGES):
                print(build(name))
        elif args.cmd == "push":
            for name in args.names or list(IMAGES):
                print(push(name, args.registry))
        elif args.cmd == "ref":
            print(ref(args.name, args.registry))
        else:
            for name in IMAGES:
                local = local_ref(name)
                built = f"{size_mib(local):.0f} MiB" if local_exists(local) else "not built"
                print(f"{name:<10} {local:<50} {built}")
    except ImageError as exc:
        print(f"hack/images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
