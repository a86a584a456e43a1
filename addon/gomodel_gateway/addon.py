"""The mitmproxy addon: thin hooks that call the pure modules beside it.

Life of a gateway request:
- requestheaders: is it for the gateway (a gomodel_hosts name, or the proxy's own port)? Then its
  body is buffered (routing needs it; nothing may stream to the original host), and what the
  headers already condemn is answered: unknown path, wrong method, missing master key, a body
  too large or compressed.
- request: answer locally (/v1/models, /health, every error), or route the call. A plain call is
  sent by the `Transport` (retries, failover, timeouts) and its answer set as the response; a
  streamed call is handed to the `StreamRelay`, and the flow is pointed at it so mitmproxy
  streams the answer through. The Oracle key is set on the gateway's own requests only; it never
  sits on a mitmproxy flow, so mitmweb, saved flows and logs cannot show it.
- responseheaders: streams pass through chunk by chunk, watched for usage on the side.
Every hook fails closed: an exception answers the client with a 502 and sends nothing upstream.
"""

import asyncio
import functools
import inspect
import logging
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import certifi
from mitmproxy import ctx, exceptions, http

from . import local, safejson
from .accesslog import AccessRecord, clip
from .adapt import STARVED_WARNING, starved
from .auth import check_client_key
from .config import ConfigError, GatewayConfig, Provider
from .discovery import Discovery, fetch_models
from .errors import JSON_HEADERS, GatewayError, error_body
from .hosts import is_gateway_request, is_loopback
from .inventory import build_inventory
from .metrics import Metrics
from .oci_discovery import fetch_oci_models
from .options import OPTION_NAMES, Settings, declare_options, read_settings
from .relay import StreamJob, StreamRelay
from .resilience import CircuitBreaker, breakers_for
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
from .sse import StreamSummary, UsageChunkFilter, usage_tokens
from .transport import Reply, Transport
from .upstream import CLIENT_CREDENTIAL_HEADERS
from .watch import watch_file

logger = logging.getLogger("gomodel")

UPSTREAM_TLS_OPTIONS = frozenset(
    {"ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}
)
REDACTED = "[redacted by gomodel]"


@dataclass
class Exchange:
    """Per-flow state of a gateway request (kept off the flow: flow.metadata is saved)."""

    started: float
    request: Request | None = None
    route: Route | None = None
    reply: Reply | None = None  # a plain call's answer
    job: StreamJob | None = None  # a streamed call, answered through the relay
    stream: StreamSummary | None = None
    tokens: tuple[int | None, int | None] = (None, None)
    starved: bool = False  # the answer was cut off by its output budget before any text
    first_byte: float | None = None  # when the answer (a stream's headers) left for the client
    error: str | None = None  # the code of a refused or failed request
    client_path: str = ""  # the path as the client sent it (the flow may be pointed elsewhere)
    finished: bool = False

    @property
    def final_reply(self) -> Reply | None:
        return self.job.reply if self.job else self.reply


Hook = Callable[["GoModel", http.HTTPFlow], Any]


def fail_closed(hook: Hook) -> Hook:
    """Answer 502 instead of letting mitmproxy pass the flow on unmodified after an exception."""

    before_upstream = hook.__name__ in ("requestheaders", "request")
    consequence = "nothing was sent to Oracle" if before_upstream else "Oracle's answer is lost"

    def contain(self: "GoModel", flow: http.HTTPFlow, error: Exception) -> None:
        logger.error("gomodel: internal error in %s hook", hook.__name__, exc_info=error)
        flow.response = http.Response.make(
            502,
            error_body(
                502,
                f"The gateway failed while handling this request ({type(error).__name__}); "
                f"{consequence}. See the gateway log for details.",
                code="gateway_error",
                error_type="gateway_error",
            ),
            JSON_HEADERS,
        )
        flow.comment = "gomodel gateway_error"
        flow.marked = ":red_circle:"
        self.exchanges.pop(flow, None)  # later hooks leave this flow alone

    if inspect.iscoroutinefunction(hook):

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


class GoModel:
    def __init__(self) -> None:
        self.settings = Settings()
        self.discovered: dict[str, tuple[str, ...]] = {}
        self.inventory = build_inventory((), {}, int(time.time()))
        self.breakers: dict[str, CircuitBreaker] = {}
        self.transport = Transport(self.upstream_ssl_context)
        self.relay = StreamRelay()
        self.metrics = Metrics()
        self.discovery: Discovery | None = None
        self.config_watch: asyncio.Task[None] | None = None
        self.exchanges: weakref.WeakKeyDictionary[http.HTTPFlow, Exchange] = (
            weakref.WeakKeyDictionary()
        )
        self.ssl_context: ssl.SSLContext | None = None
        self.is_running = False

    def load(self, loader: Any) -> None:
        declare_options(loader)

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
        if not updated & OPTION_NAMES:
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
        names = tuple(p.name for p in settings.config.providers)
        self.breakers = breakers_for(names, settings.config.failover, self.breakers)
        self.transport.configure(settings.config.retries, settings.config.failover, self.breakers)
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

    async def done(self) -> None:
        self.stop_discovery()
        if self.config_watch:
            self.config_watch.cancel()
            self.config_watch = None
        self.is_running = False
        await self.relay.stop()
        await self.transport.close()

    def start_discovery(self) -> None:
        self.discovery = Discovery(self.config.providers, self.fetch_models, self.on_discovered)
        self.discovery.start()

    def stop_discovery(self) -> None:
        if self.discovery:
            self.discovery.stop()
            self.discovery = None

    def fetch_models(self, provider: Provider) -> tuple[str, ...]:
        """Blocking (run in a thread): Oracle's /models, or the OCI control plane's listing."""
        if provider.discovery == "oci":
            options = ctx.options
            return fetch_oci_models(
                provider, options.ssl_verify_upstream_trusted_ca, not options.ssl_insecure
            )
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
        exchange = self.exchanges[flow] = Exchange(
            started=time.monotonic(), client_path=flow.request.path
        )
        headers = flow.request.headers
        authorization = headers.get("authorization")
        for name in CLIENT_CREDENTIAL_HEADERS:  # never forwarded; not for mitmweb or flow files
            if name in headers:
                headers[name] = REDACTED
        try:
            exchange.request = classify(flow.request.method, flow.request.path)
            if exchange.request.endpoint is not Endpoint.HEALTH:
                check_client_key(authorization, self.config.master_keys)
            check_declared_body(
                headers.get("content-length"),
                headers.get("content-encoding"),
                self.settings.max_body_size,
            )
        except GatewayError as e:
            self.refuse(flow, exchange, e)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or exchange.request is None or flow.response:
            return
        request, inventory = exchange.request, self.inventory
        try:
            if request.endpoint not in UPSTREAM_ENDPOINTS:
                self.answer_locally(flow, exchange, request)
                return
            content = flow.request.raw_content or b""
            check_body_size(len(content), self.settings.max_body_size)
            planned = route(inventory, request, content, self.settings.stream_usage)
        except GatewayError as e:
            self.refuse(flow, exchange, e)
            return
        exchange.route = planned
        client_headers = list(flow.request.headers.items(multi=True))
        flow.metadata["gomodel"] = {
            "requested_model": planned.requested_model,
            "upstream_model": planned.target.upstream_model,
            "candidates": [t.provider.name for t in planned.candidates],
            "endpoint": planned.endpoint.value,
            "stream": planned.stream,
        }
        if planned.stream:
            await self.relay.start()
            exchange.job = StreamJob(planned, client_headers, self.transport)
            flow.request.scheme, flow.request.host = "http", "127.0.0.1"
            flow.request.port = self.relay.port
            flow.request.path = self.relay.register(exchange.job)
            return
        try:
            reply = exchange.reply = await self.transport.send(planned, client_headers)
        except GatewayError as e:
            self.refuse(flow, exchange, e)
            return
        headers = http.Headers(
            [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        )
        flow.response = http.Response.make(reply.status, reply.body, headers)
        exchange.first_byte = time.monotonic()
        if 200 <= reply.status < 300:
            document = parse_json(reply.body)
            exchange.tokens = usage_tokens(document.get("usage") if document else None)
            if starved(document):
                flow.response.headers["x-gomodel-warning"] = STARVED_WARNING
                exchange.starved = True
        self.finish(flow, exchange)

    def answer_locally(self, flow: http.HTTPFlow, exchange: Exchange, request: Request) -> None:
        if request.endpoint is Endpoint.METRICS:
            self.metrics.set_state(
                {name: len(models) for name, models in self.inventory.models.items()},
                self.breaker_states(),
            )
            headers = {"content-type": self.metrics.content_type}
            flow.response = http.Response.make(200, self.metrics.exposition(), headers)
        else:
            body = local.answer(self.inventory, request, self.hosts, self.breaker_states())
            flow.response = http.Response.make(200, body, JSON_HEADERS)
        self.finish(flow, exchange)

    def refuse(self, flow: http.HTTPFlow, exchange: Exchange, error: GatewayError) -> None:
        flow.response = http.Response.make(error.status, error.body(), error.response_headers())
        exchange.error = error.code
        self.finish(flow, exchange)

    # -- responses -----------------------------------------------------------------------------

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or exchange.job is None or flow.response is None:
            return
        exchange.first_byte = time.monotonic()
        content_type = flow.response.headers.get("content-type", "")
        if 200 <= flow.response.status_code < 300 and content_type.startswith("text/event-stream"):
            summary = exchange.stream = StreamSummary()
            flow.response.stream = self.stream_through(flow, exchange, summary)

    def stream_through(
        self, flow: http.HTTPFlow, exchange: Exchange, summary: StreamSummary
    ) -> Callable[[bytes], bytes]:
        hide_usage = UsageChunkFilter() if exchange.route and exchange.route.usage_added else None

        def forward(chunk: bytes) -> bytes:
            try:
                if chunk:
                    summary.feed(chunk)
                else:  # mitmproxy's end-of-stream call
                    self.finish(flow, exchange)
            except Exception:
                logger.exception("gomodel: failed to inspect a stream chunk")
            return hide_usage.feed(chunk) if hide_usage else chunk

        return forward

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or exchange.job is None or flow.response is None:
            return
        if not flow.response.stream:  # a streamed call that Oracle answered with an error
            self.finish(flow, exchange)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow)
        if exchange is None or exchange.route is None or exchange.finished:
            return
        exchange.error = "client_gone" if flow.error else "ended_early"
        self.finish(flow, exchange, f"ended early: {flow.error.msg if flow.error else '-'}")

    def breaker_states(self) -> dict[str, dict[str, object]]:
        now = time.monotonic()
        return {name: breaker.snapshot(now) for name, breaker in self.breakers.items()}

    def finish(self, flow: http.HTTPFlow, exchange: Exchange, *notes: str) -> None:
        """Once per gateway request: the access log line, the metrics, mitmweb's comment."""
        if exchange.finished:
            return
        exchange.finished = True
        now = time.monotonic()
        status = flow.response.status_code if flow.response else 0
        record = AccessRecord(
            method=flow.request.method,
            path=exchange.client_path,
            status=status,
            seconds=now - exchange.started,
            endpoint=exchange.request.endpoint.value if exchange.request else "",
            error=exchange.error,
            notes=list(notes),
            first_byte_seconds=(
                exchange.first_byte - exchange.started if exchange.first_byte else None
            ),
        )
        if exchange.route is None:  # answered or refused by the gateway itself
            self.metrics.record_local(record.endpoint or "unknown", status, exchange.error)
            self.write_access(flow, exchange, record)
            return
        if exchange.stream:
            exchange.tokens = exchange.stream.tokens()
            exchange.starved = exchange.stream.starved
        reply = exchange.final_reply
        target = reply.target if reply else exchange.route.target
        attempts = reply.attempts if reply else []
        record.provider, record.model = target.provider.name, target.upstream_model
        record.stream = exchange.route.stream
        record.tokens_in, record.tokens_out = exchange.tokens
        record.request_id = reply.request_id if reply else None
        record.attempts = [f"{a.provider} {a.outcome}" for a in attempts]
        if changes := exchange.route.adjustments.get(target.provider.name):
            record.notes.append("adjusted: " + ", ".join(changes))
        if exchange.stream and exchange.stream.error:
            record.notes.append(f"stream carried an error: {exchange.stream.error}")
        broken = bool(exchange.job and exchange.job.broken)
        if broken:
            record.notes.append(f"stream broken: {exchange.job.broken}")
        if exchange.starved:
            record.notes.append("starved: " + STARVED_WARNING)
        flow.metadata["gomodel"]["provider"] = target.provider.name
        self.metrics.record_call(
            target.provider.name,
            target.upstream_model,
            exchange.route.endpoint.value,
            status,
            exchange.route.stream,
            record.seconds,
            record.first_byte_seconds,
            exchange.tokens,
            attempts,
            broken,
        )
        if self.settings.log_bodies:
            record.request_body = clip(exchange.route.body)
            if reply and not reply.stream:
                record.response_body = clip(reply.body)
        self.write_access(flow, exchange, record, warning=broken or exchange.starved)

    def write_access(
        self, flow: http.HTTPFlow, exchange: Exchange, record: AccessRecord, warning: bool = False
    ) -> None:
        flow.comment = record.summary()
        if record.status >= 400 or record.error or warning:
            flow.marked = ":red_circle:" if record.status >= 400 or record.error else ":warning:"
        self.settings.access_log.write(record, warning)


def parse_json(body: bytes) -> dict[str, Any] | None:
    try:
        document = safejson.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None
