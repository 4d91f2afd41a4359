"""Azure failures → stable reasons."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from kaito.provisioner.azure.errors import classify, classify_codes


class FakeResponse:
    """Just enough of azure.core's HttpResponse for HttpResponseError."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.reason = "reason"
        self.headers = headers or {}
        self.content_type = "application/json"
        self._text = json.dumps(body)
        self.request = None

    def text(self, encoding: str | None = None) -> str:
        return self._text

    def body(self) -> bytes:
        return self._text.encode()


def error(status: int, code: str, message: str, **headers: str) -> HttpResponseError:
    body = {"error": {"code": code, "message": message}}
    return HttpResponseError(response=FakeResponse(status, body, headers))


@pytest.mark.parametrize(
    ("status", "code", "message", "kind", "reason"),
    [
        (429, "TooManyRequests", "slow down", "throttled", "Throttled"),
        (400, "QuotaExceeded", "exceeding approved Cores quota", "terminal", "QuotaExceeded"),
        (400, "ErrCode_InsufficientVCPUQuota", "not enough", "terminal", "QuotaExceeded"),
        (409, "OperationNotAllowed", "results in exceeding quota limits", "terminal",
         "QuotaExceeded"),
        (400, "SkuNotAvailable", "size unavailable", "terminal", "SKUNotAvailable"),
        (400, "BadRequest", "The VM size of Standard_X is not allowed in your subscription in "
         "location 'eastus'", "terminal", "SKUNotAvailable"),
        (None, "ZonalAllocationFailed", "no capacity", "terminal", "InsufficientCapacity"),
        (409, "OperationNotAllowed", "there's an in progress create node pool operation",
         "conflict", "OperationInProgress"),
        (403, "AuthorizationFailed", "no rights", "terminal", "AuthorizationFailed"),
        (401, "InvalidAuthenticationToken", "bad token", "transient", "AuthenticationFailed"),
        (500, "InternalServerError", "oops", "transient", "AzureServerError"),
        (503, "ServiceUnavailable", "later", "transient", "AzureServerError"),
        (400, "InvalidParameter", "bad label", "terminal", "InvalidRequest"),
        (404, "NotFound", "gone", "not_found", "NotFound"),
        (None, "SomethingElse", "LRO failed", "terminal", "ProvisioningFailed"),
    ],
)  # fmt: skip
def test_decision_table(
    status: int | None, code: str, message: str, kind: str, reason: str
) -> None:
    result = classify_codes(status, [code], message)
    assert (result.kind, result.reason) == (kind, reason)
    assert result.message == message


def test_sdk_error_with_retry_after() -> None:
    result = classify(error(429, "TooManyRequests", "throttled", **{"Retry-After": "7"}))
    assert result.kind == "throttled"
    assert result.retry_after_s == 7.0


def test_retry_after_in_milliseconds() -> None:
    result = classify(error(429, "TooManyRequests", "x", **{"x-ms-retry-after-ms": "1500"}))
    assert result.retry_after_s == 1.5


def test_nested_detail_codes_are_seen() -> None:
    body = {
        "error": {
            "code": "BadRequest",
            "message": "Preflight validation failed",
            "details": [{"code": "QuotaExceeded", "message": "exceeding approved quota"}],
        }
    }
    exc = HttpResponseError(response=FakeResponse(400, body))
    result = classify(exc)
    assert result.reason == "QuotaExceeded"
    assert result.message == "exceeding approved quota"


def test_failed_lro_comes_back_200() -> None:
    body = {"status": "Failed", "error": {"code": "ZonalAllocationFailed", "message": "no VMs"}}
    exc = HttpResponseError(response=FakeResponse(200, body))
    result = classify(exc)
    assert (result.kind, result.reason, result.message) == (
        "terminal",
        "InsufficientCapacity",
        "no VMs",
    )


def test_not_found_subclass() -> None:
    exc = ResourceNotFoundError(
        response=FakeResponse(404, {"error": {"code": "NotFound", "message": "no pool"}})
    )
    assert classify(exc).kind == "not_found"


def test_credential_and_network_errors_are_transient() -> None:
    auth = classify(ClientAuthenticationError("AADSTS7000215: Invalid client secret provided."))
    assert (auth.kind, auth.reason) == ("transient", "AuthenticationFailed")
    net = classify(ServiceRequestError("connection refused"))
    assert (net.kind, net.reason) == ("transient", "AzureUnreachable")


def test_non_azure_errors_are_not_swallowed() -> None:
    with pytest.raises(TypeError):
        classify(KeyError("x"))
