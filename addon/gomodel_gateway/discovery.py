"""Model discovery: ask each provider's GET {base_url}/models, in the background, on an interval.

Oracle does not document /models for API keys: it may answer 404. A failure keeps what an earlier
call found (or nothing, so the configured list alone serves) and is logged, never raised. A
redirect is a failure too (`RedirectRefused`): following it would send the key along.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from . import safejson
from .model_ids import is_model_id
from .oracle_session import describe
from .providers import DiscoveryMethod, Provider
from .redirects import is_redirect, refused
from .transport import Transport

logger = logging.getLogger(__name__)

DISCOVERY_TIMEOUT_SECONDS = 5.0
MAX_MODELS_BODY = 4 * 1024 * 1024


class DiscoveryError(Exception):
    pass


class RedirectRefused(DiscoveryError):
    """The provider answered with a redirect, which was not followed."""


def parse_models_response(body: bytes) -> tuple[str, ...]:
    """Model ids from an OpenAI-style list ({"data": [{"id": ...}]}); invalid ids are dropped."""
    try:
        document = safejson.loads(body)
    except ValueError as e:
        raise DiscoveryError("the /models answer is not JSON") from e
    items = document.get("data") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise DiscoveryError("the /models answer has no 'data' list")
    models: list[str] = []
    for item in items:
        model = item.get("id") if isinstance(item, dict) else None
        if isinstance(model, str) and is_model_id(model) and model not in models:
            models.append(model)
    return tuple(models)


async def fetch_models(
    transport: Transport, provider: Provider, timeout: float = DISCOVERY_TIMEOUT_SECONDS
) -> tuple[str, ...]:
    """GET {base_url}/models with the provider key, on the gateway's own HTTP client (its TLS
    settings, its upstream proxy, the key set where every call's is); DiscoveryError on any
    failure."""
    url = f"{provider.base_url}/models"
    try:
        status, body, location = await transport.get(provider, "models", timeout, MAX_MODELS_BODY)
    except TimeoutError as e:
        raise DiscoveryError(f"GET /models failed: no answer within {timeout:g} s") from e
    except (aiohttp.ClientError, OSError) as e:
        raise DiscoveryError(f"GET /models failed: {describe(e)}") from e
    if is_redirect(status):
        raise RedirectRefused(f"GET /models {refused(status, url, location)}")
    if status != 200:
        raise DiscoveryError(f"GET /models answered {status}")
    if len(body) > MAX_MODELS_BODY:
        raise DiscoveryError("the /models answer is too large")
    return parse_models_response(body)


Fetcher = Callable[[Provider], Awaitable[tuple[str, ...]]]
OnUpdate = Callable[[str, tuple[str, ...]], None]


class Discovery:
    """One background task per provider in fallback mode, refreshing its discovered models."""

    def __init__(self, providers: tuple[Provider, ...], fetch: Fetcher, on_update: OnUpdate):
        self.providers = tuple(p for p in providers if p.models_mode == "fallback")
        self.fetch = fetch
        self.on_update = on_update
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(self._refresh_forever(p), name=f"gomodel discovery {p.name}")
            for p in self.providers
        ]

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks = []

    async def refresh(self, provider: Provider) -> bool:
        """One discovery call; True when it succeeded."""
        try:
            models = await self.fetch(provider)
        except DiscoveryError as e:
            # Oracle's usual 404 for API keys is no news; a refused redirect is a misconfiguration.
            noteworthy = provider.discovery == DiscoveryMethod.OCI or isinstance(e, RedirectRefused)
            log = logger.warning if noteworthy else logger.info
            log(
                "gomodel: provider %s: model discovery unavailable (%s); serving its configured "
                "models (%d)",
                provider.name,
                e,
                len(provider.models),
            )
            return False
        source = "the OCI control plane" if provider.discovery == DiscoveryMethod.OCI else "/models"
        if not models:
            logger.info("gomodel: provider %s: %s listed no models", provider.name, source)
            return False
        self.on_update(provider.name, models)
        logger.info("gomodel: provider %s: %s listed %d models", provider.name, source, len(models))
        return True

    async def _refresh_forever(self, provider: Provider) -> None:
        while True:
            try:
                await self.refresh(provider)
            except Exception:
                logger.exception("gomodel: provider %s: model discovery failed", provider.name)
            await asyncio.sleep(provider.models_refresh_seconds)
