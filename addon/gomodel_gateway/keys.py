"""Client keys: who may call the gateway, which models, within which limits.

Master keys (GOMODEL_MASTER_KEY, server.master_keys) are admin keys: every model, no limits.
Client keys (server.keys) have a name, the key itself (`key`, with ${VAR}) or its SHA-256
(`key_sha256`, so the file holds no secret), model patterns and limits. Only a key's name ever
appears in logs, metrics, mitmweb and the ledger. Pure: nothing here knows about mitmproxy;
`config_server` reads the keys from the configuration.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from functools import cache

from .errors import ErrorCode, GatewayError, clip_for_message
from .limits import NO_LIMITS, Limits

MASTER = "master"  # the name every master key goes by
ANONYMOUS = "anonymous"  # callers of a gateway without keys
REPLAY = "replay"  # the operator's own replays (mitmweb, mitmdump -C)
RESERVED_NAMES = (MASTER, ANONYMOUS, REPLAY)  # the gateway's own: no client key goes by them


@dataclass(frozen=True)
class ClientKey:
    name: str
    digest: bytes = field(repr=False)  # SHA-256 of the key
    models: tuple[str, ...] = ()  # patterns with *; empty: every model
    limits: Limits = NO_LIMITS
    # Master keys, and the gateway's own callers (anonymous, replay): every model and stored
    # id, /metrics. Set where those are made, never derived from a name.
    admin: bool = False

    def allows(self, *names: str) -> bool:
        """Whether any of the names (requested model, alias target, upstream model) matches
        one of the key's patterns; a name a glob alias maps (`ThroughGlob`) only an exact
        entry of the key's."""
        if not self.models:
            return True
        return any(
            pattern == name
            if isinstance(name, ThroughGlob)
            else model_pattern(pattern).fullmatch(name)
            for name in names
            for pattern in self.models
        )


class ThroughGlob(str):
    """A requested name that a glob alias maps. Any name the glob takes reaches its target, so
    a key's pattern (`gpt-4o*`) must not match it, or the pattern would open the target; a
    key's exact entry (`gpt-4o-mini`) names just this model, and does."""


def model_names(
    requested: str, alias: str | None, alias_target: str | None, upstream: str | None
) -> tuple[str, ...]:
    """What a key's model patterns are matched against: the name the client sent (through a
    glob alias, for the key's exact entries only), an alias's target, and the model Oracle is
    asked for."""
    by_glob = alias is not None and "*" in alias
    names = (ThroughGlob(requested) if by_glob else requested, alias_target, upstream)
    return tuple(name for name in names if name)


@cache
def model_pattern(pattern: str) -> re.Pattern[str]:
    """`*` stands for any run of characters; everything else is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


ANONYMOUS_KEY = ClientKey(ANONYMOUS, b"", admin=True)
REPLAY_KEY = ClientKey(REPLAY, b"", admin=True)


def digest(text: str) -> bytes:
    """SHA-256 of any str: surrogatepass encodes every str, one to one (mitmproxy decodes header
    bytes with surrogateescape), so equal digests mean equal text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[ClientKey, ...] = ()

    @property
    def required(self) -> bool:
        """With any key configured, every call must present one."""
        return bool(self.keys)

    def identify(self, authorization: str | None) -> ClientKey | None:
        """The key an `Authorization: Bearer <key>` header presents; without configured keys,
        everyone is ANONYMOUS. Every key is compared, in constant time, so timing tells nothing
        about which key came close (digests of equal length: nor about a key's length)."""
        if not self.keys:
            return ANONYMOUS_KEY
        scheme, _, presented = (authorization or "").strip().partition(" ")
        presented = presented.strip()
        wanted = digest(presented)
        found: ClientKey | None = None
        for key in self.keys:
            if hmac.compare_digest(wanted, key.digest):
                found = key
        if scheme.lower() != "bearer" or not presented:
            return None
        return found


def invalid_key() -> GatewayError:
    return GatewayError(
        401,
        "Missing or incorrect gateway key: send 'Authorization: Bearer <key>' with one of the "
        "gateway's keys (a master key or a client key from server.keys), not an Oracle key.",
        code=ErrorCode.INVALID_API_KEY,
        headers=(("www-authenticate", 'Bearer realm="gomodel"'),),
    )


def admins_only(path: str) -> GatewayError:
    return GatewayError(
        403,
        f"{path} is for the gateway's master keys; client keys may not read it.",
        code=ErrorCode.ADMIN_KEY_REQUIRED,
    )


def model_not_allowed(key: ClientKey, model: str) -> GatewayError:
    return GatewayError(
        403,
        f"The key {key.name!r} may not use the model {clip_for_message(model)}; its models: "
        + ", ".join(key.models),
        param="model",
        code=ErrorCode.MODEL_NOT_ALLOWED,
    )
