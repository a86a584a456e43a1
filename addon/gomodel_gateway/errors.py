"""Every error the gateway answers, in OpenAI's shape: {"error": {message, type, param, code}}.

Oracle answers errors in OCI's shape ({"code": "404", "message": ...}); `from_oracle` turns those
into OpenAI errors with the same status, adding the troubleshooting hint users need most.
"""

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from . import safejson

JSON_HEADERS = {"content-type": "application/json"}


class ErrorCode(StrEnum):
    """Every `code` the gateway puts in an error it answers. A StrEnum: the JSON body, the
    access log and the metrics' labels show the plain string."""

    # The request itself (routing, stored ids, resource paths, headers)
    UNKNOWN_URL = "unknown_url"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INVALID_BODY = "invalid_body"
    INVALID_JSON = "invalid_json"
    INVALID_TYPE = "invalid_type"
    INTEGER_ABOVE_MAX_VALUE = "integer_above_max_value"
    MISSING_MODEL = "missing_model"
    INVALID_MODEL = "invalid_model"
    MODEL_NOT_FOUND = "model_not_found"
    REQUEST_TOO_LARGE = "request_too_large"
    REQUEST_HEADER_TOO_LARGE = "request_header_too_large"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_QUERY = "invalid_query"
    INVALID_HEADER = "invalid_header"
    INVALID_ID = "invalid_id"
    NOT_OFFERED_BY_ORACLE = "not_offered_by_oracle"
    # Client keys, their limits, and who may reach the gateway (keys, limits, exposure)
    INVALID_API_KEY = "invalid_api_key"
    ADMIN_KEY_REQUIRED = "admin_key_required"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    PASSTHROUGH_DISABLED = "passthrough_disabled"
    LOOP_DETECTED = "loop_detected"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    # Stored resources and their owners (resource_routing)
    NO_RESOURCE_PROVIDER = "no_resource_provider"
    CONFLICTING_OWNERS = "conflicting_owners"
    MODEL_NOT_AT_OWNER = "model_not_at_owner"
    ITEM_REFERENCE_NOT_ALLOWED = "item_reference_not_allowed"
    RESOURCE_NOT_FOUND = "resource_not_found"
    # Reaching Oracle (transport, redirects, the stream relay)
    PROVIDERS_COOLING_DOWN = "providers_cooling_down"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_REDIRECT = "upstream_redirect"
    STREAM_INTERRUPTED = "stream_interrupted"
    # Oracle's error statuses, when its body names no code of its own (UPSTREAM_CODES)
    BAD_REQUEST = "bad_request"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    # The gateway itself, and mitmproxy's own protocol errors (workarounds.py)
    GATEWAY_BUSY = "gateway_busy"
    GATEWAY_ERROR = "gateway_error"
    INVALID_REQUEST = "invalid_request"
    NOT_IMPLEMENTED = "not_implemented"
    BAD_GATEWAY = "bad_gateway"
    GATEWAY_TIMEOUT = "gateway_timeout"
    PROXY_ERROR = "proxy_error"


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
UPSTREAM_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.INVALID_API_KEY,
    403: ErrorCode.PERMISSION_DENIED,
    404: ErrorCode.NOT_FOUND,
    408: ErrorCode.TIMEOUT,
    413: ErrorCode.REQUEST_TOO_LARGE,
    429: ErrorCode.RATE_LIMIT_EXCEEDED,
    500: ErrorCode.UPSTREAM_ERROR,
    502: ErrorCode.UPSTREAM_ERROR,
    503: ErrorCode.UPSTREAM_UNAVAILABLE,
    504: ErrorCode.UPSTREAM_TIMEOUT,
}
ORACLE_404_HINT = (
    "Oracle answers 404 'Authorization failed or requested resource not found' when the API key's "
    "IAM policy is missing (Allow any-user to use generative-ai-family in tenancy where ALL "
    "{request.principal.type='generativeaiapikey'}), when the base URL's region is not the key's "
    "region, or when the model is not available to the account in that region."
)
ORACLE_401_HINT = (
    "Check that the provider's api_key is an OCI Generative AI API key (sk-...) created in this "
    "region, not an OCI CLI signing key."
)
MAX_UPSTREAM_TEXT = 500
MAX_ECHOED = 100


def clip_for_message(text: str, limit: int = MAX_ECHOED) -> str:
    """`repr(text)` for an error message, cut to about `limit` characters of the quoted text.

    Whatever a client sent (a model id, a path, a JSON key) is echoed through this: a 9 MB
    model id must not come back whole, and escapes such as \\U0001f600 count at their printed size.
    """
    if len(text) <= limit and len(quoted := repr(text)) <= limit + 2:
        return quoted
    shown, size = 0, 0
    for char in text[:limit]:
        size += len(repr(char)) - 2
        if size > limit:
            break
        shown += 1
    return f"{text[:shown]!r}... ({len(text)} characters)"


@dataclass
class GatewayError(Exception):
    """An error the gateway answers itself; raised by the pure request functions."""

    status: int
    message: str
    code: ErrorCode | None = None
    param: str | None = None
    type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def response_headers(self) -> dict[str, str]:
        return {**JSON_HEADERS, **dict(self.headers)}

    def body(self) -> bytes:
        return error_body(
            self.status, self.message, code=self.code, param=self.param, error_type=self.type
        )


def error_type_for(status: int) -> str:
    if status >= 500:
        return "api_error"
    return ERROR_TYPES.get(status, "invalid_request_error")


def error_body(
    status: int,
    message: str,
    *,
    code: str | None = None,  # an ErrorCode, or Oracle's own symbolic code
    param: str | None = None,
    error_type: str | None = None,
) -> bytes:
    error = {
        "message": message,
        "type": error_type or error_type_for(status),
        "param": param,
        "code": code,
    }
    return json.dumps({"error": error}).encode()


def _oracle_error_fields(body: bytes) -> tuple[str | None, Any]:
    """The (message, code) of an OCI error body, or (None, None) when it is not one."""
    try:
        document = safejson.loads(body)
    except ValueError:
        return None, None
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return document["message"], document.get("code")
    return None, None


def is_openai_error(body: bytes) -> bool:
    try:
        document = safejson.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and isinstance(document.get("error"), dict)


def from_oracle(
    status: int, body: bytes, provider: str, host: str, request_id: str | None
) -> bytes:
    """An OpenAI-style body for an error status Oracle answered with."""
    if is_openai_error(body):
        return body
    message, oracle_code = _oracle_error_fields(body)
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        message = text[:MAX_UPSTREAM_TEXT] or f"HTTP {status} with an empty body"
    # OCI puts the status in "code" as a string; a symbolic code (e.g. NotAuthorizedOrNotFound)
    # is worth keeping.
    code: str = UPSTREAM_CODES.get(status, ErrorCode.UPSTREAM_ERROR)
    if isinstance(oracle_code, str) and oracle_code and not oracle_code.isdigit():
        code = oracle_code
    parts = [f"Oracle ({provider}, {host}) answered {status}: {message}"]
    if status == 404 and "authorization failed" in message.lower():
        parts.append(ORACLE_404_HINT)
    elif status == 401:
        parts.append(ORACLE_401_HINT)
    if request_id:
        parts.append(f"opc-request-id: {request_id}")
    return error_body(status, " ".join(parts), code=code)
