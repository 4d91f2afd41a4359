"""Create expectations: pending until an event shows the object, lapsing after the TTL."""

from __future__ import annotations

from kaito.controllers.expectations import CreateExpectations
from kaito.runtime.gvk import GVK
from kaito.runtime.informer import ADDED, InformerEvent
from kaito.runtime.objects import KObject

CLAIM = GVK("karpenter.sh", "v1", "NodeClaim")


def event(name: str) -> InformerEvent:
    return InformerEvent(ADDED, CLAIM, KObject({"metadata": {"name": name}}), None)


def test_pending_until_an_event_shows_the_object() -> None:
    exp = CreateExpectations()
    assert not exp.pending(None, "ws1")
    exp.expect(None, "ws1")
    assert exp.pending(None, "ws1")
    exp.observe(event("other"))
    assert exp.pending(None, "ws1")
    exp.observe(event("ws1"))
    assert not exp.pending(None, "ws1") and len(exp) == 0


def test_an_expectation_never_met_lapses() -> None:
    now = [0.0]
    exp = CreateExpectations(ttl=10.0, clock=lambda: now[0])
    exp.expect(None, "ws1")
    now[0] = 9.0
    assert exp.pending(None, "ws1")
    now[0] = 10.5
    assert not exp.pending(None, "ws1") and len(exp) == 0


def test_a_failed_create_expects_nothing() -> None:
    exp = CreateExpectations()
    exp.expect("ns", "cm")
    exp.forget("ns", "cm")
    assert not exp.pending("ns", "cm")
