"""The pure parts of bench/workspaces.py: the audit-log reader and tally, the floor's copies
of the operator's objects, per-stage timings and the tables (terminal and README)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from kaito.runtime.gvk import NODE, POD, STATEFULSET
from kaito.runtime.informer import InformerEvent
from kaito.runtime.objects import KObject

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

import audit_log  # noqa: E402
import ws_report  # noqa: E402
import ws_support  # noqa: E402

# ------------------------------------------------------------------ audit log


def _event(user: str, verb: str, resource: str, code: int, at: str, sub: str = "") -> bytes:
    ref = {"resource": resource} | ({"subresource": sub} if sub else {})
    doc = {
        "user": {"username": user},
        "verb": verb,
        "objectRef": ref,
        "responseStatus": {"code": code},
        "requestReceivedTimestamp": at,
    }
    return json.dumps(doc).encode() + b"\n"


def test_policy_records_only_the_named_users() -> None:
    text = audit_log.policy(["a", "b c"])
    assert 'users: ["a", "b c"]' in text
    assert text.rstrip().endswith("- level: None")


def test_audit_log_reads_complete_lines_as_the_file_grows(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = audit_log.AuditLog(path)
    log.refresh()  # no file yet: nothing, no error
    first = _event("ours", "create", "nodeclaims", 201, "2026-01-01T00:00:01.000000Z")
    second = _event("ours", "update", "workspaces", 200, "2026-01-01T00:00:02Z", sub="status")
    path.write_bytes(first + second[:20])  # the second is still being written
    log.refresh()
    assert [r.resource for r in log.requests] == ["nodeclaims"]
    with path.open("ab") as f:
        f.write(second[20:])
    log.refresh()
    assert [r.resource for r in log.requests] == ["nodeclaims", "workspaces/status"]
    assert log.requests[1].at - log.requests[0].at == pytest.approx(1.0)


def test_between_filters_by_user_and_half_open_window(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(
        _event("ours", "get", "nodes", 200, "2026-01-01T00:00:00Z")
        + _event("other", "get", "nodes", 200, "2026-01-01T00:00:01Z")
        + _event("ours", "get", "nodes", 200, "2026-01-01T00:00:02Z")
    )
    log = audit_log.AuditLog(path)  # between() reads the file by itself
    epoch = audit_log._epoch("2026-01-01T00:00:00Z")
    assert len(log.between(["ours"], epoch, epoch + 2)) == 1
    assert len(log.between(["ours", "other"], epoch, epoch + 3)) == 3


def _req(verb: str, resource: str, code: int = 200, user: str = "ours") -> audit_log.Request:
    return audit_log.Request(user=user, verb=verb, resource=resource, code=code, at=0.0)


def test_tally_splits_a_self_provisioning_operator_by_the_work_done() -> None:
    requests = [
        _req("create", "nodes"),  # provider: node create
        _req("patch", "nodeclaims"),  # provider: finalizer
        _req("update", "nodeclaims/status"),  # provider: claim status
        _req("create", "nodeclaims"),  # own
        _req("get", "workspaces", 404),
        _req("create", "services", 409),
        _req("create", "events", 500),
    ]
    t = audit_log.tally(requests)
    assert (t.own, t.provider) == (4, 3)
    assert (t.conflicts, t.not_found, t.other_errors, t.failed) == (1, 1, 1, 3)
    assert t.gets == 1
    assert t.by_kind["create services 409"] == 1
    assert t.top(1).endswith(" 1")


def test_tally_counts_a_separate_provider_by_its_user() -> None:
    requests = [_req("create", "nodes", user="prov"), _req("create", "nodes", user="ours")]
    t = audit_log.tally(requests, ["prov"])
    assert (t.own, t.provider) == (1, 1)


# ------------------------------------------------------------------ the floor


def _templates() -> list[dict[str, Any]]:
    meta = {"uid": "u", "resourceVersion": "7", "managedFields": [], "finalizers": ["f"]}
    labels = {"kaito.sh/workspace": "tmpl", "kaito.sh/workspacenamespace": "tns"}
    return [
        {
            "kind": "StatefulSet",
            "metadata": {"name": "tmpl", "namespace": "tns", "labels": labels, **meta},
            "spec": {"nodeName": "abcdefghijk"},
            "status": {"replicas": 1},
        },
        {
            "kind": "Service",
            "metadata": {"name": "tmpl", "namespace": "tns", "ownerReferences": [{}]},
            "spec": {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"]},
        },
        {
            "kind": "Service",
            "metadata": {"name": "tmpl-headless", "namespace": "tns"},
            "spec": {"clusterIP": "None"},
        },
        {
            "kind": "Node",
            "metadata": {"name": "abcdefghijk", "labels": labels, **meta},
            "status": {"capacity": {"nvidia.com/gpu": "1"}, "conditions": [{}]},
        },
    ]


def test_strip_template_makes_objects_creatable_again() -> None:
    sts, svc, headless, node = (ws_support.strip_template(o) for o in _templates())
    assert "status" not in sts
    for key in ("uid", "resourceVersion", "managedFields", "finalizers"):
        assert key not in sts["metadata"]
    assert "ownerReferences" not in svc["metadata"]
    assert "clusterIP" not in svc["spec"] and "clusterIPs" not in svc["spec"]
    assert headless["spec"]["clusterIP"] == "None"
    assert node["status"] == {"capacity": {"nvidia.com/gpu": "1"}}


def test_floor_copies_rename_node_namespace_and_workspace_in_creation_order() -> None:
    templates = [ws_support.strip_template(o) for o in _templates()]
    copies = ws_support.floor_copies(templates, "tmpl", "tns", "floor-1", 3)
    assert list(copies) == ["ws-0000", "ws-0001", "ws-0002"]
    objs = copies["ws-0001"]
    assert [o["kind"] for o in objs] == ["Node", "Service", "Service", "StatefulSet"]
    node_name = ws_support.node_name_for("floor-1", 1)
    assert len(node_name) == 11 and node_name.isalnum() and node_name.islower()
    assert objs[0]["metadata"]["name"] == node_name
    assert objs[-1]["spec"]["nodeName"] == node_name
    assert objs[-1]["metadata"]["labels"] == {
        "kaito.sh/workspace": "ws-0001",
        "kaito.sh/workspacenamespace": "floor-1",
    }
    assert {o["metadata"].get("namespace") for o in objs[1:]} == {"floor-1"}
    assert copies["ws-0000"][0]["metadata"]["name"] != node_name


# ------------------------------------------------------------------ stages


class _Informer:
    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)


class _Cache:
    def __init__(self) -> None:
        self.informers: dict[str, _Informer] = {}

    def informer(self, gvk: Any, **_: Any) -> _Informer:
        return self.informers.setdefault(gvk.kind, _Informer())


def _emit(cache: _Cache, kind: str, obj: dict[str, Any]) -> None:
    gvk = {"Pod": POD, "Node": NODE, "StatefulSet": STATEFULSET}[kind]
    for listener in cache.informers[kind].listeners:
        listener(InformerEvent(type="MODIFIED", gvk=gvk, obj=KObject(obj), old=None))


def test_stages_mark_each_first_moment_and_summarise_after_each_start() -> None:
    cache = _Cache()
    clock = iter([10.0, 11.0, 12.0, 12.0, 13.0, 14.0])
    stages = ws_support.Stages(cache, "ns", clock=lambda: next(clock))  # type: ignore[arg-type]
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    labels = {"kaito.sh/workspace": "ws-0000"}
    _emit(cache, "Node", {"metadata": {"name": "n", "labels": labels}})  # node at 10
    _emit(cache, "Node", {"metadata": {"name": "n", "labels": labels}, "status": ready})  # 11
    _emit(cache, "Pod", {"metadata": {"name": "ws-0000-0"}, "spec": {"nodeName": "n"}})  # 12
    _emit(cache, "Node", {"metadata": {"name": "n", "labels": labels}, "status": ready})  # kept
    sts = {"metadata": {"name": "ws-0000"}, "spec": {"replicas": 1}}
    _emit(cache, "StatefulSet", sts | {"status": {"readyReplicas": 0}})  # 13
    _emit(cache, "StatefulSet", sts | {"status": {"readyReplicas": 1}})  # 14
    assert stages.at["ws-0000"] == {
        "node": 10.0,
        "node Ready": 11.0,
        "pod": 12.0,
        "pod bound": 12.0,
        "StatefulSet": 13.0,
        "StatefulSet Ready": 14.0,
    }
    summary = stages.summary({"ws-0000": 9.0, "ws-0001": 9.5})
    assert summary == {
        "node": [1.0, 1.0],
        "node Ready": [2.0, 2.0],
        "pod": [3.0, 3.0],
        "pod bound": [3.0, 3.0],
        "StatefulSet": [4.0, 4.0],
        "StatefulSet Ready": [5.0, 5.0],
    }


# ------------------------------------------------------------------ tables


def _phase(who: str, n: int, latencies: list[float], **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"who": who, "n": n, "ready": len(latencies), "latencies": latencies}
    if who != "floor":
        result |= {
            "own_requests": 8 * n,
            "provider_requests": 2 * n,
            "conflicts": 0,
            "not_found": 1,
            "gets": 0,
            "idle_requests": 0,
            "cpu_s": 1.5,
            "rss_start": 50.0,
            "rss_end": 70.0,
            "delete_s": 2.0,
            "delete_failed_requests": 0,
            "delete_reconcile_errors": 2.0,
            "requests_by_kind": "create nodeclaims 1",
        }
    return result | extra


def test_percentile_of_one_value_and_of_many() -> None:
    assert ws_report.percentile([4.0], 99) == 4.0
    assert ws_report.percentile([float(i) for i in range(101)], 99) == pytest.approx(99.0)
    assert ws_report.percentile([1.0, 2.0, 3.0], 50) == 2.0


def test_rows_divide_by_the_floor_of_the_same_round_and_size() -> None:
    results = [
        _phase("floor", 2, [1.0, 2.0], round=0),
        _phase("kaito-py", 2, [2.0, 3.0], round=0),
        _phase("floor", 2, [4.0, 4.0], round=1),
        _phase("kaito-py", 2, [2.0, 4.0], round=1),
    ]
    rows = ws_report.rows(results)
    col = {name: i for i, name in enumerate(ws_report.COLUMNS)}
    floor_p99 = ws_report.percentile([1.0, 2.0], 99)
    assert rows[1][col["p99 ÷ floor"]] == f"{ws_report.percentile([2.0, 3.0], 99) / floor_p99:.2f}x"
    assert rows[3][col["p99 ÷ floor"]] == f"{ws_report.percentile([2.0, 4.0], 99) / 4.0:.2f}x"
    assert rows[0][col["p99 ÷ floor"]] == "-"
    assert rows[0][col["requests/WS own"]] == "-" and rows[0][col["409"]] == "-"
    assert rows[1][col["requests/WS own"]] == "8.0"
    assert rows[1][col["+ provider"]] == "2.0"
    assert rows[1][col["delete errors"]] == "2"  # the reconcile errors, more than failed requests
    assert rows[1][col["RSS MiB"]] == "50 → 70"


def test_no_percentile_when_some_never_got_there() -> None:
    results = [_phase("floor", 2, [1.0, 1.0]), _phase("upstream", 3, [2.0, 3.0])]
    cells = ws_report.rows(results)[1]
    col = {name: i for i, name in enumerate(ws_report.COLUMNS)}
    assert cells[col["ready"]] == "2/3"
    assert cells[col["p99 s"]] == "-" and cells[col["p99 ÷ floor"]] == "-"


def test_text_table_lists_requests_by_kind_and_the_stages() -> None:
    stages = {"node": [0.5, 0.9], "Succeeded": [2.0, 3.0]}
    text = ws_report.text_table(
        [_phase("floor", 1, [1.0]), _phase("kaito-py", 1, [2.0], stages=stages)]
    )
    assert "kaito-py N=1: create nodeclaims 1" in text
    stage_lines = text.split("stages, p50/p99 s after each start:")[1].strip().splitlines()
    assert stage_lines[0].split()[:3] == ["N", "phase", "claim"]
    assert "0.5/0.9" in stage_lines[1] and "2.0/3.0" in stage_lines[1]


def test_update_readme_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    doc = {
        "profile": "stock",
        "started": "2026-01-01T00:00:00+00:00",
        "cpus": 2,
        "results": [
            _phase("floor", 1, [1.0], stages={"pod Ready": [1.0, 1.0]}),
            _phase("kaito-py", 1, [1.1]),
        ],
    }
    results = tmp_path / "r.json"
    results.write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{ws_report.BEGIN}\nold table\n{ws_report.END}\nafter\n")
    ws_report.update_readme(readme, [results])
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith(f"{ws_report.END}\nafter\n")
    assert "old table" not in text
    assert "| 1 (stock) | 1 | kaito-py | 1/1 |" in text
    assert "profile stock, 2 CPUs" in text
    stage_rows = [line for line in text.splitlines() if "1.0/1.0" in line]
    assert stage_rows == ["| 1 (stock) | 1 | floor | - | - | - | - | - | - | - | 1.0/1.0 | - | - |"]
    doc["operator_args"] = ["--workers=100"]
    results.write_text(json.dumps(doc))
    ws_report.update_readme(readme, [results])
    assert "| 1 (stock --workers=100) | 1 | kaito-py |" in readme.read_text()
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="lacks the markers"):
        ws_report.update_readme(readme, [results])
