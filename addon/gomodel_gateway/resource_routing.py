"""Where a stored resource's call goes, and what a successful call teaches the affinity store.

- A call naming an id (`GET /v1/files/{id}`...) goes to the provider that created it, and to no
  other: the id exists only there, so it is never failed over (nor used to probe other
  regions). An id the gateway has not seen created goes to the first provider serving Oracle's
  `/openai/v1` API, whose 404 is passed on as it is. Calls naming no id (creating, listing) go
  there too.
- `POST /v1/responses` naming a `previous_response_id` or a `conversation` the gateway knows is
  sent to that id's owner, whatever provider the model would prefer; a model the owner does not
  serve is a 400 (its state is nowhere else).
- A client key reaches only the ids created with it (`check_owner`: any other id is a 404, as
  if it did not exist): in a path, or in a model call's body (its follow-ups, files,
  containers, vector stores: stored_ids.py); its listings show only those (`keep_owned`);
  master keys reach all.
Pure: the addon passes the inventory and the store in.
"""

import dataclasses
import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

from .affinity import AffinityStore
from .basepaths import resource_provider
from .errors import ErrorCode, GatewayError, clip_for_message
from .inventory import Inventory, Target
from .keys import ClientKey
from .request_checks import parse_json_object
from .resources import Action, Operation, ResourcePath
from .routing import Endpoint, Request, Route
from .stored_ids import NO_IDS, StoredIds, content_ids, is_id


def serving_provider(inventory: Inventory, affinity: AffinityStore, owner_id: str | None) -> Target:
    """The owner of `owner_id` if remembered and still configured, else the first provider
    serving /openai/v1; as a target on its /openai/v1 base."""
    owner = affinity.owner(owner_id) if owner_id else None
    named = inventory.provider(owner.provider) if owner else None
    candidates = ([named] if named else []) + list(inventory.providers)
    for provider in candidates:
        if served := resource_provider(provider):
            return Target(served, "")
    raise GatewayError(
        404,
        "No provider serves Oracle's stored resources: they are on the /openai/v1 base of an "
        "Oracle inference host, and no provider's base_url ends in /openai/v1 or "
        "/20231130/actions/v1.",
        code=ErrorCode.NO_RESOURCE_PROVIDER,
    )


def route_resource(
    inventory: Inventory,
    affinity: AffinityStore,
    method: str,
    resource: ResourcePath,
    body: bytes,
    attached: StoredIds = NO_IDS,
) -> Route:
    """A resource call to its owner; `attached`: the stored ids its body names (check_body)."""
    target = serving_provider(inventory, affinity, resource.owner_id)
    family = Endpoint(resource.operation.family)
    # A stored response's stream carries Responses API events (the relay's error events).
    endpoint = Endpoint.RESPONSES if family is Endpoint.STORED_RESPONSES else family
    return Route(
        endpoint,
        (target,),
        "",
        resource.stream,
        {target.provider.name: body},
        resource.query,
        method=method,
        path=resource.path,
        stored=attached,
    )


def follow_owner(planned: Route, affinity: AffinityStore) -> Route:
    """A responses call continuing stored state, sent to that state's owner only."""
    owners = {}
    for name, value in planned.stored.followups:
        if owner := affinity.owner(value):
            owners[owner.provider] = f"{name} {clip_for_message(value)}"
    if not owners:
        return planned
    if len(owners) > 1:
        raise GatewayError(
            400,
            "This request continues state held by different providers ("
            + "; ".join(f"{what} at {name}" for name, what in owners.items())
            + "); they cannot be combined.",
            code=ErrorCode.CONFLICTING_OWNERS,
        )
    ((owner, what),) = owners.items()
    target = next((t for t in planned.candidates if t.provider.name == owner), None)
    if target is None:
        serving = ", ".join(t.provider.name for t in planned.candidates)
        raise GatewayError(
            400,
            f"The {what} is stored at provider {owner!r}, which does not serve the model "
            f"{clip_for_message(planned.requested_model)} (served by {serving}); the state "
            f"exists only there: use a model {owner!r} serves.",
            param="model",
            code=ErrorCode.MODEL_NOT_AT_OWNER,
        )
    return dataclasses.replace(planned, candidates=(target,))


def created(
    request: Request, document: dict[str, Any] | None, streamed_id: str | None
) -> tuple[str, str] | None:
    """(id, kind) of what a successful call created: a response (a model call, plain or
    streamed), a conversation, a file or a container."""
    resource = request.resource
    if resource is None:
        if request.endpoint is not Endpoint.RESPONSES:
            return None
        made, kind = streamed_id or (document or {}).get("id"), "response"
    elif resource.operation.action is Action.CREATE:
        made, kind = (document or {}).get("id"), resource.operation.kind
    else:
        return None
    return (made, kind) if is_id(made) else None


def deleted(request: Request) -> str | None:
    """The id a successful call deleted."""
    resource = request.resource
    if resource is not None and resource.operation.action is Action.DELETE:
        return resource.owner_id
    return None


def ids_named(request: Request, planned: Route | None, every: bool) -> list[str]:
    """The stored ids a call names: the one in its path; for a model call (`planned`, its
    route) the follow-ups it continues (they decide where it goes), and with `every` (a client
    key's call, whose every id must be its own) the files, containers and vector stores its
    body names too (a model call's, or a resource call's: conversation items, a container)."""
    named = []
    if request.resource is not None and request.resource.owner_id:
        named.append(request.resource.owner_id)
    if planned is not None:
        if every:
            named += planned.stored.all
        elif request.resource is None:
            named += [value for _, value in planned.stored.followups]
    return named


def check_references(key: ClientKey, stored: StoredIds) -> None:
    """Input items given by reference name stored items whose owner the gateway does not
    record (a response's output, a conversation's items): for master keys only."""
    if key.admin or not stored.references:
        return
    raise GatewayError(
        403,
        f"The input item {clip_for_message(stored.references[0])} is given by reference "
        "(item_reference): the gateway cannot tell whose stored items are, so client keys "
        "send the item itself, or continue the response or conversation it belongs to "
        "(previous_response_id, conversation).",
        param="input",
        code=ErrorCode.ITEM_REFERENCE_NOT_ALLOWED,
    )


def check_owner(key: ClientKey, affinity: AffinityStore, ids: list[str]) -> None:
    """A client key reaches only the stored ids created with it; master keys reach every id."""
    if key.admin:
        return
    for resource_id in ids:
        owner = affinity.owner(resource_id)
        if owner is None or owner.key != key.name:
            raise GatewayError(
                404,
                f"No stored resource {clip_for_message(resource_id)} is known for the key "
                f"{key.name!r} (ids created with another key, or deleted, are not).",
                code=ErrorCode.RESOURCE_NOT_FOUND,
            )


def is_listing(request: Request) -> bool:
    resource = request.resource
    return resource is not None and resource.owner_id is None and resource.operation.method == "GET"


DEFAULT_PAGE = 20  # OpenAI's default `limit` for listings
MAX_PAGES = 10  # upstream pages read to fill one client key's page


def listing_limit(query: str) -> int:
    """The page size a listing asked for (1-100), else the default."""
    value = dict(parse_qsl(query)).get("limit", "")
    return min(max(int(value), 1), 100) if value.isdigit() else DEFAULT_PAGE


def next_page_query(query: str, after: str) -> str:
    """The same listing, the page after `after`, as large as Oracle allows (fewer round trips
    when most items are another key's)."""
    params = [(k, v) for k, v in parse_qsl(query) if k not in ("after", "limit")]
    return urlencode([*params, ("after", after), ("limit", "100")])


def owned_items(document: Any, key: ClientKey, affinity: AffinityStore) -> list[Any] | None:
    """A listing page's items created with `key`; None when the answer is no listing."""
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        return None

    def owned(item: Any) -> bool:
        identifier = item.get("id") if isinstance(item, dict) else None
        owner = affinity.owner(identifier) if is_id(identifier) else None
        return owner is not None and owner.key == key.name

    return [item for item in document["data"] if owned(item)]


def owned_page(first: dict[str, Any], kept: list[Any], limit: int, more: bool) -> bytes:
    """A client key's page: its items only, with the ids and `has_more` they imply (never
    another key's ids)."""
    data = kept[:limit]
    page = {
        **first,
        "data": data,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
        "has_more": more or len(kept) > limit,
    }
    return json.dumps(page).encode()


def check_body(operation: Operation, content_type: str, body: bytes) -> StoredIds:
    """What a resource call sends before it goes: an upload (POST /v1/files) is
    multipart/form-data; any other body is a JSON object. A GatewayError (415, 400) if not.
    The stored ids a JSON body attaches (files in conversation items, a container's)."""
    if operation.method != "POST":
        return NO_IDS
    if operation.template == "files":
        if not content_type.strip().lower().startswith("multipart/form-data"):
            raise GatewayError(
                415,
                "POST /v1/files takes a multipart/form-data upload (fields file and purpose), "
                f"not {clip_for_message(content_type) if content_type else 'no content type'}.",
                code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            )
        return NO_IDS
    return content_ids(parse_json_object(body)) if body else NO_IDS
