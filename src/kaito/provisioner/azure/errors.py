"""Azure failures → the stable reasons the machine controller copies into NodeClaim conditions.

Every failure falls in one of four kinds, which decide what the provisioner does with it:

* ``terminal``  - this attempt cannot succeed (quota, SKU, capacity, bad request, LRO Failed);
  reported as ``Phase.FAILED``.
* ``throttled`` - ARM said 429; reported as ``Phase.THROTTLED`` with Retry-After.
* ``transient`` - 5xx, network, auth hiccups; raised as ``ProvisionerError`` for a requeue.
* ``conflict``  - another operation on the pool is still running; the pool is pending.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

Kind = Literal["terminal", "throttled", "transient", "conflict", "not_found"]

THROTTLED = "Throttled"
QUOTA_EXCEEDED = "QuotaExceeded"
SKU_NOT_AVAILABLE = "SKUNotAvailable"
INSUFFICIENT_CAPACITY = "InsufficientCapacity"
PROVISIONING_FAILED = "ProvisioningFailed"
INVALID_REQUEST = "InvalidRequest"
AUTHORIZATION_FAILED = "AuthorizationFailed"
AUTHENTICATION_FAILED = "AuthenticationFailed"
AZURE_SERVER_ERROR = "AzureServerError"
AZURE_UNREACHABLE = "AzureUnreachable"
OPERATION_IN_PROGRESS = "OperationInProgress"
NOT_FOUND = "NotFound"

_QUOTA = re.compile(r"quota", re.IGNORECASE)
_SKU_CODES = {
    "skunotavailable",
    "vmsizenotsupported",
    "invalidvmsize",
    "errcode_invalidvmsize",
    "vmsizenotavailable",
}
_SKU_MESSAGE = re.compile(
    r"(not available in (location|region))|(is not allowed in your subscription)"
    r"|(vm size .* (is )?not supported)",
    re.IGNORECASE,
)
_CAPACITY_CODES = {
    "allocationfailed",
    "zonalallocationfailed",
    "overconstrainedallocationrequest",
    "overconstrainedzonalallocationrequest",
}
_THROTTLE_CODES = {"toomanyrequests", "subscriptionrequeststhrottled", "throttled"}
_AUTHZ_CODES = {"authorizationfailed", "linkedauthorizationfailed", "forbidden"}
_IN_PROGRESS = re.compile(r"in ?progress|another operation", re.IGNORECASE)


@dataclass(frozen=True)
class Classified:
    kind: Kind
    reason: str
    message: str
    retry_after_s: float | None = None


def _error_fields(body: Any) -> tuple[list[str], str]:
    """All error codes (outer and details) and the most specific message of an ARM body."""
    codes: list[str] = []
    messages: list[str] = []

    def walk(err: Any) -> None:
        if not isinstance(err, dict):
            return
        if isinstance(err.get("code"), str):
            codes.append(err["code"])
        if isinstance(err.get("message"), str) and err["message"].strip():
            messages.append(err["message"].strip())
        for detail in err.get("details") or []:
            walk(detail)
        walk(err.get("innererror"))

    if isinstance(body, dict):
        walk(body.get("error", body))
    return codes, (messages[-1] if messages else "")


def _body(exc: HttpResponseError) -> Any:
    response = exc.response
    if response is None:
        return None
    try:
        return json.loads(response.text())
    except (ValueError, TypeError, AttributeError):
        return None


def _retry_after(exc: HttpResponseError) -> float | None:
    response: Any = exc.response
    if response is None:
        return None
    raw = response.headers.get("Retry-After") or response.headers.get("x-ms-retry-after-ms")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    if "Retry-After" not in response.headers:
        value /= 1000.0
    return max(value, 0.0)


def classify_codes(
    status: int | None, codes: list[str], message: str, retry_after_s: float | None = None
) -> Classified:
    """The decision table, free of SDK types so it is easy to test."""
    lowered = {c.lower() for c in codes}
    text = message or (f"HTTP {status}" if status else "unknown Azure error")
    if status == 429 or lowered & _THROTTLE_CODES:
        return Classified("throttled", THROTTLED, text, retry_after_s)
    if status == 404 and not lowered - {"notfound", "resourcenotfound"}:
        return Classified("not_found", NOT_FOUND, text)
    if any(_QUOTA.search(c) for c in codes) or (
        (status is None or status < 500) and _QUOTA.search(message) and "exceed" in text.lower()
    ):
        return Classified("terminal", QUOTA_EXCEEDED, text)
    if lowered & _SKU_CODES or _SKU_MESSAGE.search(message):
        return Classified("terminal", SKU_NOT_AVAILABLE, text)
    if lowered & _CAPACITY_CODES:
        return Classified("terminal", INSUFFICIENT_CAPACITY, text)
    if status == 409 and (_IN_PROGRESS.search(message) or "operationnotallowed" in lowered):
        return Classified("conflict", OPERATION_IN_PROGRESS, text, retry_after_s)
    if status == 401:
        return Classified("transient", AUTHENTICATION_FAILED, text, retry_after_s)
    if status == 403 or lowered & _AUTHZ_CODES:
        return Classified("terminal", AUTHORIZATION_FAILED, text)
    if status is not None and status >= 500:
        return Classified("transient", AZURE_SERVER_ERROR, text, retry_after_s)
    if status is not None and 400 <= status < 500:
        return Classified("terminal", INVALID_REQUEST, text)
    # No HTTP error status: a long-running operation that ended Failed or Canceled.
    return Classified("terminal", PROVISIONING_FAILED, text)


def classify(exc: BaseException) -> Classified:
    """Classify anything the SDK or azure-identity can raise."""
    if isinstance(exc, ClientAuthenticationError):  # token endpoint or ARM 401
        return Classified(
            "transient", AUTHENTICATION_FAILED, f"Azure authentication failed: {exc.message}"
        )
    if isinstance(exc, HttpResponseError):
        response = exc.response
        status = response.status_code if response is not None else None
        codes, message = _error_fields(_body(exc))
        if not codes and exc.error is not None and exc.error.code:
            codes = [exc.error.code]
        if not message:
            message = (exc.error.message if exc.error is not None else "") or exc.reason or ""
        if status is not None and status < 400:
            status = None  # the final poll of a Failed LRO comes back 200 OK
        return classify_codes(status, codes, message, _retry_after(exc))
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return Classified("transient", AZURE_UNREACHABLE, f"cannot reach Azure: {exc.message}")
    if isinstance(exc, AzureError):
        return Classified("transient", AZURE_SERVER_ERROR, exc.message)
    raise TypeError(f"not an Azure error: {exc!r}")
