"""Request routing: which gateway endpoint a request is for, and for model calls, where it goes.

`classify` maps method and path to an endpoint; `route` validates a model call's JSON body (with
request_checks.py) and picks the provider. Both raise `GatewayError` with the status and
OpenAI-style message the client gets; nothing from the body reaches the upstream URL or headers
without passing `is_model_id`.
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from . import resources
from .adapt import adapt
from .errors import ErrorCode, GatewayError, clip_for_message
from .inventory import Inventory, Target
from .keys import model_names
from .request_checks import (
    check_inputs,
    check_no_query,
    parse_json_object,
    requested_model,
    stream_flag,
)
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


def resolve_model(
    inventory: Inventory, model: str, visible: Callable[[str], bool] = lambda _: True
) -> tuple[Target, ...]:
    """The providers for a model id or alias, preferred first; a pinned id names exactly one.
    An unknown name's 404 lists the models the caller may see (`visible`)."""
    if candidates := inventory.find(model):
        return candidates
    raise GatewayError(
        404,
        not_served(inventory, model, visible),
        param="model",
        code=ErrorCode.MODEL_NOT_FOUND,
    )


def not_served(inventory: Inventory, model: str, visible: Callable[[str], bool]) -> str:
    """Why no provider serves `model`, and what to do about it."""
    echoed = clip_for_message(model)
    if alias := inventory.alias_for(model):
        return (
            f"The model {echoed} is an alias ({alias.origin}) of {alias.target!r}, which no "
            f"provider serves now; {HOW_TO_ADD_MODELS}, or point the alias elsewhere."
        )
    if not inventory.providers:
        return (
            f"The model {echoed} is not available: no Oracle provider is configured. Set "
            "ORACLE_BASE_URL, ORACLE_API_KEY and ORACLE_MODELS, or add a provider to config.yaml."
        )
    if inventory.model_count == 0:
        return (
            f"The model {echoed} is not available: no models are configured and Oracle's "
            "/models listed none. Set ORACLE_MODELS (comma-separated) or the provider's "
            "models: in config.yaml."
        )
    prefix, _, bare = model.partition("/")
    if bare and (provider := inventory.provider(prefix)):
        return (
            f"Provider {provider.name!r} does not serve model {clip_for_message(bare)}; to use it, "
            f"{HOW_TO_ADD_MODELS}."
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
    return f"The model {echoed} does not exist on this gateway (available: {shown}). {advice}"


def looks_like_oracle_model(model: str) -> bool:
    """vendor.model, the shape of every id Oracle's OpenAI-compatible API serves."""
    vendor, dot, _ = model.rpartition("/")[2].partition(".")
    return bool(dot) and vendor in ORACLE_VENDORS


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
    check_no_query(request.endpoint.value, request.query)
    document = parse_json_object(body)
    # Case variants of the routed fields are refused there: this reads "model" and the ids.
    stored = stored_ids(document, responses=request.endpoint is Endpoint.RESPONSES)
    model = requested_model(document)
    stream = stream_flag(document)
    check_inputs(document, chat=request.endpoint is Endpoint.CHAT_COMPLETIONS)
    candidates = resolve_model(inventory, model, visible)
    usage_added = (
        ask_usage
        and stream
        and request.endpoint is Endpoint.CHAT_COMPLETIONS
        and not (document.get("stream_options") or {}).get("include_usage")
    )
    bodies, adjustments = provider_bodies(document, body, model, candidates, usage_added)
    alias = inventory.alias_for(model)
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


def provider_bodies(
    document: dict[str, Any],
    body: bytes,
    model: str,
    candidates: tuple[Target, ...],
    usage_added: bool,
) -> tuple[dict[str, bytes], dict[str, tuple[str, ...]]]:
    """What each candidate provider is sent (the client's own bytes unless something changed),
    and the changes made for it: its model id, its model rules, the usage chunk asked for."""
    options = document.get("stream_options")
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
    return bodies, adjustments
