"""Client authentication: with master keys configured, every gateway call must present one."""

import hmac

from .errors import GatewayError


def check_client_key(authorization: str | None, master_keys: tuple[str, ...]) -> None:
    """Accept `Authorization: Bearer <master key>`; raise a 401 GatewayError otherwise.

    Every configured key is compared, in constant time, so timing tells nothing about which
    key came close.
    """
    if not master_keys:
        return
    scheme, _, presented = (authorization or "").strip().partition(" ")
    presented = presented.strip()
    matched = False
    for key in master_keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    if scheme.lower() == "bearer" and presented and matched:
        return
    raise GatewayError(
        401,
        "Missing or incorrect gateway key: send 'Authorization: Bearer <key>' with one of the "
        "gateway's master keys (GOMODEL_MASTER_KEY or server.master_keys), not an Oracle key.",
        code="invalid_api_key",
        headers=(("www-authenticate", 'Bearer realm="gomodel"'),),
    )
