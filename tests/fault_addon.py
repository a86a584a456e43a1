"""Test-only mitmproxy script, loaded after addon/gomodel.py: the gateway's router raises for
requests naming the model "boom.model", to prove that an internal failure fails closed."""

from gomodel_gateway import service as gateway_service

real_route = gateway_service.route


def failing_route(inventory, request, body, *rest):  # the same arguments as route()
    if b"boom.model" in body:
        raise RuntimeError("injected routing failure")
    return real_route(inventory, request, body, *rest)


gateway_service.route = failing_route
