"""What counts as a hand edit of an owned object: a change at a path the operator sets."""

from __future__ import annotations

import copy
from typing import Any

from kaito.controllers.apply import fingerprint, project

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
