"""Endpoints the gateway answers itself: GET /v1/models, GET /v1/models/{id}, GET /health."""

import json
from collections.abc import Mapping
from typing import Any

from .errors import GatewayError, clip_for_message
from .inventory import Inventory, ListedModel
from .routing import Endpoint, Request


def _model_object(model: ListedModel) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


def models_list(inventory: Inventory) -> dict[str, Any]:
    return {"object": "list", "data": [_model_object(m) for m in inventory.listing]}


def model_detail(inventory: Inventory, model_id: str) -> dict[str, Any]:
    for model in inventory.listing:
        if model.id == model_id:
            return _model_object(model)
    raise GatewayError(
        404,
        f"The model {clip_for_message(model_id)} does not exist on this gateway.",
        param="model",
        code="model_not_found",
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
    *,
    detailed: bool = True,
) -> bytes:
    """The JSON body for a locally answered endpoint. Without `detailed` (a caller without the
    master key), /health says only that the gateway is up: providers and hosts are not for
    strangers."""
    if request.endpoint is Endpoint.MODELS:
        document = models_list(inventory)
    elif request.endpoint is Endpoint.MODEL:
        document = model_detail(inventory, request.model or "")
    elif request.endpoint is Endpoint.HEALTH:
        document = health(inventory, hosts, circuits) if detailed else {"status": "ok"}
    else:
        raise ValueError(f"{request.endpoint} is not answered locally")
    return json.dumps(document).encode()
