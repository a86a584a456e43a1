"""The bodies of the endpoints the gateway answers itself from its inventory: GET /v1/models,
GET /v1/models/{id} and GET /health, for the caller's key. (/metrics and the Agents SDK's trace
export, accepted and dropped, are answered by the call service, service.py.)"""

import json
from collections.abc import Mapping
from typing import Any

from .errors import ErrorCode, GatewayError, clip_for_message
from .inventory import Inventory, ListedModel
from .keys import ANONYMOUS_KEY, ClientKey, invalid_key, model_names, model_not_allowed
from .routing import Endpoint, Request


def _model_object(model: ListedModel) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


def names_for_key(inventory: Inventory, model_id: str) -> tuple[str, ...]:
    """What a client key's patterns are matched against (keys.model_names)."""
    alias = inventory.alias_for(model_id)
    if alias is None:
        return model_names(model_id, None, None, None)
    return model_names(model_id, alias.name, alias.target, None)


def models_list(
    inventory: Inventory, aliases_only: bool = False, key: ClientKey = ANONYMOUS_KEY
) -> dict[str, Any]:
    """Every served model and exact alias the key may use; or, with `aliases_only`, the
    aliases alone (for apps that should see only the names a team agreed on)."""
    names = {a.name for a in inventory.aliases}
    listing = [
        m
        for m in inventory.listing
        if (not aliases_only or m.id in names) and key.allows(*names_for_key(inventory, m.id))
    ]
    return {"object": "list", "data": [_model_object(m) for m in listing]}


def model_detail(
    inventory: Inventory, model_id: str, key: ClientKey = ANONYMOUS_KEY
) -> dict[str, Any]:
    if not key.allows(*names_for_key(inventory, model_id)):
        raise model_not_allowed(key, model_id)
    for model in inventory.listing:
        if model.id == model_id:
            return _model_object(model)
    if found := inventory.find(model_id):  # a name a glob alias maps
        return _model_object(ListedModel(model_id, found[0].provider.name, inventory.created))
    raise GatewayError(
        404,
        f"The model {clip_for_message(model_id)} does not exist on this gateway.",
        param="model",
        code=ErrorCode.MODEL_NOT_FOUND,
    )


def health(
    inventory: Inventory, hosts: tuple[str, ...], circuits: Mapping[str, Mapping[str, object]]
) -> dict[str, Any]:
    """Status, served hostnames, and per provider: host, model count, circuit breaker state."""
    return {
        "status": "ok",
        "hosts": list(hosts),
        "providers": [
            {
                "name": provider.name,
                "host": provider.host,
                "models": len(inventory.models.get(provider.name, ())),
                "models_mode": provider.models_mode,
                "circuit": dict(circuits.get(provider.name, {})),
            }
            for provider in inventory.providers
        ],
        "models": len(inventory.listing),
    }


def answer(
    inventory: Inventory,
    request: Request,
    hosts: tuple[str, ...],
    circuits: Mapping[str, Mapping[str, object]],
    key: ClientKey | None,
    *,
    aliases_only: bool = False,
) -> bytes:
    """The JSON body for a locally answered endpoint, for the caller's key. Without a key,
    /health says only that the gateway is up: providers and hosts are not for strangers."""
    if request.endpoint is Endpoint.HEALTH:
        document = health(inventory, hosts, circuits) if key else {"status": "ok"}
    elif key is None:  # admit() lets strangers reach /health alone
        raise invalid_key()
    elif request.endpoint is Endpoint.MODELS:
        document = models_list(inventory, aliases_only, key)
    elif request.endpoint is Endpoint.MODEL:
        document = model_detail(inventory, request.model or "", key)
    else:
        raise ValueError(f"{request.endpoint} is not answered locally")
    return json.dumps(document).encode()
