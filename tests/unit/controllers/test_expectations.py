"""Create expectations: pending until an event shows the object, lapsing after the TTL."""

from __future__ import annotations

from kaito.controllers.expectations import CreateExpectations, FinalWrites
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


def test_a_final_write_is_remembered_by_uid_until_it_lapses() -> None:
    now = [0.0]
    sent = FinalWrites(ttl=10.0, clock=lambda: now[0])
    assert not sent.sent("uid-1")
    sent.mark("uid-1")
    sent.mark("")  # an object without a uid is never remembered
    assert sent.sent("uid-1") and not sent.sent("uid-2") and not sent.sent("")
    now[0] = 10.5
    assert not sent.sent("uid-1") and len(sent) == 0


def test_final_writes_stay_bounded() -> None:
    now = [0.0]
    sent = FinalWrites(ttl=10.0, clock=lambda: now[0])
    for i in range(1024):
        sent.mark(f"old-{i}")
    now[0] = 20.0
    sent.mark("new")
    assert len(sent) == 1 and sent.sent("new")
