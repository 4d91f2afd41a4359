"""Typed API errors: callers branch on the exception class, never on status codes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cause:
    """One field-level reason the apiserver gave for rejecting an object (422)."""

    field: str
    reason: str
    message: str


class ApiError(Exception):
    """Any non-2xx answer from the apiserver, with its decoded Status object."""

    def __init__(
        self,
        status: int,
        reason: str = "",
        message: str = "",
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}
        self.retry_after = retry_after
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")


class NotFound(ApiError):
    """404: the object (or its resource type) does not exist."""


class AlreadyExists(ApiError):
    """409 with reason AlreadyExists: a create hit an existing name."""


class Conflict(ApiError):
    """409: a resourceVersion/UID precondition or an apply field conflict failed."""


class Invalid(ApiError):
    """422: the object failed validation; ``causes`` names the offending fields."""

    @property
    def causes(self) -> list[Cause]:
        details = self.body.get("details") or {}
        return [
            Cause(
                field=str(c.get("field", "")),
                reason=str(c.get("reason", "")),
                message=str(c.get("message", "")),
            )
            for c in details.get("causes") or []
        ]


class Gone(ApiError):
    """410: the requested resourceVersion has been compacted away; relist."""


class Forbidden(ApiError):
    """403: RBAC denied the request."""


class Unauthorized(ApiError):
    """401: credentials were missing or rejected."""


class TooManyRequests(ApiError):
    """429 that persisted through every retry."""


class ServerError(ApiError):
    """5xx that persisted through every retry."""


class Fenced(ApiError):
    """The client refuses writes: its process lost the leader Lease (see ``Client.fence``).

    Never sent: raised before a request leaves, so nothing reaches the apiserver.
    """

    def __init__(self, why: str) -> None:
        super().__init__(0, "Fenced", f"write refused: {why}")


class WatchExpired(Gone):
    """A watch stream reported 410 / "too old resource version"."""


def error_from_response(status: int, body: bytes, retry_after: float | None = None) -> ApiError:
    """Map an HTTP status plus its Status body to the most specific error class."""
    decoded: dict[str, Any] = {}
    try:
        parsed = json.loads(body) if body else {}
        if isinstance(parsed, dict):
            decoded = parsed
    except ValueError:
        decoded = {}
    reason = str(decoded.get("reason", ""))
    message = str(decoded.get("message", "") or body[:500].decode("utf-8", "replace"))
    cls: type[ApiError]
    if status == 404:
        cls = NotFound
    elif status == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif status == 422:
        cls = Invalid
    elif status == 410:
        cls = Gone
    elif status == 403:
        cls = Forbidden
    elif status == 401:
        cls = Unauthorized
    elif status == 429:
        cls = TooManyRequests
    elif status >= 500:
        cls = ServerError
    else:
        cls = ApiError
    return cls(status, reason, message, decoded, retry_after)
