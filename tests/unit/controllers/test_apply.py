"""What counts as a hand edit of an owned object: a change at a path the operator sets."""

from __future__ import annotations

import copy
from typing import Any, cast

from kaito.controllers.apply import Applier, fingerprint, project
from kaito.runtime.errors import AlreadyExists
from kaito.runtime.gvk import SERVICE
from kaito.runtime.objects import KObject

DESIRED: dict[str, Any] = {
    "metadata": {"name": "ws", "labels": {"kaito.sh/workspace": "ws"}},
    "spec": {
        "replicas": 1,
        "template": {
            "spec": {
                "containers": [
                    {"name": "ws", "image": "serving:1", "args": ["--a"], "resources": {}}
                ],
                "volumes": [{"name": "v", "emptyDir": {}}],
            }
        },
    },
}


def live() -> dict[str, Any]:
    """DESIRED as the API server returns it: defaults added, empty values left out."""
    obj = copy.deepcopy(DESIRED)
    obj["metadata"] |= {"uid": "u", "resourceVersion": "7", "generation": 2}
    obj["metadata"]["labels"]["user-added"] = "yes"
    container = obj["spec"]["template"]["spec"]["containers"][0]
    del container["resources"]
    container |= {"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/x"}
    obj["spec"]["template"]["spec"]["volumes"][0]["emptyDir"] = {}
    obj["spec"]["updateStrategy"] = {"type": "RollingUpdate"}
    obj["status"] = {"replicas": 1, "readyReplicas": 1}
    return obj


def reference() -> str:
    return fingerprint(DESIRED, DESIRED)


def test_defaults_additions_and_omitted_empties_are_no_edit() -> None:
    assert fingerprint(live(), DESIRED) == reference()


def test_scale_image_and_removed_label_are_edits() -> None:
    for edit in (
        lambda o: o["spec"].__setitem__("replicas", 3),
        lambda o: o["spec"]["template"]["spec"]["containers"][0].__setitem__("image", "x:2"),
        lambda o: o["spec"]["template"]["spec"]["containers"][0]["args"].append("--b"),
        lambda o: o["metadata"]["labels"].pop("kaito.sh/workspace"),
        lambda o: o["spec"]["template"]["spec"]["volumes"].append({"name": "extra"}),
    ):
        obj = live()
        edit(obj)
        assert fingerprint(obj, DESIRED) != reference()


def test_projection_keeps_only_the_desired_paths() -> None:
    assert project({"a": {"b": 1, "c": 2}, "d": [1, 2]}, {"a": {"b": 0}, "d": [0, 0]}) == {
        "a": {"b": 1},
        "d": [1, 2],
    }
    assert project({"d": [1]}, {"d": [0, 0]}) == {"d": [1]}  # a list of another length


class _Cache:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    def get(self, gvk: Any, namespace: str | None, name: str) -> Any:
        found = self.objects.get(name)
        return None if found is None else KObject(found)


class _Client:
    def __init__(self, exists: bool = False) -> None:
        self.exists = exists
        self.calls: list[str] = []

    async def create(self, obj: dict[str, Any], *, field_manager: str | None = None) -> Any:
        self.calls.append("create")
        if self.exists:
            raise AlreadyExists(409, "AlreadyExists", "services already exists")
        return KObject(copy.deepcopy(obj))

    async def apply(self, obj: dict[str, Any], **_: Any) -> Any:
        self.calls.append("apply")
        return KObject(copy.deepcopy(obj))


def _service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ws", "namespace": "default", "ownerReferences": [{"uid": "u1"}]},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }


async def test_an_absent_object_is_created_once_then_applied() -> None:
    client, cache = _Client(), _Cache()
    applier = Applier(cast(Any, client), cast(Any, cache))
    assert await applier.apply_if_changed(SERVICE, _service(), create_if_absent=True)
    assert client.calls == ["create"]
    # its event is not in yet (or someone deleted it): an apply serves both, never a 409
    assert await applier.apply_if_changed(SERVICE, _service(), create_if_absent=True)
    assert client.calls == ["create", "apply"]


async def test_an_object_made_elsewhere_is_applied_after_the_create_meets_it() -> None:
    client = _Client(exists=True)
    applier = Applier(cast(Any, client), cast(Any, _Cache()))
    assert await applier.apply_if_changed(SERVICE, _service(), create_if_absent=True)
    assert client.calls == ["create", "apply"]


async def test_without_create_if_absent_an_absent_object_is_applied() -> None:
    client = _Client()
    applier = Applier(cast(Any, client), cast(Any, _Cache()))
    assert await applier.apply_if_changed(SERVICE, _service())
    assert client.calls == ["apply"]


async def test_a_created_object_in_the_cache_is_not_written_again() -> None:
    client, cache = _Client(), _Cache()
    applier = Applier(cast(Any, client), cast(Any, cache))
    desired = _service()
    await applier.apply_if_changed(SERVICE, desired, create_if_absent=True)
    cache.objects["ws"] = copy.deepcopy(desired)  # as the watch event brings it
    assert not await applier.apply_if_changed(SERVICE, _service(), create_if_absent=True)
    assert client.calls == ["create"]
