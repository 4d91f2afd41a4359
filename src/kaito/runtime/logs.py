"""Structured logs: records made inside a reconcile carry controller, key and reconcile ID."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Any

log_context: ContextVar[dict[str, str] | None] = ContextVar("kaito_log_context", default=None)
"""Fields added to every log record made in the current task (set per reconcile)."""

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    """Copies ``log_context`` onto records so any formatter can print them."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = log_context.get()
        if ctx:
            for key, value in ctx.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: int | str = logging.INFO, *, json_lines: bool = True) -> None:
    """Configure the root logger for an operator process (stderr, JSON lines by default)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
