"""Cache reads when several controllers watch one kind through differently scoped informers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from kaito.runtime.cache import Cache, InformerNotFound
from kaito.runtime.client import Client
from kaito.runtime.config import ClientConfig
from kaito.runtime.gvk import SERVICE


def service(name: str, ns: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "resourceVersion": "1"},
    }


@pytest.fixture
async def cache() -> AsyncIterator[Cache]:
    client = Client(ClientConfig(host="http://127.0.0.1:9", ssl_context=None))
    yield Cache(client)
    await client.close()


async def test_get_finds_an_object_that_only_a_later_scoped_informer_selects(
    cache: Cache,
) -> None:
    # the Workspace controller's Services, then the InferenceSet controller's
    cache.informer(SERVICE, label_selector="kaito.sh/workspace").replace(
        [service("phi-0", "team", **{"kaito.sh/workspace": "phi-0"})], "1"
    )
    cache.informer(SERVICE, label_selector="inferenceset.kaito.sh/created-by").replace(
        [service("phi", "team", **{"inferenceset.kaito.sh/created-by": "phi"})], "1"
    )
    found = cache.get(SERVICE, "team", "phi")
    assert found is not None and found.labels == {"inferenceset.kaito.sh/created-by": "phi"}
    assert cache.get(SERVICE, "team", "phi-0") is not None
    assert cache.get(SERVICE, "team", "absent") is None


async def test_get_of_a_kind_nobody_watches_says_so(cache: Cache) -> None:
    with pytest.raises(InformerNotFound):
        cache.get(SERVICE, "team", "phi")
