"""Label selector parsing and matching, with Kubernetes' semantics."""

from __future__ import annotations

import pytest

from kaito.runtime.selectors import SelectorError, match_fields, parse_selector


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {"a": "b"}, True),
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "b"}, True),
        ("a=b", {"a": "c"}, False),
        ("a=b", {}, False),
        ("a!=b", {}, True),  # != matches objects without the key
        ("a!=b", {"a": "b"}, False),
        ("a in (x, y)", {"a": "y"}, True),
        ("a in (x,y)", {"a": "z"}, False),
        ("a notin (x,y)", {}, True),
        ("a notin (x,y)", {"a": "x"}, False),
        ("a", {"a": ""}, True),
        ("a", {"b": "1"}, False),
        ("!a", {"b": "1"}, True),
        ("!a", {"a": "1"}, False),
        ("app=web,tier!=db,!legacy", {"app": "web", "tier": "fe"}, True),
        ("kaito.sh/workspace=ws-1", {"kaito.sh/workspace": "ws-1"}, True),
    ],
)
def test_matching(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector).matches(labels) is expected


def test_mapping_and_round_trip() -> None:
    sel = parse_selector({"app": "web", "tier": "fe"})
    assert sel.matches({"app": "web", "tier": "fe", "x": "y"})
    assert str(sel) == "app=web,tier=fe"
    text = "a=b,c in (x,y),!d,e,f!=g"
    assert str(parse_selector(text)) == text
    assert parse_selector(text).equalities() == [("a", "b")]


@pytest.mark.parametrize("bad", ["a in x", "a=b,,", "a in (x", "=b", "a b"])
def test_bad_selectors_raise(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(bad)


def test_field_selectors() -> None:
    obj = {"metadata": {"name": "n1", "namespace": "ns"}, "spec": {"nodeName": "gpu-1"}}
    assert match_fields("metadata.name=n1", obj)
    assert match_fields("metadata.namespace=ns,spec.nodeName=gpu-1", obj)
    assert not match_fields("spec.nodeName!=gpu-1", obj)
    assert match_fields(None, obj)
