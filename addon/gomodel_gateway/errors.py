"""Every error the gateway answers, in OpenAI's shape: {"error": {message, type, param, code}}.

Oracle answers errors in OCI's shape ({"code": "404", "message": ...}); `from_oracle` turns those
into OpenAI errors with the same status, adding the troubleshooting hint users need most.
"""

import json
from dataclasses import dataclass
from typing import Any

from . import safejson

JSON_HEADERS = {"content-type": "application/json"}

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
    400: "bad_request",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    413: "request_too_large",
    429: "rate_limit_exceeded",
    500: "upstream_error",
    502: "upstream_error",
    503: "upstream_unavailable",
    504: "upstream_timeout",
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
    code: str | None = None
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
    code: str | None = None,
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
    code = UPSTREAM_CODES.get(status, "upstream_error")
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
