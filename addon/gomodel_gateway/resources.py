"""Oracle's stored resources: which endpoints exist under `/openai/v1`, how a client's path maps
to one, and what of it may go into an upstream URL.

The table follows Oracle's documentation (each family cites its page; the README lists them).
Everything a client sends that ends up in an upstream URL passes through `parse`: every path
segment is checked on the raw path against a strict alphabet (never percent-decoded, so `../`,
`%2F`, `?` or `#` cannot smuggle in another path or query), ids are bounded in length, and the
query string is parsed, allowlisted per endpoint and re-encoded. Pure: raises `GatewayError`.
"""

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode

from .errors import ErrorCode, GatewayError, clip_for_message

MAX_ID_LENGTH = 256
MAX_QUERY_LENGTH = 2048
MAX_QUERY_VALUE = 256
# Oracle's ids: resp_..., conv_..., file-fra-<uuid>, cntr_..., OCIDs (dots). The first
# character is a letter or digit, so "." and ".." are no ids.
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ID_PLACEHOLDER = "{id}"
PAGING = frozenset({"after", "before", "limit", "order"})
INCLUDE = frozenset({"include", "include[]"})


class Action(StrEnum):
    """What a successful call teaches the affinity store."""

    CREATE = "create"  # the answer's id belongs to the provider that answered
    DELETE = "delete"  # the path's id is gone
    USE = "use"


@dataclass(frozen=True)
class Operation:
    method: str
    template: str  # under the base, e.g. "responses/{id}/input_items"
    family: str  # the label for logs and metrics (a routing.Endpoint value)
    kind: str  # what the first {id} names (or, for a create, what is created)
    action: Action = Action.USE
    parameters: frozenset[str] = frozenset()  # the query parameters passed on
    streams: bool = False  # `?stream=true` resumes a stream (GET responses/{id})

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.template.split("/"))


KINDS = {
    "responses": "response",
    "conversations": "conversation",
    "files": "file",
    "containers": "container",
    "vector_stores": "vector_store",
}


def _op(
    method: str,
    template: str,
    action: Action = Action.USE,
    parameters: frozenset[str] = frozenset(),
    streams: bool = False,
) -> Operation:
    family = template.split("/")[0]
    label = "responses/{id}" if family == "responses" else family
    return Operation(method, template, label, KINDS[family], action, parameters, streams)


# POST /v1/responses itself is a model call (routing.py); these are its stored follow-ups.
OPERATIONS: tuple[Operation, ...] = (
    # responses-api.htm, and the background mode release note (responses-api-background-mode)
    _op(
        "GET",
        "responses/{id}",
        parameters=INCLUDE | {"stream", "starting_after", "include_obfuscation"},
        streams=True,
    ),
    _op("DELETE", "responses/{id}", Action.DELETE),
    _op("POST", "responses/{id}/cancel"),
    _op("GET", "responses/{id}/input_items", parameters=PAGING | INCLUDE),
    # conversations-api.htm
    _op("POST", "conversations", Action.CREATE),
    _op("GET", "conversations/{id}"),
    _op("POST", "conversations/{id}"),
    _op("DELETE", "conversations/{id}", Action.DELETE),
    _op("GET", "conversations/{id}/items", parameters=PAGING | INCLUDE),
    _op("POST", "conversations/{id}/items", parameters=INCLUDE),
    _op("GET", "conversations/{id}/items/{id}", parameters=INCLUDE),
    _op("DELETE", "conversations/{id}/items/{id}"),
    # files.htm
    _op("POST", "files", Action.CREATE),
    _op("GET", "files", parameters=PAGING | {"purpose"}),
    _op("GET", "files/{id}"),
    _op("DELETE", "files/{id}", Action.DELETE),
    _op("GET", "files/{id}/content"),
    # containers-api.htm
    _op("POST", "containers", Action.CREATE),
    _op("GET", "containers", parameters=PAGING | {"name"}),
    _op("GET", "containers/{id}"),
    _op("DELETE", "containers/{id}", Action.DELETE),
    # vector-store-files.htm, vector-store-file-batches.htm, get-started-agents.htm (search)
    _op("POST", "vector_stores/{id}/files"),
    _op("GET", "vector_stores/{id}/files", parameters=PAGING | {"filter"}),
    _op("GET", "vector_stores/{id}/files/{id}"),
    _op("DELETE", "vector_stores/{id}/files/{id}"),
    _op("POST", "vector_stores/{id}/file_batches"),
    _op("GET", "vector_stores/{id}/file_batches", parameters=PAGING),
    _op("GET", "vector_stores/{id}/file_batches/{id}"),
    _op("POST", "vector_stores/{id}/file_batches/{id}/cancel"),
    _op("GET", "vector_stores/{id}/file_batches/{id}/files", parameters=PAGING | {"filter"}),
    _op("POST", "vector_stores/{id}/search"),
)
FAMILIES = frozenset(op.segments[0] for op in OPERATIONS)
# OpenAI endpoints apps call that Oracle's OpenAI-compatible API (API-key access) lacks.
NOT_OFFERED = {
    "vector_stores": (
        "vector stores themselves (Oracle creates, lists and deletes them on its control plane, "
        "generativeai.<region>.oci.oraclecloud.com/20231130/openai/v1/vector_stores, with IAM "
        "session authentication only; this gateway holds API keys). Their files, file batches "
        "and search are served"
    ),
    "batches": "the Batch API",
    "uploads": "multipart uploads in parts (upload a file whole with POST /v1/files)",
    "fine_tuning": "fine-tuning through the OpenAI API",
    "assistants": "the Assistants API (use the Responses API)",
    "threads": "the Assistants API's threads (use conversations)",
    "evals": "evals",
    "realtime": "the Realtime API",
    "containers": "container files, or this operation on containers",
    "responses": "this operation on stored responses",
    "conversations": "this operation on conversations",
    "files": "this operation on files",
}


@dataclass(frozen=True)
class ResourcePath:
    """A client's resource request, checked: what goes upstream, and whose id it names."""

    operation: Operation
    path: str  # under the provider's /openai/v1 base
    owner_id: str | None  # the first id in the path: its owner serves the call
    query: str = ""  # allowlisted and re-encoded
    stream: bool = False  # a stored response's stream, resumed


def check_id(segment: str) -> str:
    """A path segment that may go into an upstream URL as it is, or a 400."""
    if len(segment) > MAX_ID_LENGTH:
        raise GatewayError(
            400,
            f"An id in the path is {len(segment)} characters long; ids have at most "
            f"{MAX_ID_LENGTH}.",
            param="path",
            code=ErrorCode.INVALID_ID,
        )
    if not ID.fullmatch(segment):
        raise GatewayError(
            400,
            f"{clip_for_message(segment)} is not a valid id: ids are letters, digits and . _ -, "
            "starting with a letter or digit (nothing percent-encoded).",
            param="path",
            code=ErrorCode.INVALID_ID,
        )
    return segment


def clean_query(query: str, operation: Operation) -> str:
    """The query string re-encoded from its parsed pairs, or a 400 for a parameter the
    operation does not take (nothing else reaches Oracle)."""
    if not query:
        return ""
    if len(query) > MAX_QUERY_LENGTH:
        raise GatewayError(
            400,
            f"The query string is {len(query)} characters long; at most {MAX_QUERY_LENGTH}.",
            code=ErrorCode.INVALID_QUERY,
        )
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, errors="strict")
    except (ValueError, UnicodeDecodeError) as e:
        raise GatewayError(
            400, f"The query string is malformed: {e}.", code=ErrorCode.INVALID_QUERY
        ) from e
    for name, value in pairs:
        if name not in operation.parameters:
            allowed = ", ".join(sorted(operation.parameters)) or "none"
            raise GatewayError(
                400,
                f"Query parameter {clip_for_message(name)} is not accepted on "
                f"{operation.method} /v1/{operation.template} (accepted: {allowed}).",
                param=name[:MAX_QUERY_VALUE],
                code=ErrorCode.INVALID_QUERY,
            )
        if len(value) > MAX_QUERY_VALUE or not value.isprintable():
            raise GatewayError(
                400,
                f"Query parameter {name!r} is too long or holds control characters.",
                param=name,
                code=ErrorCode.INVALID_QUERY,
            )
        if name == "starting_after" and not value.isdigit():
            raise GatewayError(
                400,
                f"'starting_after' must be a sequence number (an integer >= 0), not "
                f"{clip_for_message(value)}.",
                param=name,
                code=ErrorCode.INVALID_QUERY,
            )
    return urlencode(pairs)


def _matches(segments: list[str], operation: Operation) -> bool:
    template = operation.segments
    return len(template) == len(segments) and all(
        t in (ID_PLACEHOLDER, s) for t, s in zip(template, segments, strict=True)
    )


def parse(method: str, path: str, query: str) -> ResourcePath | None:
    """The resource request for `method /v1/<path>` (path without the query, its trailing
    slash stripped); None when the path names no resource family (an unknown path); a
    GatewayError for a hostile segment (400), an endpoint Oracle does not offer (404), or a
    wrong method (405)."""
    if not path.startswith("/v1/"):
        return None
    segments = path.removeprefix("/v1/").split("/")
    family = segments[0]
    if family not in FAMILIES and family not in NOT_OFFERED:
        return None
    for segment in segments[1:]:
        check_id(segment)
    endpoint = f"/v1/{'/'.join(segments)}"
    matching = [op for op in OPERATIONS if _matches(segments, op)]
    if not matching:
        raise GatewayError(
            404,
            f"{clip_for_message(f'{method} {endpoint}')} is not served: Oracle's "
            f"OpenAI-compatible API does not offer {NOT_OFFERED.get(family, 'it')}.",
            code=ErrorCode.NOT_OFFERED_BY_ORACLE,
        )
    operation = next((op for op in matching if op.method == method), None)
    if operation is None:
        allowed = ", ".join(sorted({op.method for op in matching}))
        raise GatewayError(
            405,
            f"Method {clip_for_message(method)} is not allowed on {clip_for_message(endpoint)}; "
            f"Oracle serves {allowed}.",
            code=ErrorCode.METHOD_NOT_ALLOWED,
            headers=(("allow", allowed),),
        )
    cleaned = clean_query(query, operation)
    stream = operation.streams and dict(parse_qsl(cleaned)).get("stream") == "true"
    owner_id = segments[1] if len(segments) > 1 else None
    return ResourcePath(operation, "/".join(segments), owner_id, cleaned, stream)
