"""The gateway's configuration lifecycle, as a mitmproxy addon of its own: options, settings and
the config file (reloads included), the model inventory and its discovery, the circuit
breakers, the HTTP client to Oracle, the stream relay, metrics, and who may use the port.

The other addons and the call service read the state kept here; calls change only what they
are meant to (the owners in the affinity store, the limiter's counters, metrics, the ledger's
rows, the relay's jobs). Everything configuration-derived is rebuilt from scratch on every
reconfigure, and requests in flight keep what they hold.
"""

import asyncio
import logging
import ssl
import time
from collections.abc import Coroutine
from typing import Any

from mitmproxy import contentviews, ctx, exceptions

from .affinity import AffinityStore
from .collection import Collector
from .config_reload import check_reload
from .config_values import ConfigError
from .contentview import GoModelContentview
from .discovery import Discovery, fetch_models
from .exposure import Exposure, decide_exposure, new_via_token
from .hosts import is_loopback
from .inventory import build_inventory
from .ledger import Ledger, open_ledger
from .ledger_location import LedgerLocation, redact_url
from .ledger_store import gateway_id
from .limiter import Limiter
from .metrics import Metrics
from .modes import listen_hosts, upstream_proxy, upstream_tls_context
from .oci_discovery import fetch_oci_models
from .options import (
    OPTION_NAMES,
    Settings,
    declare_options,
    default_settings,
    options_showing_passwords,
    read_settings,
)
from .oracle_session import UpstreamProxy
from .providers import DiscoveryMethod, GatewayConfig, Provider
from .relay import StreamRelay
from .resilience import CircuitBreaker, breakers_for
from .transport import Transport
from .watch import watch_file
from .workarounds import (
    acyclic_typecheck,
    bound_connection_log,
    bound_request_heads,
    json_protocol_errors,
    quiet_strangers_flows,
)

logger = logging.getLogger("gomodel")

UPSTREAM_TLS_OPTIONS = frozenset(
    {"ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}
)
LISTEN_OPTIONS = frozenset({"listen_host", "mode"})
PROXY_OPTIONS = frozenset({"mode", "upstream_auth"})


class Runtime:
    """What the options and the configuration file decide, kept current."""

    def __init__(self) -> None:
        self.settings: Settings = default_settings()
        self.discovered: dict[str, tuple[str, ...]] = {}
        self.inventory = build_inventory((), {}, int(time.time()))
        self.breakers: dict[str, CircuitBreaker] = {}
        self.transport = Transport(self.upstream_ssl_context)
        self.relay = StreamRelay(self.transport)
        self.metrics = Metrics()
        self.discovery: Discovery | None = None
        self.config_watch: asyncio.Task[None] | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self.is_running = False
        self.exposure = Exposure(False, "not configured yet")
        self.via_token = new_via_token()
        self.upstream_proxy: UpstreamProxy | None = None
        self.limiter = Limiter(time.time)
        self.closing: set[asyncio.Task[None]] = set()
        self.body_limit_set: str | None = None  # the body_size_limit this addon set
        # Which provider created each stored resource; kept across reloads.
        self.affinity = AffinityStore(time.monotonic)
        self.ledger: Ledger | None = None
        self.gateway_id = gateway_id()
        # mitmproxy listens before this addon's running hook is done: calls that come in
        # meanwhile wait for it (the relay, the ledger and the owners of stored resources read
        # back from it).
        self.ready = asyncio.Event()
        self.opens_port = False  # a proxy server will listen, so `running` will follow
        self.collector = Collector()

    @property
    def config(self) -> GatewayConfig:
        return self.settings.config

    @property
    def hosts(self) -> tuple[str, ...]:
        return self.settings.hosts

    @property
    def starting(self) -> bool:
        """The proxy listens but the running hook is not done: calls wait for it."""
        return (self.is_running or self.opens_port) and not self.ready.is_set()

    # -- mitmproxy hooks -----------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        declare_options(loader)
        bound_request_heads()
        bound_connection_log()
        quiet_strangers_flows()
        json_protocol_errors()
        acyclic_typecheck()
        contentviews.add(GoModelContentview)

    def configure(self, updated: set[str]) -> None:
        if ctx.master.addons.get("proxyserver"):  # a port will open before `running` (relay.py)
            self.relay.reserve()
            self.opens_port = True
        if updated & UPSTREAM_TLS_OPTIONS:
            self.ssl_context = None
        if updated & PROXY_OPTIONS:
            self.upstream_proxy = upstream_proxy(ctx.options.mode, ctx.options.upstream_auth)
            self.configure_transport()
        if not updated & OPTION_NAMES:
            if updated & LISTEN_OPTIONS:
                self.update_exposure()
            return
        try:
            settings = read_settings(ctx.options)
            if self.is_running:
                check_reload(self.config, settings.config)
        except ConfigError as e:
            if self.is_running:  # mitmproxy rejects the change and keeps the current state
                raise exceptions.OptionsError(f"gomodel: {e}") from None
            # At startup an error log line makes mitmproxy exit 1, with this message alone
            # instead of the traceback an exception from a script's configure() prints.
            logger.error("gomodel: %s", e)
            return
        self.apply(settings)

    async def running(self) -> None:
        # Gateway hostnames don't resolve: mitmproxy must not connect before the rewrite.
        if ctx.options.connection_strategy != "lazy":
            ctx.options.update(connection_strategy="lazy")
            logger.info("gomodel: set connection_strategy=lazy so gateway hostnames need no DNS")
        self.warn_about_options()
        if self.upstream_proxy:
            logger.info("gomodel: calls to Oracle go through %s", self.upstream_proxy.url)
        self.is_running = True
        try:
            await self.relay.start()
            await self.open_ledger(self.settings.usage_db)
            self.start_discovery()
            self.start_config_watch()
        finally:  # whatever failed was logged: calls must not wait for ever
            self.ready.set()
        self.collector.freeze_startup()

    def warn_about_options(self) -> None:
        """Once, at start-up: options mitmproxy does not know, an open port, passwords shown."""
        unknown = sorted(name for name in ctx.options.deferred if name.startswith("gomodel_"))
        if unknown:
            logger.error("gomodel: unknown option(s): %s", ", ".join(unknown))
        if not self.config.keys.required and not is_loopback(ctx.options.listen_host):
            logger.warning(
                "gomodel: listening on %s without a gateway key: anyone who can reach this port "
                "can use your Oracle key; set GOMODEL_MASTER_KEY or server.keys",
                ctx.options.listen_host or "all interfaces",
            )
        for option in options_showing_passwords(ctx.options):
            logger.warning(
                "gomodel: the option %s holds a password, which mitmweb's /options and the "
                "command line (ps) show; set the environment variable %s instead",
                option.name,
                option.environment,
            )

    async def done(self) -> None:
        self.ready.clear()
        self.collector.thaw()
        self.stop_discovery()
        if self.config_watch:
            self.config_watch.cancel()
            self.config_watch = None
        self.is_running = False
        await self.relay.stop()
        await self.transport.close()
        await self.limiter.close()
        if self.closing:
            await asyncio.wait(self.closing)
        await self.open_ledger(None)  # the last rows flushed

    # -- configuration -------------------------------------------------------------------------

    def apply(self, settings: Settings) -> None:
        """Replace all configuration-derived state; requests in flight keep what they hold."""
        path_changed = settings.config_path != self.settings.config_path
        if settings.redis_url != self.settings.redis_url:
            self.replace_limiter(settings.redis_url)
        if self.is_running and settings.usage_db != self.settings.usage_db:
            self.in_background(self.open_ledger(settings.usage_db))
        self.stop_discovery()
        self.settings, self.discovered = settings, {}
        names = tuple(p.name for p in settings.config.providers)
        self.breakers = breakers_for(names, settings.config.failover, self.breakers)
        self.configure_transport()
        self.rebuild_inventory()
        self.log_configuration()
        self.update_exposure()
        if self.is_running:
            self.start_discovery()
            if path_changed:
                self.start_config_watch()

    def replace_limiter(self, redis_url: str | None) -> None:
        """A new store for the limit counters (a reload with the same one keeps them)."""
        old, self.limiter = (
            self.limiter,
            Limiter(time.time, redis_url, self.metrics.limit_store_failed),
        )
        if redis_url:
            logger.info(
                "gomodel: client key limits are shared through Redis at %s", redact_url(redis_url)
            )
        if old.redis is not None:  # its connections, closed once its last writes are done
            self.in_background(old.close())

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Work a reconfigure starts and `done` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def open_ledger(self, target: LedgerLocation | None) -> None:
        """Close the current usage ledger (flushing it), open the one at `target`, and take
        the stored resources' owners it remembers. A SQLite file that cannot be created is an
        error (at startup: the gateway stops); a PostgreSQL that is down only delays rows."""
        old, self.ledger = self.ledger, None
        self.affinity.on_remember = None
        if old is not None:
            await asyncio.to_thread(old.close)
        if target is None:
            return
        try:
            ledger = open_ledger(target.location)
        except ValueError as e:
            logger.error("gomodel: option gomodel_usage_db: %s", e)
            return
        owners = await asyncio.to_thread(ledger.load_resources, self.affinity.capacity)
        self.affinity.seed(reversed(owners))  # newest last: the most recently used
        self.affinity.on_remember = ledger.remember_resource
        self.ledger = ledger
        logger.info("gomodel: usage ledger at %s", target)

    def configure_transport(self) -> None:
        config = self.config
        self.transport.configure(
            config.retries, config.failover, self.breakers, self.upstream_proxy
        )

    def reload_config_file(self) -> None:
        try:
            settings = read_settings(ctx.options, reload=True)
            check_reload(self.config, settings.config)
        except ConfigError as e:
            logger.error(
                "gomodel: configuration not reloaded, the previous one keeps serving: %s", e
            )
            return
        logger.info("gomodel: %s changed, configuration reloaded", settings.config_path)
        self.apply(settings)

    def start_config_watch(self) -> None:
        if self.config_watch:
            self.config_watch.cancel()
        self.config_watch = asyncio.get_running_loop().create_task(
            watch_file(
                self.settings.config_path,
                self.settings.config_stamp,
                self.reload_config_file,
            ),
            name="gomodel config watch",
        )

    def log_configuration(self) -> None:
        config = self.config
        if config.source:
            logger.info("gomodel: configuration from %s", config.source)
        for warning in config.warnings:
            logger.warning("gomodel: %s", warning)
        for provider in config.providers:
            logger.info(
                "gomodel: provider %s: host %s, %d models configured, models_mode %s",
                provider.name,
                provider.host,
                len(provider.models),
                provider.models_mode,
            )
        if not config.providers:
            logger.warning(
                "gomodel: no Oracle provider is configured: set ORACLE_BASE_URL, ORACLE_API_KEY "
                "and ORACLE_MODELS, or add providers to config.yaml"
            )
        logger.info(
            "gomodel: serving %s and requests sent straight to the proxy port",
            ", ".join(self.hosts) or "no hostnames",
        )

    def update_exposure(self) -> None:
        """Decide again whether other traffic may pass through (settings or listen addresses
        changed); say so when the answer changes."""
        options = ctx.options
        exposure = decide_exposure(
            self.settings.passthrough,
            self.config.keys.required,
            listen_hosts(options.listen_host, options.mode),
        )
        if exposure != self.exposure:
            logger.info("gomodel: %s", exposure.describe())
        self.exposure = exposure
        self.bound_request_bodies()

    def bound_request_bodies(self) -> None:
        """While the port is shared (pass-through closed), mitmproxy itself cuts off a request
        body past gomodel_max_body_size as it arrives (413), so a key holder's chunked upload
        is never buffered whole. Not when the operator set body_size_limit themselves."""
        if "body_size_limit" not in ctx.options:  # no proxy server (unit tests)
            return
        current = ctx.options.body_size_limit
        if current is not None and current != self.body_limit_set:
            return  # the operator's own
        wanted = None if self.exposure.open else str(self.settings.max_body_size)
        if current != wanted:
            self.body_limit_set = wanted
            ctx.options.update(body_size_limit=wanted)
            if wanted:
                logger.info("gomodel: set body_size_limit=%s (gomodel_max_body_size)", wanted)

    # -- models --------------------------------------------------------------------------------

    def rebuild_inventory(self) -> None:
        config = self.config
        self.inventory = build_inventory(
            config.providers, self.discovered, self.inventory.created, config.aliases
        )

    def start_discovery(self) -> None:
        self.discovery = Discovery(self.config.providers, self.fetch_models, self.on_discovered)
        self.discovery.start()

    def stop_discovery(self) -> None:
        if self.discovery:
            self.discovery.stop()
            self.discovery = None

    async def fetch_models(self, provider: Provider) -> tuple[str, ...]:
        """Oracle's /models on the gateway's own client, or the OCI control plane's listing
        (the oci SDK, blocking, in a thread)."""
        if provider.discovery is DiscoveryMethod.OCI:
            options = ctx.options
            return await asyncio.to_thread(
                fetch_oci_models,
                provider,
                options.ssl_verify_upstream_trusted_ca,
                not options.ssl_insecure,
                self.upstream_proxy.url_with_auth() if self.upstream_proxy else None,
            )
        return await fetch_models(self.transport, provider)

    def on_discovered(self, provider_name: str, models: tuple[str, ...]) -> None:
        self.discovered[provider_name] = models
        self.rebuild_inventory()

    # -- connections ---------------------------------------------------------------------------

    def upstream_ssl_context(self) -> ssl.SSLContext:
        """TLS settings for the gateway's own calls (made once per change of mitmproxy's
        upstream TLS options)."""
        if self.ssl_context is None:
            self.ssl_context = upstream_tls_context(ctx.options)
        return self.ssl_context

    def breaker_states(self) -> dict[str, dict[str, object]]:
        now = time.monotonic()
        return {name: breaker.snapshot(now) for name, breaker in self.breakers.items()}
