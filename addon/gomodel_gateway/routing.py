"""Request routing: which gateway endpoint a request is for, and for model calls, where it goes.

`classify` maps method and path to an endpoint; `route` validates a model call's JSON body and
picks the provider. Both raise `GatewayError` with the status and OpenAI-style message the client
gets; nothing from the body reaches the upstream URL or headers without passing `is_model_id`.
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from . import resources, safejson
from .adapt import adapt
from .config import is_model_id
from .errors import ErrorCode, GatewayError, clip_for_message
from .inventory import Inventory, Target
from .keys import model_names
from .limits import OUTPUT_LIMITS, check_output_limit
from .stored_ids import NO_IDS, StoredIds, stored_ids


class Endpoint(StrEnum):
    MODELS = "models"
    MODEL = "model"
    HEALTH = "health"
    METRICS = "metrics"
    CHAT_COMPLETIONS = "chat/completions"
    RESPONSES = "responses"
    TRACES = "traces"  # the OpenAI Agents SDK's trace export: accepted and dropped
    # Stored resources, passed through to their owner (resources.py)
    STORED_RESPONSES = "responses/{id}"
    CONVERSATIONS = "conversations"
    FILES = "files"
    CONTAINERS = "containers"
    VECTOR_STORES = "vector_stores"


UPSTREAM_ENDPOINTS = (Endpoint.CHAT_COMPLETIONS, Endpoint.RESPONSES)
ROUTES: dict[str, tuple[str, Endpoint]] = {
    "/v1/models": ("GET", Endpoint.MODELS),
    "/v1/chat/completions": ("POST", Endpoint.CHAT_COMPLETIONS),
    "/v1/responses": ("POST", Endpoint.RESPONSES),
    "/health": ("GET", Endpoint.HEALTH),
    "/metrics": ("GET", Endpoint.METRICS),
    "/v1/traces/ingest": ("POST", Endpoint.TRACES),
}
# OpenAI endpoints apps call that Oracle's OpenAI-compatible API does not offer.
NOT_AT_ORACLE = {
    "/v1/embeddings": "embeddings (Oracle serves them through OCI's native Generative AI API only)",
    "/v1/completions": "legacy completions (use /v1/chat/completions)",
    "/v1/moderations": "moderations",
    "/v1/images/generations": "image generation",
    "/v1/audio/speech": "speech",
    "/v1/audio/transcriptions": "transcription",
}
MODEL_PREFIX = "/v1/models/"
SUPPORTED = (
    "GET /v1/models, GET /v1/models/{model}, POST /v1/chat/completions, POST /v1/responses, "
    "/v1/responses/{id}, /v1/conversations, /v1/files, /v1/containers, "
    "/v1/vector_stores/{id}/files, GET /health, GET /metrics"
)
HOW_TO_ADD_MODELS = (
    "add it to ORACLE_MODELS (comma-separated) or to the provider's models: list in config.yaml"
)
MAX_LISTED_IN_ERROR = 10
MAX_ALIAS_SHOWN = 100
MAX_QUERY_NAME = 256
ORACLE_VENDORS = frozenset({"openai", "xai", "meta", "google", "cohere", "mistral"})


@dataclass(frozen=True)
class Request:
    endpoint: Endpoint
    query: str = ""
    model: str | None = None  # the {model} of GET /v1/models/{model}
    resource: resources.ResourcePath | None = None  # a stored resource's endpoint

    @property
    def goes_upstream(self) -> bool:
        """A call for Oracle (a model call, or a stored resource's), not answered locally."""
        return self.endpoint in UPSTREAM_ENDPOINTS or self.resource is not None


@dataclass(frozen=True)
class Route:
    endpoint: Endpoint
    candidates: tuple[Target, ...]  # the preferred provider first, then failover ones
    requested_model: str
    stream: bool
    # What goes to each candidate provider: the client's bytes, unless the model id was pinned
    # or the provider's model rules adapted the request.
    bodies: Mapping[str, bytes]
    query: str = ""
    adjustments: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    usage_added: bool = False  # the gateway asked for the stream's usage chunk, not the client
    alias: str | None = None  # the alias (exact name or glob) the requested model went through
    alias_target: str | None = None  # what that alias names (a model id or provider/model)
    method: str = "POST"
    path: str = ""  # under the provider's base URL, when it is not the endpoint's own
    stored: StoredIds = NO_IDS  # the stored ids a model call's body names

    @property
    def upstream_path(self) -> str:
        return self.path or self.endpoint.value

    @property
    def subject(self) -> str:
        """What the call is about, for messages: the model, or the resource's endpoint."""
        return repr(self.requested_model) if self.requested_model else f"{self.method} /{self.path}"

    @property
    def target(self) -> Target:
        return self.candidates[0]

    @property
    def body(self) -> bytes:
        return self.bodies[self.target.provider.name]

    @property
    def model_names(self) -> tuple[str, ...]:
        """What a client key's model patterns are matched against (keys.model_names)."""
        return model_names(
            self.requested_model, self.alias, self.alias_target, self.target.upstream_model
        )


def classify(method: str, path: str) -> Request:
    """The gateway endpoint for a request line, or a 404/405 GatewayError."""
    # Not urlsplit: a request path such as "//[" is not a URL and must not raise.
    raw_path, _, query = path.partition("#")[0].partition("?")
    clean = raw_path.rstrip("/") or "/"
    if clean.startswith(MODEL_PREFIX):
        endpoint, allowed, model = Endpoint.MODEL, "GET", unquote(clean[len(MODEL_PREFIX) :])
    elif clean in ROUTES:
        (allowed, endpoint), model = ROUTES[clean], None
    elif resource := resources.parse(method, clean, query):
        return Request(Endpoint(resource.operation.family), resource.query, resource=resource)
    elif clean in NOT_AT_ORACLE:
        raise GatewayError(
            404,
            f"{clean} is not served: Oracle's OpenAI-compatible API offers no "
            f"{NOT_AT_ORACLE[clean]}. This gateway serves {SUPPORTED}.",
            code=ErrorCode.UNKNOWN_URL,
        )
    else:
        raise GatewayError(
            404,
            f"Unknown path {clip_for_message(raw_path)}: this gateway serves {SUPPORTED}. "
            "(Oracle's OpenAI-compatible endpoint offers no embeddings, images or audio.)",
            code=ErrorCode.UNKNOWN_URL,
        )
    if method != allowed:
        raise GatewayError(
            405,
            f"Method {clip_for_message(method)} is not allowed on {clip_for_message(clean)}; "
            f"use {allowed}.",
            code=ErrorCode.METHOD_NOT_ALLOWED,
            headers=(("allow", allowed),),
        )
    return Request(endpoint, query, model)


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GatewayError(
            400,
            f"Request body is not UTF-8 (invalid byte at position {e.start}).",
            code=ErrorCode.INVALID_BODY,
        ) from e
    if not text.strip():
        raise GatewayError(
            400, "Request body is empty; send a JSON object.", code=ErrorCode.INVALID_BODY
        )
    try:
        document = safejson.loads(text, unique_keys=True, standard=True)
    except safejson.DuplicateKeyError as e:
        # json keeps the last "model" while Oracle, sent these bytes, might read the first.
        raise GatewayError(
            400,
            f"Request body has the key {clip_for_message(e.key)} twice in one object; "
            "send each key once.",
            code=ErrorCode.INVALID_JSON,
        ) from e
    except ValueError as e:
        raise GatewayError(
            400, f"Request body is not valid JSON: {e}.", code=ErrorCode.INVALID_JSON
        ) from e
    if not isinstance(document, dict):
        raise GatewayError(
            400,
            f"Request body must be a JSON object, not {type(document).__name__}.",
            code=ErrorCode.INVALID_BODY,
        )
    return document


def _requested_model(document: dict[str, Any]) -> str:
    model = document.get("model")
    if model is None:
        raise GatewayError(
            400, "You must provide a model parameter.", param="model", code=ErrorCode.MISSING_MODEL
        )
    if not isinstance(model, str):
        raise GatewayError(
            400,
            f"'model' must be a string, not {type(model).__name__}.",
            param="model",
            code=ErrorCode.INVALID_TYPE,
        )
    if not model.isprintable() or not is_model_id(model):  # a newline would reach the ledger
        raise GatewayError(
            400,
            f"{clip_for_message(model)} is not a valid model id: use letters, digits and "
            ". _ - : @ +, optionally prefixed by a provider name and '/'.",
            param="model",
            code=ErrorCode.INVALID_MODEL,
        )
    return model


def _stream_flag(document: dict[str, Any]) -> bool:
    stream = document.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise GatewayError(
            400,
            f"'stream' must be a boolean, not {type(stream).__name__}.",
            param="stream",
            code=ErrorCode.INVALID_TYPE,
        )
    return stream


def resolve_model(
    inventory: Inventory, model: str, visible: Callable[[str], bool] = lambda _: True
) -> tuple[Target, ...]:
    """The providers for a model id or alias, preferred first; a pinned id names exactly one.
    An unknown name's 404 lists the models the caller may see (`visible`)."""
    if candidates := inventory.find(model):
        return candidates
    echoed = clip_for_message(model)
    if alias := inventory.alias_for(model):
        raise GatewayError(
            404,
            f"The model {echoed} is an alias ({alias.origin}) of {alias.target!r}, which no "
            f"provider serves now; {HOW_TO_ADD_MODELS}, or point the alias elsewhere.",
            param="model",
            code=ErrorCode.MODEL_NOT_FOUND,
        )
    if not inventory.providers:
        raise GatewayError(
            404,
            f"The model {echoed} is not available: no Oracle provider is configured. Set "
            "ORACLE_BASE_URL, ORACLE_API_KEY and ORACLE_MODELS, or add a provider to config.yaml.",
            param="model",
            code=ErrorCode.MODEL_NOT_FOUND,
        )
    if inventory.model_count == 0:
        raise GatewayError(
            404,
            f"The model {echoed} is not available: no models are configured and Oracle's "
            "/models listed none. Set ORACLE_MODELS (comma-separated) or the provider's "
            "models: in config.yaml.",
            param="model",
            code=ErrorCode.MODEL_NOT_FOUND,
        )
    prefix, _, bare = model.partition("/")
    if bare and (provider := inventory.provider(prefix)):
        raise GatewayError(
            404,
            f"Provider {provider.name!r} does not serve model {clip_for_message(bare)}; to use it, "
            f"{HOW_TO_ADD_MODELS}.",
            param="model",
            code=ErrorCode.MODEL_NOT_FOUND,
        )
    listed = [m.id for m in inventory.listing if visible(m.id)]
    shown = ", ".join(listed[:MAX_LISTED_IN_ERROR]) + (", ..." if len(listed) > 10 else "")
    if looks_like_oracle_model(model):
        advice = f"To use it, {HOW_TO_ADD_MODELS}."
    else:  # an OpenAI (or other) name: Oracle does not know it; an alias maps it
        name = model if len(model) <= MAX_ALIAS_SHOWN else "<name>"
        advice = (
            "Oracle does not serve this name; to send it to one of the models above, alias it: "
            f"GOMODEL_ALIASES='{name}=<model>' or aliases: in config.yaml."
        )
    raise GatewayError(
        404,
        f"The model {echoed} does not exist on this gateway (available: {shown}). {advice}",
        param="model",
        code=ErrorCode.MODEL_NOT_FOUND,
    )


def looks_like_oracle_model(model: str) -> bool:
    """vendor.model, the shape of every id Oracle's OpenAI-compatible API serves."""
    vendor, dot, _ = model.rpartition("/")[2].partition(".")
    return bool(dot) and vendor in ORACLE_VENDORS


def check_body_size(size: int, limit: int) -> None:
    if size > limit:
        raise GatewayError(
            413,
            f"Request body is {size} bytes; this gateway accepts at most {limit} "
            "(option gomodel_max_body_size).",
            code=ErrorCode.REQUEST_TOO_LARGE,
        )


def check_declared_body(
    content_length: str | None, content_encoding: str | None, limit: int
) -> None:
    """Refuse, before reading it, a body that is too large or compressed (a decompression bomb
    would be expanded before any size check)."""
    if content_encoding and content_encoding.strip().lower() not in ("", "identity"):
        raise GatewayError(
            415,
            f"Compressed request bodies (content-encoding: {clip_for_message(content_encoding)}) "
            "are not accepted; send the JSON uncompressed.",
            code=ErrorCode.UNSUPPORTED_ENCODING,
        )
    if content_length is not None and content_length.strip().isdigit():
        check_body_size(int(content_length), limit)


def _check_inputs(endpoint: Endpoint, document: dict[str, Any]) -> None:
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        messages = document.get("messages")
        if not isinstance(messages, list):
            kind = "missing" if messages is None else f"a {type(messages).__name__}"
            raise GatewayError(
                400,
                f"'messages' must be a list of messages, not {kind}.",
                param="messages",
                code=ErrorCode.INVALID_TYPE,
            )
    elif "input" in document and not isinstance(document["input"], str | list):
        raise GatewayError(
            400,
            f"'input' must be a string or a list, not {type(document['input']).__name__}.",
            param="input",
            code=ErrorCode.INVALID_TYPE,
        )
    for name in OUTPUT_LIMITS:  # counted against budgets: whole numbers a store can hold
        check_output_limit(name, document.get(name))
    options = document.get("stream_options")
    if options is not None and not isinstance(options, dict):  # else no usage could be asked
        raise GatewayError(
            400,
            f"'stream_options' must be an object, not {type(options).__name__}.",
            param="stream_options",
            code=ErrorCode.INVALID_TYPE,
        )


def check_no_query(endpoint: Endpoint, query: str) -> None:
    """Model calls take no query parameters (OpenAI's API defines none for them: everything is
    in the JSON body), so none reaches Oracle unchecked: the first one is named in a 400."""
    if not query:
        return
    name = unquote(query.partition("&")[0].partition("=")[0])
    raise GatewayError(
        400,
        f"Query parameter {clip_for_message(name)} is not accepted on POST /v1/{endpoint.value}, "
        "which takes none: its parameters go in the JSON body.",
        param=name[:MAX_QUERY_NAME] or None,
        code=ErrorCode.INVALID_QUERY,
    )


def route(
    inventory: Inventory,
    request: Request,
    body: bytes,
    ask_usage: bool = False,
    visible: Callable[[str], bool] = lambda _: True,
) -> Route:
    """Validate a chat/responses body and choose its provider and upstream model id.

    With `ask_usage`, a chat stream whose client did not ask for the final usage chunk gets it
    asked for (the gateway then counts its tokens, and drops that chunk from the client's stream).
    """
    check_no_query(request.endpoint, request.query)
    document = parse_json_object(body)
    # Case variants of the routed fields are refused there: this reads "model" and the ids.
    stored = stored_ids(document, responses=request.endpoint is Endpoint.RESPONSES)
    model = _requested_model(document)
    stream = _stream_flag(document)
    _check_inputs(request.endpoint, document)
    candidates = resolve_model(inventory, model, visible)
    options = document.get("stream_options")
    usage_added = (
        ask_usage
        and stream
        and request.endpoint is Endpoint.CHAT_COMPLETIONS
        and not (options or {}).get("include_usage")
    )
    alias = inventory.alias_for(model)
    bodies, adjustments = {}, {}
    for target in candidates:
        adapted = dict(document, model=target.upstream_model)
        changes = adapt(adapted, target.upstream_model, target.provider.rules)
        if usage_added:
            adapted["stream_options"] = {**(options or {}), "include_usage": True}
            changes.append("stream_options.include_usage added")
        name = target.provider.name
        if changes or target.upstream_model != model:
            bodies[name] = json.dumps(adapted, ensure_ascii=False).encode()
        else:
            bodies[name] = body
        if changes:
            adjustments[name] = tuple(changes)
    return Route(
        request.endpoint,
        candidates,
        model,
        stream,
        bodies,
        "",  # check_no_query
        adjustments,
        usage_added,
        alias.name if alias else None,
        alias.target if alias else None,
        stored=stored,
    )
