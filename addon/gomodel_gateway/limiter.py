"""The limiter: admits calls and counts their tokens, in this gateway's memory or in Redis.

With `gomodel_redis_url`, every gateway sharing that Redis enforces one limit: a call's
admission is one round trip (a Lua script reads the counters, decides, counts the request and
reserves its estimated tokens atomically); its usage settles the reservation after the answer,
off the request path: the settlements of SETTLE_SECONDS are sent together, one round trip for
all of them. When Redis cannot be
reached (a connection error, a timeout), the gateway does not go unlimited: it logs it, counts
it in a metric, and enforces the limits with its own counters (each gateway then allows the
whole limit) until Redis answers again (tried again after RETRY_SECONDS). An error Redis
answers (a script that failed) is about that one call: its verdict comes from the local
counters, and the next call asks Redis again. Every number sent is bounded (limits.MAX_TOKENS).

The limiter also keeps what token accounting needs to remember between calls, in this
gateway's memory (stored_usage.py): the size of stored contexts (`ContextSizes`) and the
background runs awaiting their usage (`BackgroundRuns`).
"""

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .ledger import Throttle
from .ledger_location import redact_url
from .limits import (
    ADMITTED,
    DAY,
    MINUTE,
    Buckets,
    Counts,
    Limits,
    LocalCounters,
    Reservation,
    Verdict,
    bounded,
    decide,
)
from .stored_usage import BackgroundRuns, ContextSizes

logger = logging.getLogger("gomodel")

REDIS_TIMEOUT_SECONDS = 0.5
RETRY_SECONDS = 5.0
SETTLE_SECONDS = 0.2
KEY_PREFIX = "gomodel"
NONE = -1  # a limit not set, for the script
# Redis unreachable: the store is down. Anything else Redis raises is an answer about one call.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# The test of limits.decide, inside Redis so that reading and counting are one atomic step.
ADMIT_SCRIPT = """
local c = redis.call('MGET', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
for i = 1, 5 do c[i] = tonumber(c[i] or '0') end
local rpm, tpm, tpd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local weight = tonumber(ARGV[4])
local admitted = 1
if tpd >= 0 and c[5] + tonumber(ARGV[8]) > tpd then admitted = 0 end
if rpm >= 0 and c[1] * weight + c[2] + 1 > rpm then admitted = 0 end
if tpm >= 0 and c[3] * weight + c[4] + 1 > tpm then admitted = 0 end
if admitted == 1 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  local reserve = tonumber(ARGV[6])
  if reserve > 0 then
    redis.call('INCRBY', KEYS[4], reserve)
    redis.call('EXPIRE', KEYS[4], ARGV[5])
    redis.call('INCRBY', KEYS[5], reserve)
    redis.call('EXPIRE', KEYS[5], ARGV[7])
  end
end
return {admitted, c[1], c[2], c[3], c[4], c[5]}
"""


def check_redis_url(url: str) -> str:
    """A redis://, rediss:// or unix:// URL; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ValueError(f"{redact_url(url)!r} is not a redis://, rediss:// or unix:// URL")
    return url


def redis_keys(name: str, minute: int, day: int) -> list[str]:
    """One key's counters; `{name}` is a Redis Cluster hash tag, so they share a slot."""
    base = f"{KEY_PREFIX}:{{{name}}}"
    return [
        f"{base}:requests:{minute - 1}",
        f"{base}:requests:{minute}",
        f"{base}:tokens:{minute - 1}",
        f"{base}:tokens:{minute}",
        f"{base}:tokens-day:{day}",
    ]


def script_limit(limit: int | None) -> int:
    return NONE if limit is None else limit


class Limiter:
    """Admits calls and counts tokens for the client keys that have limits."""

    def __init__(
        self,
        clock: Callable[[], float],
        redis_url: str | None = None,
        on_store_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.clock = clock
        self.local = LocalCounters()
        self.redis_url = redis_url
        self.redis = (
            redis.from_url(
                redis_url,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            if redis_url
            else None
        )
        self.admit_script = self.redis.register_script(ADMIT_SCRIPT) if self.redis else None
        self.on_store_error = on_store_error
        self.down_until = 0.0  # while Redis is thought down, local counters decide
        self.script_errors = Throttle()
        self.contexts = ContextSizes()
        self.background = BackgroundRuns()
        # Token differences not yet sent to Redis, by (key name, minute, day).
        self.unsettled: dict[tuple[str, int, int], int] = {}
        self.settling: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        """Whether the limits are currently shared through Redis."""
        return self.redis is not None and self.clock() >= self.down_until

    async def admit(
        self, name: str, limits: Limits, reserve: int = 0, needed: int = 1, spends: bool = True
    ) -> Verdict:
        """Admit a call (counting it, and reserving `reserve` tokens when a budget counts
        tokens), or say which limit refuses it; `needed` tokens must fit in the day's budget. A
        call that `spends` no tokens is held to the request rate only."""
        if not spends:
            limits = limits.requests_only()
        if not limits.any:
            return ADMITTED
        reserve = bounded(reserve) if limits.counts_tokens else 0
        needed = bounded(needed)
        now = self.clock()
        if self.admit_script is None or now < self.down_until:
            return self.local.admit(name, limits, now, reserve, needed)
        buckets = Buckets.at(now)
        args = [
            script_limit(limits.requests_per_minute),
            script_limit(limits.tokens_per_minute),
            script_limit(limits.tokens_per_day),
            repr(buckets.previous_weight),
            2 * MINUTE,
            reserve,
            2 * DAY,
            needed,
        ]
        keys = redis_keys(name, buckets.minute, buckets.day)
        try:
            reply = await self.admit_script(keys=keys, args=args)
        except UNREACHABLE as e:
            self.store_failed(e, now)
            return self.local.admit(name, limits, now, reserve, needed)
        except RedisError as e:
            self.script_failed(e)
            return self.local.admit(name, limits, now, reserve, needed)
        self.store_answered()
        admitted, *counted = (int(value) for value in reply)
        if admitted:
            reservation = Reservation(name, reserve, buckets.minute, buckets.day, shared=True)
            return Verdict(reservation=reservation)
        # Refused: decide() on the counters the script read tells which limit, and for how long.
        return decide(limits, Counts(*counted), buckets, needed)

    def settle(self, reservation: Reservation, used: int) -> None:
        """A call's usage replaces its reservation, where it was made (in Redis: in the
        background; if that fails, the difference is lost and the failure counted)."""
        delta = bounded(used) - reservation.tokens
        if not delta:
            return
        if not reservation.shared or self.redis is None:
            self.local.settle(reservation, used)
            return
        slot = (reservation.name, reservation.minute, reservation.day)
        self.unsettled[slot] = self.unsettled.get(slot, 0) + delta
        if self.settling is None:
            self.settling = asyncio.get_running_loop().create_task(self.settle_soon())

    async def settle_soon(self) -> None:
        await asyncio.sleep(SETTLE_SECONDS)
        self.settling = None
        await self.send_settlements()

    async def send_settlements(self) -> None:
        """What calls used, against what they reserved, in one round trip."""
        unsettled, self.unsettled = self.unsettled, {}
        if not unsettled or self.redis is None:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for (name, minute, day), delta in unsettled.items():
                    keys = redis_keys(name, minute, day)
                    pipe.incrby(keys[3], delta).expire(keys[3], 2 * MINUTE)
                    pipe.incrby(keys[4], delta).expire(keys[4], 2 * DAY)
                await pipe.execute()
        except UNREACHABLE as e:
            self.store_failed(e, self.clock())
        except RedisError as e:
            self.script_failed(e)

    def store_failed(self, error: Exception, now: float) -> None:
        self.on_store_error()
        if self.down_until == 0.0:
            logger.warning(
                "gomodel: Redis at %s cannot be reached (%s): limits are enforced by this "
                "gateway alone until it answers again",
                redact_url(self.redis_url or ""),
                type(error).__name__,
            )
        self.down_until = now + RETRY_SECONDS

    def script_failed(self, error: Exception) -> None:
        """Redis answered with an error: this call is decided locally; Redis stays in use."""
        self.on_store_error()
        if self.script_errors.due():
            logger.warning(
                "gomodel: Redis at %s answered an error (%s: %s): this call's limits were "
                "decided by this gateway alone; limits stay shared",
                redact_url(self.redis_url or ""),
                type(error).__name__,
                str(error)[:200],
            )

    def store_answered(self) -> None:
        if self.down_until:
            logger.warning("gomodel: Redis answers again: limits are shared again")
            self.down_until = 0.0

    async def close(self) -> None:
        if self.settling is not None:
            self.settling.cancel()
            self.settling = None
        await self.send_settlements()
        if self.redis is not None:
            await self.redis.aclose()
