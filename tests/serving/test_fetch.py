"""serving.fetch against a real registry (Debian's docker-registry, htpasswd auth, skopeo push)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serving.fetch import FetchError, ImageRef, load_credentials
from tests.serving.conftest import needs_registry

ROOT = Path(__file__).resolve().parents[2]


def fetch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving.fetch", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def adapter_files(tmp_path: Path) -> Path:
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (src / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 64)
    return src


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:5000/adapters/a:1", ImageRef("127.0.0.1:5000", "adapters/a", "1")),
        ("myregistry.azurecr.io/x/y", ImageRef("myregistry.azurecr.io", "x/y", "latest")),
        ("ubuntu", ImageRef("registry-1.docker.io", "library/ubuntu", "latest")),
        (
            "localhost:5000/a@sha256:" + "0" * 64,
            ImageRef("localhost:5000", "a", "sha256:" + "0" * 64),
        ),
    ],
)
def test_image_ref_parse(text: str, want: ImageRef) -> None:
    assert ImageRef.parse(text) == want


def test_image_ref_rejects_garbage() -> None:
    with pytest.raises(FetchError, match="not a valid name"):
        ImageRef.parse("Bad_Repo/X")


def test_credentials_from_projected_secret_dir(tmp_path: Path) -> None:
    d = tmp_path / "config.d" / "a-inference-adapter"
    d.mkdir(parents=True)
    (d / "pull-secret.json").write_text(
        json.dumps({"auths": {"https://reg.example.com": {"username": "u", "password": "p"}}})
    )
    assert load_credentials(tmp_path / "config.d", "reg.example.com") == ("u", "p")
    assert load_credentials(tmp_path / "config.d", "other.example.com") is None


@needs_registry
def test_pull_puts_data_files_in_dest(
    registry: object, adapter_files: Path, tmp_path: Path
) -> None:
    from hack.registry import LocalRegistry

    assert isinstance(registry, LocalRegistry)
    ref = registry.push_dir(adapter_files, "adapters/fetch-ok:1")
    dest = tmp_path / "mnt" / "adapter" / "fetch-ok"
    r = fetch("--image", ref, "--dest", str(dest), "--docker-config", str(registry.docker_config))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in dest.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (dest / name).read_bytes() == (adapter_files / name).read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["fetch-ok"], "no temp dirs left behind"


@needs_registry
def test_pull_with_secret_directory(registry: object, adapter_files: Path, tmp_path: Path) -> None:
    from hack.registry import LocalRegistry

    assert isinstance(registry, LocalRegistry)
    ref = registry.push_dir(adapter_files, "adapters/fetch-dir:1")
    secrets = tmp_path / "config.d" / "x-inference-adapter"
    secrets.mkdir(parents=True)
    (secrets / "pull.json").write_text(registry.docker_config.read_text())
    dest = tmp_path / "dest"
    r = fetch("--image", ref, "--dest", str(dest), "--docker-config", str(tmp_path / "config.d"))
    assert r.returncode == 0, r.stderr
    assert (dest / "adapter_config.json").is_file()


@needs_registry
def test_wrong_credentials_fail_clearly(
    registry: object, adapter_files: Path, tmp_path: Path
) -> None:
    from hack.registry import LocalRegistry

    assert isinstance(registry, LocalRegistry)
    ref = registry.push_dir(adapter_files, "adapters/fetch-denied:1")
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"auths": {registry.host: {"username": registry.user, "password": "wrong"}}})
    )
    dest = tmp_path / "dest"
    r = fetch("--image", ref, "--dest", str(dest), "--docker-config", str(bad))
    assert r.returncode == 1
    assert "rejected the credentials" in r.stderr and "imagePullSecret" in r.stderr
    assert "Traceback" not in r.stderr
    assert not dest.exists(), "a failed pull must leave nothing half-done"
    r = fetch("--image", ref, "--dest", str(dest))
    assert r.returncode == 1 and "needs credentials" in r.stderr and "--docker-config" in r.stderr


@needs_registry
def test_missing_tag_fails_clearly(registry: object, tmp_path: Path) -> None:
    from hack.registry import LocalRegistry

    assert isinstance(registry, LocalRegistry)
    r = fetch(
        "--image",
        f"{registry.host}/adapters/none:9",
        "--dest",
        str(tmp_path / "d"),
        "--docker-config",
        str(registry.docker_config),
    )
    assert r.returncode == 1 and "'9' not found" in r.stderr


def _layer(tmp_path: Path, *members: tuple[str, bytes | None, str | None]) -> Path:
    """A tar layer of (name, file content or None, symlink target or None) members."""
    import io
    import tarfile

    blob = tmp_path / "layer.tar"
    with tarfile.open(blob, "w") as tar:
        for name, content, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                data = content or b""
                info.size, info.mode = len(data), 0o4755
                tar.addfile(info, io.BytesIO(data))
    return blob


@pytest.fixture(params=["with extraction filters", "python < 3.11.4"])
def python_filters(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both kinds of Python: the serving image's Debian python3 (3.11.2) has no tar filters."""
    import tarfile

    if request.param == "python < 3.11.4":
        original = tarfile.TarFile.extractall
        monkeypatch.delattr(tarfile, "data_filter", raising=False)

        def extractall(self: tarfile.TarFile, path: str = ".", members: object = None,
                       *, numeric_owner: bool = False) -> None:  # fmt: skip
            original(self, path, members, numeric_owner=numeric_owner)  # type: ignore[arg-type]

        monkeypatch.setattr(tarfile.TarFile, "extractall", extractall)


@pytest.mark.usefixtures("python_filters")
def test_layers_extract_on_every_python_and_lose_setuid(tmp_path: Path) -> None:
    from serving.fetch import _extract_layer

    root = tmp_path / "root"
    root.mkdir()
    blob = _layer(tmp_path, ("data/config.json", b"{}", None), ("data/link", None, "config.json"))
    _extract_layer(blob, "application/vnd.oci.image.layer.v1.tar", root)
    assert (root / "data" / "config.json").read_text() == "{}"
    assert (root / "data" / "link").resolve() == (root / "data" / "config.json").resolve()
    assert not (root / "data" / "config.json").stat().st_mode & 0o4000


@pytest.mark.usefixtures("python_filters")
@pytest.mark.parametrize(
    "member",
    [("../escape", b"x", None), ("/abs", b"x", None), ("data/out", None, "../../etc/passwd")],
)
def test_layers_that_escape_the_destination_are_refused(
    tmp_path: Path, member: tuple[str, bytes | None, str | None]
) -> None:
    import tarfile

    from serving.fetch import _extract_layer

    root = tmp_path / "root"
    root.mkdir()
    blob = _layer(tmp_path, member)
    with pytest.raises((FetchError, tarfile.FilterError)):
        _extract_layer(blob, "application/vnd.oci.image.layer.v1.tar", root)
    assert not (tmp_path / "escape").exists()
