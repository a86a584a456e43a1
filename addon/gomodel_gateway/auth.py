"""Client authentication: with master keys configured, every gateway call must present one."""

import hashlib
import hmac

from .errors import GatewayError


def is_client_key(authorization: str | None, master_keys: tuple[str, ...]) -> bool:
    """True for `Authorization: Bearer <master key>`, or for anything when no key is configured.

    Every configured key is compared, in constant time, so timing tells nothing about which
    key came close. Any value is merely false: mitmproxy decodes header bytes with
    surrogateescape, so it may hold lone surrogates that strict UTF-8 cannot encode.
    """
    if not master_keys:
        return True
    scheme, _, presented = (authorization or "").strip().partition(" ")
    presented = presented.strip()
    digest = _digest(presented)
    matched = False
    for key in master_keys:
        matched |= hmac.compare_digest(digest, _digest(key))
    return scheme.lower() == "bearer" and bool(presented) and matched


def check_client_key(authorization: str | None, master_keys: tuple[str, ...]) -> None:
    """Accept what `is_client_key` accepts; raise a 401 GatewayError otherwise."""
    if is_client_key(authorization, master_keys):
        return
    raise GatewayError(
        401,
        "Missing or incorrect gateway key: send 'Authorization: Bearer <key>' with one of the "
        "gateway's master keys (GOMODEL_MASTER_KEY or server.master_keys), not an Oracle key.",
        code="invalid_api_key",
        headers=(("www-authenticate", 'Bearer realm="gomodel"'),),
    )


def _digest(text: str) -> bytes:
    """SHA-256 of any str: surrogatepass encodes every str, one to one, so equal digests mean
    equal text; equal-length digests also keep a key's length out of the timing."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
