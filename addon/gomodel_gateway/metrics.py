"""Prometheus metrics (prometheus-client), served at GET /metrics on the gateway hostnames.

Labels are bounded: providers, models and client key names come from the configuration and
discovery, never from what a client sent (a rejected request is counted by its error code only).
"""

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

from .accesslog import AccessRecord
from .attempts import Attempt

disable_created_metrics()  # *_created series only repeat the start time
KEY_REFUSALS = frozenset({"model_not_allowed", "rate_limit_exceeded", "insufficient_quota"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


Metric = Counter | Gauge | Histogram


@dataclass(frozen=True)
class Declared:
    """One metric of the gateway: the Metrics attribute that holds it, and how it is made."""

    attribute: str
    kind: type[Counter] | type[Gauge] | type[Histogram]
    name: str
    help: str
    labels: tuple[str, ...] = ()


DECLARED = (
    Declared(
        "requests",
        Counter,
        "gomodel_requests",
        "Gateway requests answered, by provider ('gateway' for those answered locally or "
        "refused), model, endpoint and status.",
        ("provider", "model", "endpoint", "status"),
    ),
    Declared(
        "idle_closed",
        Counter,
        "gomodel_idle_connections_closed",
        "Client connections closed for carrying no call for gomodel_idle_timeout.",
    ),
    Declared(
        "rejected",
        Counter,
        "gomodel_rejected_requests",
        "Requests the gateway refused, by error code.",
        ("code", "status"),
    ),
    Declared(
        "latency",
        Histogram,
        "gomodel_request_duration_seconds",
        "Time from request to the end of the response.",
        ("provider", "endpoint", "stream"),
    ),
    Declared(
        "first_byte",
        Histogram,
        "gomodel_time_to_first_byte_seconds",
        "Time from request to the response (a stream's first chunk) leaving for the client.",
        ("provider", "endpoint", "stream"),
    ),
    Declared(
        "tokens",
        Counter,
        "gomodel_tokens",
        "Tokens Oracle reported, by direction (input or output).",
        ("provider", "model", "direction"),
    ),
    Declared(
        "upstream_errors",
        Counter,
        "gomodel_upstream_errors",
        "Failed attempts at Oracle: a status, or a connection failure, timeout or dropped "
        "connection.",
        ("provider", "kind"),
    ),
    Declared(
        "retries",
        Counter,
        "gomodel_retries",
        "Attempts repeated at the same provider.",
        ("provider",),
    ),
    Declared(
        "failovers",
        Counter,
        "gomodel_failovers",
        "Calls moved from one provider to another.",
        ("from_provider", "to_provider"),
    ),
    Declared(
        "aliased",
        Counter,
        "gomodel_alias_requests",
        "Calls that named a model through an alias, by alias (as configured: an exact name or a "
        "glob) and the model Oracle was asked for.",
        ("alias", "model"),
    ),
    Declared(
        "broken_streams",
        Counter,
        "gomodel_broken_streams",
        "Streams Oracle ended early.",
        ("provider",),
    ),
    Declared(
        "key_requests",
        Counter,
        "gomodel_key_requests",
        "Calls by client key name (master keys: 'master'; no keys configured: 'anonymous') and "
        "status, refused ones included.",
        ("key", "status"),
    ),
    Declared(
        "key_tokens",
        Counter,
        "gomodel_key_tokens",
        "Tokens Oracle reported, by client key name and direction (input or output).",
        ("key", "direction"),
    ),
    Declared(
        "key_refusals",
        Counter,
        "gomodel_key_refusals",
        "Calls refused for a client key: model_not_allowed, rate_limit_exceeded, "
        "insufficient_quota.",
        ("key", "code"),
    ),
    Declared(
        "limit_store_errors",
        Counter,
        "gomodel_limit_store_errors",
        "Failed round trips to Redis (gomodel_redis_url); limits were then enforced by this "
        "gateway alone.",
    ),
    Declared(
        "limits_shared",
        Gauge,
        "gomodel_limits_shared",
        "1 while client key limits are shared through Redis, 0 while this gateway enforces them "
        "alone because Redis cannot be reached (absent without gomodel_redis_url).",
        ("store",),
    ),
    Declared(
        "ledger_rows",
        Gauge,
        "gomodel_ledger_rows",
        "Usage ledger rows (and stored resources' owners) since start, by outcome: written, "
        "dropped (queue full, refused by the database, left at close), pending; failed_writes "
        "counts batch attempts that failed and are retried.",
        ("outcome",),
    ),
    Declared(
        "models",
        Gauge,
        "gomodel_models",
        "Models in the inventory, per provider.",
        ("provider",),
    ),
    Declared(
        "circuit_open",
        Gauge,
        "gomodel_circuit_open",
        "1 while a provider's circuit breaker is open.",
        ("provider",),
    ),
)


def make(declared: Declared, registry: CollectorRegistry) -> Metric:
    options = {"buckets": LATENCY_BUCKETS} if declared.kind is Histogram else {}
    return declared.kind(
        declared.name, declared.help, declared.labels, registry=registry, **options
    )


class Metrics:
    """The gateway's metrics (see DECLARED), each an attribute of the name declared."""

    content_type = CONTENT_TYPE_LATEST
    requests: Counter
    idle_closed: Counter
    rejected: Counter
    latency: Histogram
    first_byte: Histogram
    tokens: Counter
    upstream_errors: Counter
    retries: Counter
    failovers: Counter
    aliased: Counter
    broken_streams: Counter
    key_requests: Counter
    key_tokens: Counter
    key_refusals: Counter
    limit_store_errors: Counter
    limits_shared: Gauge
    ledger_rows: Gauge
    models: Gauge
    circuit_open: Gauge

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for declared in DECLARED:
            setattr(self, declared.attribute, make(declared, self.registry))
        # The children record() counts into, by metric and label values: labels() takes 1-2 µs
        # each (it checks, joins and locks), about ten per call. Bounded as the labels are;
        # never a gauge's (set_state clears those).
        self.children: dict[tuple[Counter | Histogram, tuple[str, ...]], Any] = {}

    def child(self, metric: Counter | Histogram, *values: str) -> Any:
        """metric.labels(*values), made once."""
        found = self.children.get((metric, values))
        if found is None:
            found = self.children[(metric, values)] = metric.labels(*values)
        return found

    def record(
        self, entry: AccessRecord, attempts: Sequence[Attempt], counted: bool = True
    ) -> None:
        """One finished gateway request (see call.record); its tokens only when they are new use
        (`counted`: not a stored response read again)."""
        if not counted:
            entry = dataclasses.replace(entry, tokens_in=None, tokens_out=None)
        if entry.key and (entry.provider != "gateway" or entry.error in KEY_REFUSALS):
            self.child(self.key_requests, entry.key, str(entry.status)).inc()
            if entry.error in KEY_REFUSALS:
                self.child(self.key_refusals, entry.key, entry.error).inc()
            for direction, count in (("input", entry.tokens_in), ("output", entry.tokens_out)):
                if count:
                    self.child(self.key_tokens, entry.key, direction).inc(count)
        if entry.provider == "gateway":  # answered or refused by the gateway itself
            endpoint = entry.endpoint or "unknown"
            self.child(self.requests, "gateway", "", endpoint, str(entry.status)).inc()
            if entry.status >= 400:
                self.child(self.rejected, entry.error or "", str(entry.status)).inc()
            return
        provider, model, endpoint = entry.provider, entry.model, entry.endpoint
        stream = "true" if entry.stream else "false"
        self.child(self.requests, provider, model, endpoint, str(entry.status)).inc()
        if entry.alias:
            self.child(self.aliased, entry.alias, model).inc()
        self.child(self.latency, provider, endpoint, stream).observe(entry.seconds)
        if entry.first_byte_seconds is not None:
            self.child(self.first_byte, provider, endpoint, stream).observe(
                entry.first_byte_seconds
            )
        for direction, count in (("input", entry.tokens_in), ("output", entry.tokens_out)):
            if count:
                self.child(self.tokens, provider, model, direction).inc(count)
        previous: Attempt | None = None
        for attempt in attempts:
            if attempt.failed:
                self.child(self.upstream_errors, attempt.provider, attempt.label).inc()
            if previous is not None:
                if previous.provider == attempt.provider:
                    self.child(self.retries, attempt.provider).inc()
                else:
                    self.child(self.failovers, previous.provider, attempt.provider).inc()
            previous = attempt
        if entry.broken:
            self.child(self.broken_streams, provider).inc()

    def limit_store_failed(self) -> None:
        self.limit_store_errors.inc()

    def set_state(
        self,
        models: Mapping[str, int],
        circuits: Mapping[str, Mapping[str, object]],
        limits_shared: bool | None = None,
        ledger_rows: Mapping[str, int] | None = None,
    ) -> None:
        """The gauges, read when /metrics is asked for."""
        self.ledger_rows.clear()
        for outcome, count in (ledger_rows or {}).items():
            self.ledger_rows.labels(outcome).set(count)
        self.limits_shared.clear()
        if limits_shared is not None:
            self.limits_shared.labels("redis").set(1 if limits_shared else 0)
        self.models.clear()
        self.circuit_open.clear()
        for provider, count in models.items():
            self.models.labels(provider).set(count)
            state = circuits.get(provider, {}).get("state")
            self.circuit_open.labels(provider).set(1 if state == "open" else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
