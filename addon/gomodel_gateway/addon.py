"""The mitmproxy addon: thin hooks that call the pure modules beside it.

Life of a gateway request:
- requestheaders: is it for the gateway (a gomodel_hosts name, or the proxy's own port)? Then
  its body is buffered, so that routing sees it and nothing streams to the original host.
- request: answer locally (/v1/models, /health, every error) or rewrite URL, body and key.
  The key goes in here, as late as possible; `responseheaders` and `error` take it out again so
  mitmweb, saved flows and logs never show it.
- responseheaders: SSE passes through chunk by chunk; `response`: Oracle's errors are reshaped.
Every hook fails closed: an exception answers the client with a 502 and sends nothing upstream.
"""

import asyncio
import functools
import logging
import os
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi
from mitmproxy import ctx, exceptions, http

from . import local, safejson, upstream
from .auth import check_client_key
from .config import ConfigError, GatewayConfig, Provider, load_config, parse_size
from .discovery import Discovery, fetch_models
from .errors import JSON_HEADERS, GatewayError, error_body, from_oracle
from .hosts import is_gateway_request, is_loopback, parse_hosts
from .inventory import build_inventory
from .routing import (
    UPSTREAM_ENDPOINTS,
    Endpoint,
    Request,
    Route,
    check_body_size,
    check_declared_body,
    classify,
    route,
)
from .sse import StreamSummary, usage_tokens
from .watch import watch_file

logger = logging.getLogger("gomodel")

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"
OPTIONS = frozenset({"gomodel_config", "gomodel_hosts", "gomodel_max_body_size"})
DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
UPSTREAM_TLS_OPTIONS = frozenset(
    {"ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}
)
REACHABLE_FOR_SECONDS = 30.0
CONNECT_CHECK_TIMEOUT_SECONDS = 5.0


@dataclass
class Exchange:
    """Per-flow state of a gateway request (kept off the flow: flow.metadata is saved)."""

    started: float
    request: Request | None = None
    route: Route | None = None
    stream: StreamSummary | None = None
    request_id: str | None = None
    tokens: tuple[int | None, int | None] = (None, None)
    logged: bool = False


def answer_error(flow: http.HTTPFlow, error: GatewayError) -> None:
    flow.response = http.Response.make(
        error.status, error.body(), {**JSON_HEADERS, **dict(error.headers)}
    )
    flow.comment = f"gomodel error {error.status} {error.code}"


def json_response(status: int, body: bytes) -> http.Response:
    return http.Response.make(status, body, JSON_HEADERS)


Hook = Callable[["GoModel", http.HTTPFlow], Any]


def fail_closed(hook: Hook) -> Hook:
    """Answer 502 instead of letting mitmproxy pass the flow on unmodified after an exception."""

    def contain(self: "GoModel", flow: http.HTTPFlow, error: Exception) -> None:
        logger.error("gomodel: internal error in %s hook", hook.__name__, exc_info=error)
        flow.response = json_response(
            502,
            error_body(
                502,
                f"The gateway failed while handling this request ({type(error).__name__}); "
                "nothing was sent to Oracle. See the gateway log for details.",
                code="gateway_error",
                error_type="gateway_error",
            ),
        )
        flow.comment = "gomodel gateway_error"
        flow.marked = ":red_circle:"
        self.exchanges.pop(flow, None)  # later hooks leave this flow alone
        upstream.redact_key(flow.request.headers)

    if asyncio.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def async_wrapper(self: "GoModel", flow: http.HTTPFlow) -> None:
            try:
                await hook(self, flow)
            except Exception as e:
                contain(self, flow, e)

        return async_wrapper

    @functools.wraps(hook)
    def wrapper(self: "GoModel", flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception as e:
            contain(self, flow, e)

    return wrapper


@dataclass(frozen=True)
class Settings:
    """Everything the gomodel_* options and the configuration file decide."""

    hosts: tuple[str, ...]
    config: GatewayConfig
    config_path: Path
    max_body_size: int


def read_settings() -> Settings:
    """Read the options, the environment and the configuration file; ConfigError if invalid."""
    try:
        hosts = parse_hosts(ctx.options.gomodel_hosts)
    except ValueError as e:
        raise ConfigError(f"option gomodel_hosts: {e}") from e
    try:
        max_body_size = parse_size(ctx.options.gomodel_max_body_size)
    except ValueError as e:
        raise ConfigError(f"option gomodel_max_body_size: {e}") from e
    explicit = bool(ctx.options.gomodel_config)
    path = Path(ctx.options.gomodel_config).expanduser() if explicit else DEFAULT_CONFIG
    config = load_config(path, os.environ, required=explicit)
    return Settings(hosts, config, path, max_body_size)


class GoModel:
    def __init__(self) -> None:
        self.settings = Settings((), GatewayConfig(()), DEFAULT_CONFIG, DEFAULT_MAX_BODY_SIZE)
        self.discovered: dict[str, tuple[str, ...]] = {}
        self.inventory = build_inventory((), {}, int(time.time()))
        self.discovery: Discovery | None = None
        self.config_watch: asyncio.Task[None] | None = None
        self.reachable_until: dict[tuple[str, int], float] = {}
        self.exchanges: weakref.WeakKeyDictionary[http.HTTPFlow, Exchange] = (
            weakref.WeakKeyDictionary()
        )
        self.ssl_context: ssl.SSLContext | None = None
        self.is_running = False

    # Every option is a string parsed here: mitmproxy silently unloads a script when a --set
    # value does not parse for an option's declared type.
    def load(self, loader: Any) -> None:
        loader.add_option(
            "gomodel_config",
            str,
            "",
            """
            Path of the gateway's YAML configuration (providers: blocks of type oracle).
            Empty: config.yaml at the repository root, which may be absent; a path given here
            must exist. ORACLE_* environment variables override it. Edits are picked up while
            running; a broken edit is logged and the previous configuration keeps serving.
            """,
        )
        loader.add_option(
            "gomodel_hosts",
            str,
            "gomodel.local",
            """
            Comma-separated hostnames the gateway answers for (e.g. gomodel.local,api.openai.com).
            Requests sent straight to the proxy port are always answered. Other traffic passes
            through untouched.
            """,
        )
        loader.add_option(
            "gomodel_max_body_size",
            str,
            "10MiB",
            """
            Largest request body the gateway accepts (e.g. 10MiB, 512KiB, 1048576); larger ones
            get 413.
            """,
        )

    # -- configuration -------------------------------------------------------------------------

    @property
    def config(self) -> GatewayConfig:
        return self.settings.config

    @property
    def hosts(self) -> tuple[str, ...]:
        return self.settings.hosts

    def configure(self, updated: set[str]) -> None:
        if updated & UPSTREAM_TLS_OPTIONS:
            self.ssl_context = None
        if not updated & OPTIONS:
            return
        try:
            settings = read_settings()
        except ConfigError as e:
            if self.is_running:  # mitmproxy rejects the change and keeps the current state
                raise exceptions.OptionsError(f"gomodel: {e}") from None
            # At startup an error log line makes mitmproxy exit 1, with this message alone
            # instead of the traceback an exception from a script's configure() prints.
            logger.error("gomodel: %s", e)
            return
        self.apply(settings)

    def apply(self, settings: Settings) -> None:
        """Replace all configuration-derived state; requests in flight keep what they hold."""
        path_changed = settings.config_path != self.settings.config_path
        self.stop_discovery()
        self.settings, self.discovered = settings, {}
        self.reachable_until = {}
        self.rebuild_inventory()
        self.log_configuration()
        if self.is_running:
            self.start_discovery()
            if path_changed:
                self.start_config_watch()

    def reload_config_file(self) -> None:
        try:
            settings = read_settings()
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
            watch_file(self.settings.config_path, self.reload_config_file),
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

    def rebuild_inventory(self) -> None:
        self.inventory = build_inventory(
            self.config.providers, self.discovered, self.inventory.created
        )

    def running(self) -> None:
        # Gateway hostnames don't resolve: mitmproxy must not connect before the rewrite.
        if ctx.options.connection_strategy != "lazy":
            ctx.options.update(connection_strategy="lazy")
            logger.info("gomodel: set connection_strategy=lazy so gateway hostnames need no DNS")
        unknown = sorted(name for name in ctx.options.deferred if name.startswith("gomodel_"))
        if unknown:
            logger.error("gomodel: unknown option(s): %s", ", ".join(unknown))
        if not self.config.master_keys and not is_loopback(ctx.options.listen_host):
            logger.warning(
                "gomodel: listening on %s without a master key: anyone who can reach this port "
                "can use your Oracle key; set GOMODEL_MASTER_KEY",
                ctx.options.listen_host or "all interfaces",
            )
        self.is_running = True
        self.start_discovery()
        self.start_config_watch()

    def done(self) -> None:
        self.stop_discovery()
        if self.config_watch:
            self.config_watch.cancel()
            self.config_watch = None
        self.is_running = False

    def start_discovery(self) -> None:
        self.discovery = Discovery(self.config.providers, self.fetch_models, self.on_discovered)
        self.discovery.start()

    def stop_discovery(self) -> None:
        if self.discovery:
            self.discovery.stop()
            self.discovery = None

    def fetch_models(self, provider: Provider) -> tuple[str, ...]:
        return fetch_models(provider, self.upstream_ssl_context())

    def on_discovered(self, provider_name: str, models: tuple[str, ...]) -> None:
        self.discovered[provider_name] = models
        self.rebuild_inventory()

    def upstream_ssl_context(self) -> ssl.SSLContext:
        """TLS settings for the gateway's own calls, matching mitmproxy's upstream options."""
        if self.ssl_context is None:
            options = ctx.options
            context = ssl.create_default_context(
                cafile=options.ssl_verify_upstream_trusted_ca or certifi.where(),
                capath=options.ssl_verify_upstream_trusted_confdir or None,
            )
            if options.ssl_insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self.ssl_context = context
        return self.ssl_context

    # -- requests ------------------------------------------------------------------------------

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or not is_gateway_request(
            flow.request.host, flow.request.port, self.hosts, flow.client_conn.sockname
        ):
            return
        # Buffer the body: routing needs it, and nothing may stream to the original host.
        flow.request.stream = False
        exchange = self.exchanges[flow] = Exchange(started=time.monotonic())
        headers = flow.request.headers
        try:
            exchange.request = classify(flow.request.method, flow.request.path)
            if exchange.request.endpoint is not Endpoint.HEALTH:
                check_client_key(headers.get("authorization"), self.config.master_keys)
            check_declared_body(
                headers.get("content-length"),
                headers.get("content-encoding"),
                self.settings.max_body_size,
            )
        except GatewayError as e:
            answer_error(flow, e)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or exchange.request is None or flow.response:
            return
        request, inventory = exchange.request, self.inventory
        try:
            if request.endpoint not in UPSTREAM_ENDPOINTS:
                body = local.answer(inventory, request, self.hosts)
                flow.response = json_response(200, body)
                flow.comment = f"gomodel local {request.endpoint.value}"
                return
            content = flow.request.raw_content or b""
            check_body_size(len(content), self.settings.max_body_size)
            planned = route(inventory, request, content)
            await self.check_reachable(planned)
        except GatewayError as e:
            answer_error(flow, e)
            return
        exchange.route = planned
        provider = planned.target.provider
        flow.metadata["gomodel"] = {
            "provider": provider.name,
            "upstream_model": planned.target.upstream_model,
            "requested_model": planned.requested_model,
            "endpoint": planned.endpoint.value,
            "stream": planned.stream,
        }
        flow.request.scheme = "https"
        flow.request.host, flow.request.port = upstream.upstream_address(provider)
        flow.request.path = upstream.upstream_path(planned)
        if planned.body is not content:
            flow.request.content = planned.body
        upstream.inject_key(flow.request.headers, provider)

    async def check_reachable(self, planned: Route) -> None:
        """Answer 502 in OpenAI's shape when Oracle's host cannot be reached at all.

        mitmproxy answers a failed upstream connection with its own HTML page, which no hook can
        replace; a quick connect (remembered for a while after it succeeds) catches DNS errors
        and refused connections first.
        """
        provider = planned.target.provider
        address = upstream.upstream_address(provider)
        if self.reachable_until.get(address, 0.0) > time.monotonic():
            return
        try:
            async with asyncio.timeout(CONNECT_CHECK_TIMEOUT_SECONDS):
                _, writer = await asyncio.open_connection(*address)
            writer.close()
        except (OSError, TimeoutError) as e:
            reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
            raise GatewayError(
                502,
                f"Cannot reach Oracle provider {provider.name!r} at {address[0]}:{address[1]}: "
                f"{reason}.",
                code="upstream_unreachable",
                type="api_error",
            ) from e
        self.reachable_until[address] = time.monotonic() + REACHABLE_FOR_SECONDS

    # -- responses -----------------------------------------------------------------------------

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or exchange.route is None or flow.response is None:
            return
        upstream.redact_key(flow.request.headers)
        exchange.request_id = flow.response.headers.get("opc-request-id")
        content_type = flow.response.headers.get("content-type", "")
        if 200 <= flow.response.status_code < 300 and content_type.startswith("text/event-stream"):
            summary = exchange.stream = StreamSummary()
            flow.response.stream = self.stream_through(flow, summary)

    def stream_through(
        self, flow: http.HTTPFlow, summary: StreamSummary
    ) -> Callable[[bytes], bytes]:
        def forward(chunk: bytes) -> bytes:
            try:
                if chunk:
                    summary.feed(chunk)
                else:  # mitmproxy's end-of-stream call
                    self.log_exchange(flow)
            except Exception:
                logger.exception("gomodel: failed to inspect a stream chunk")
            return chunk

        return forward

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or exchange.route is None or flow.response is None:
            return
        upstream.redact_key(flow.request.headers)
        if flow.response.stream:
            return  # logged when the stream ended
        provider = exchange.route.target.provider
        if flow.response.status_code >= 400:
            flow.response.content = from_oracle(
                flow.response.status_code,
                flow.response.content or b"",
                provider.name,
                provider.host,
                exchange.request_id,
            )
            flow.response.headers["content-type"] = "application/json"
        else:
            exchange.tokens = json_usage(flow.response.content or b"")
        self.log_exchange(flow)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or exchange.route is None:
            return
        upstream.redact_key(flow.request.headers)
        provider = exchange.route.target.provider
        self.reachable_until.pop(upstream.upstream_address(provider), None)
        logger.warning(
            "gomodel: %s %s to provider %s (%s) failed: %s",
            exchange.route.endpoint.value,
            exchange.route.target.upstream_model,
            provider.name,
            provider.host,
            flow.error.msg if flow.error else "unknown error",
        )

    def log_exchange(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or exchange.route is None or exchange.logged:
            return
        exchange.logged = True
        if exchange.stream:
            exchange.tokens = exchange.stream.tokens()
        status = flow.response.status_code if flow.response else 0
        tokens_in, tokens_out = exchange.tokens
        seconds = time.monotonic() - exchange.started
        target = exchange.route.target
        summary = (
            f"gomodel {target.provider.name} {target.upstream_model} {status} "
            f"in={_count(tokens_in)} out={_count(tokens_out)} {seconds:.2f}s"
        )
        flow.comment = summary
        logger.info(
            "%s %s%s opc-request-id=%s",
            summary,
            exchange.route.endpoint.value,
            " stream" if exchange.stream else "",
            exchange.request_id or "-",
        )


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def json_usage(body: bytes) -> tuple[int | None, int | None]:
    try:
        document = safejson.loads(body)
    except ValueError:
        return None, None
    return usage_tokens(document.get("usage") if isinstance(document, dict) else None)
