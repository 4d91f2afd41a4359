"""Reconcile log lines name the controller, the object and the reconcile (issue 18, defect 7)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from kaito.operator import parse_args
from kaito.runtime.errors import ServerError
from kaito.runtime.logs import setup_logging
from kaito.runtime.ratelimiter import ItemExponentialFailureRateLimiter
from kaito.runtime.request import Request, Result

from .test_controller import OWNER, make, obj, offline

reconciler_log = logging.getLogger("kaito.controllers.example")


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def run_one_failing_reconcile() -> None:
    async def reconcile(req: Request) -> Result:
        reconciler_log.info("looking at %s", req.name)
        raise RuntimeError("kaboom")

    # the retry comes after the test: one reconcile, two lines
    ctrl, _, cache = make(reconcile, rate_limiter=ItemExponentialFailureRateLimiter(60, 60))
    ctrl.watches(OWNER)
    inf = cache.informer(OWNER)
    offline(inf)
    await ctrl.start()
    inf.apply("ADDED", obj("ws-1"))
    await asyncio.sleep(0.1)
    await ctrl.stop()


async def test_json_lines_carry_controller_object_and_reconcile_id(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging(logging.INFO, log_format="json", stream=out)
    await run_one_failing_reconcile()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    inside = [
        line for line in lines if line["msg"] in ("looking at ws-1", "reconcile failed: kaboom")
    ]
    assert len(inside) == 2, lines
    for line in inside:
        assert line["controller"] == "test"
        assert line["namespace"] == "ns"
        assert line["key"] == "ns/ws-1"
        assert len(line["reconcile_id"]) == 36
    assert inside[0]["reconcile_id"] == inside[1]["reconcile_id"]
    assert inside[0]["logger"] == "kaito.controllers.example"  # any logger, not only ours
    assert "RuntimeError: kaboom" in inside[1]["error"]


async def test_text_lines_keep_the_fields(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging(logging.INFO, log_format="text", stream=out)
    await run_one_failing_reconcile()
    text = out.getvalue()
    line = next(x for x in text.splitlines() if "reconcile failed: kaboom" in x)
    assert " controller=test " in line
    assert " key=ns/ws-1 " in line
    assert " reconcile_id=" in line
    assert "Traceback" in text  # the error's traceback follows its line


def test_operator_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_args([]).log_format == "text"
    assert parse_args(["--log-format", "json"]).log_format == "json"
    monkeypatch.setenv("KAITO_LOG_FORMAT", "json")
    assert parse_args([]).log_format == "json"
    with pytest.raises(SystemExit):
        parse_args(["--log-format", "xml"])


async def test_api_errors_are_one_line_and_panics_keep_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def reconcile(req: Request) -> Result:
        if req.name == "api":
            raise ServerError(503, "ServiceUnavailable", "apiserver is restarting")
        raise KeyError("bug")

    ctrl, metrics, cache = make(reconcile, rate_limiter=ItemExponentialFailureRateLimiter(60, 60))
    ctrl.watches(OWNER)
    inf = cache.informer(OWNER)
    offline(inf)
    await ctrl.start()
    inf.apply("ADDED", obj("api"))
    inf.apply("ADDED", obj("bug"))
    await asyncio.sleep(0.1)
    await ctrl.stop()
    by_key = {r.key: r for r in caplog.records if r.getMessage().startswith("reconcile failed")}
    assert by_key["ns/api"].exc_info is None
    assert "ServerError" in by_key["ns/api"].getMessage()
    assert by_key["ns/bug"].exc_info is not None
    panics = metrics.registry.get_sample_value(
        "controller_runtime_reconcile_panics_total", {"controller": "test"}
    )
    assert panics == 1
