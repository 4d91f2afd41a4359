"""Structured logs: records made inside a reconcile carry controller, object and reconcile ID.

A controller sets ``log_context`` for each reconcile; the operator's log handler copies
those fields onto every record made in that task (and in tasks it starts), whatever logger
made it. Both formats print them: ``json`` as keys of one object per line, ``text`` as
``key=value`` after the message, so nothing a reconcile logs loses the object it was about.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Any, Literal

log_context: ContextVar[dict[str, str] | None] = ContextVar("kaito_log_context", default=None)
"""Fields added to every log record made in the current task (set per reconcile)."""

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _add_context(record: logging.LogRecord) -> None:
    ctx = log_context.get()
    if ctx:
        for key, value in ctx.items():
            if not hasattr(record, key):
                setattr(record, key, value)


class ContextFilter(logging.Filter):
    """Copies ``log_context`` onto records so any formatter can print them."""

    def filter(self, record: logging.LogRecord) -> bool:
        _add_context(record)
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record carries beyond the standard ones (``extra=`` and the context)."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(extra_fields(record))
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...``; a traceback, if any, on the lines after."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        return line


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or any(c in text for c in ' "=\n') else text


def setup_logging(
    level: int | str = logging.INFO,
    *,
    log_format: LogFormat = "json",
    stream: Any = None,
) -> None:
    """Configure the root logger of an operator process (stderr unless ``stream``)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
