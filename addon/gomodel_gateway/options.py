"""The gateway's mitmproxy options, and the settings read from them and the config file.

Every option is a string parsed here: mitmproxy silently unloads a script when a `--set` value
does not parse for an option's declared type, and a misspelled or malformed value must stop the
gateway with a message instead.

The Redis and PostgreSQL URLs may hold a password, which an option shows to anyone who sees
mitmweb's /options or the process's command line (`ps`): they may come from the environment
instead (`GOMODEL_REDIS_URL`, `GOMODEL_USAGE_DB`), used when the option is left at its
default, and the gateway warns at start-up about a password in an option.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import ctx

from .accesslog import AccessLog, parse_bool, parse_format
from .config import ConfigError, GatewayConfig, load_config, parse_size
from .exposure import Passthrough, parse_origins, parse_passthrough
from .hosts import parse_hosts
from .idle import DEFAULT_IDLE_TIMEOUT, parse_idle_timeout
from .ledger_location import DEFAULT_USAGE_DB, LedgerLocation, parse_target, postgres_passwords
from .limiter import check_redis_url
from .watch import Stamp, file_stamp

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"
DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
# option: (the environment variable it may come from, the option's default)
FROM_ENVIRONMENT = {
    "gomodel_redis_url": ("GOMODEL_REDIS_URL", ""),
    "gomodel_usage_db": ("GOMODEL_USAGE_DB", DEFAULT_USAGE_DB),
}

# name, default, help
OPTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "gomodel_config",
        "",
        "Path of the gateway's YAML configuration (providers: blocks of type oracle). Empty: "
        "config.yaml at the repository root, which may be absent; a path given here must exist. "
        "ORACLE_* environment variables override it. Edits are picked up while running; a "
        "broken edit is logged and the previous configuration keeps serving.",
    ),
    (
        "gomodel_hosts",
        "gomodel.local",
        "Comma-separated hostnames the gateway answers for (e.g. gomodel.local,api.openai.com). "
        "Requests sent straight to the proxy port are always answered. Other traffic passes "
        "through only as gomodel_passthrough allows.",
    ),
    (
        "gomodel_passthrough",
        "auto",
        "Whether requests that are not for the gateway (other hosts, CONNECT tunnels elsewhere) "
        "are forwarded: auto forwards them only while mitmproxy listens on loopback alone and no "
        "gateway key (master or client) is configured; true always (an open proxy for whoever "
        "can reach the port); false never. Refused requests get 403 and nothing is forwarded.",
    ),
    (
        "gomodel_allowed_origins",
        "",
        "Comma-separated web origins (e.g. https://app.example.com,http://localhost:3000) whose "
        "pages may call the gateway from a browser, or * for any. Requests carrying any other "
        "Origin header get 403; CORS preflights are answered for listed origins only.",
    ),
    (
        "gomodel_list_models",
        "all",
        "What GET /v1/models lists: all (every served model and exact alias) or aliases (the "
        "exact aliases alone; the other models stay callable).",
    ),
    (
        "gomodel_max_body_size",
        "10MiB",
        "Largest request body the gateway accepts (e.g. 10MiB, 512KiB, 1048576); larger ones "
        "get 413.",
    ),
    (
        "gomodel_stream_body_size",
        "1MiB",
        "How much of each streamed answer the flow keeps for mitmweb and -w flow files (e.g. "
        "1MiB, 0 for none); a longer stream is cut there, with a note. The client always gets "
        "all of it.",
    ),
    (
        "gomodel_access_log_format",
        "text",
        "Access log lines (one per gateway request) as text or json.",
    ),
    (
        "gomodel_access_log_file",
        "",
        "Append the access log to this file. Empty: write it to mitmproxy's own log.",
    ),
    (
        "gomodel_log_bodies",
        "false",
        "Debugging only: true puts request bodies (prompts) and plain responses in the access "
        "log. Keys are never logged.",
    ),
    (
        "gomodel_usage_db",
        DEFAULT_USAGE_DB,
        "Where the usage ledger (one row per call: time, key name, provider, models, endpoint, "
        "status, tokens, latency, opc-request-id) is kept: a SQLite file (created, WAL mode), a "
        "postgresql://user:password@host/db URL several gateways can share, or off. Rows are "
        "written in batches off the request path; scripts/usage reports them. Left at its "
        "default, the environment variable GOMODEL_USAGE_DB is used if set (a password there "
        "is not shown by mitmweb or ps).",
    ),
    (
        "gomodel_redis_url",
        "",
        "redis://[user:password@]host:port/db (or rediss://, unix://) to keep the client keys' "
        "rate-limit and budget counters in Redis, shared by every gateway using it. Empty: each "
        "gateway counts alone. When Redis cannot be reached, the gateway logs it and enforces "
        "the limits alone until Redis answers again. Left empty, the environment variable "
        "GOMODEL_REDIS_URL is used if set (a password there is not shown by mitmweb or ps).",
    ),
    (
        "gomodel_idle_timeout",
        "60",
        "Seconds a client connection may carry no call (from its start, or since its last "
        "call) before the gateway closes it, while pass-through is closed. Calls in progress "
        "are never cut; what a stranger sends does not count; a connection that carried a call "
        "made with a gateway key is its client's to keep. off: never.",
    ),
    (
        "gomodel_stream_usage",
        "false",
        "true: ask Oracle for the usage of every chat stream (stream_options.include_usage), so "
        "tokens are counted, and drop that extra chunk from streams whose client did not ask "
        "for it. Off by default: Oracle has refused stream_options for some models.",
    ),
)
OPTION_NAMES = frozenset(name for name, _, _ in OPTIONS)


def declare_options(loader: Any) -> None:
    for name, default, help_text in OPTIONS:
        loader.add_option(name, str, default, help_text)


@dataclass(frozen=True)
class Settings:
    """Everything the gomodel_* options and the configuration file decide."""

    hosts: tuple[str, ...] = ()
    config: GatewayConfig = field(default_factory=lambda: GatewayConfig(()))
    config_path: Path = DEFAULT_CONFIG
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    access_log: AccessLog = field(default_factory=AccessLog)
    log_bodies: bool = False
    stream_usage: bool = False
    passthrough: Passthrough = Passthrough.AUTO
    allowed_origins: frozenset[str] = frozenset()
    stream_body_size: int = 1024 * 1024
    list_aliases_only: bool = False
    # The config file's stamp from just before it was read: the watch starts from it, so an
    # edit made between reading and watching is not missed.
    config_stamp: Stamp = None
    redis_url: str | None = None
    usage_db: LedgerLocation | None = None
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT


def read_settings(reload: bool = False) -> Settings:
    """Read the options, the environment and the configuration file; ConfigError if invalid.
    `reload`: the file changed while serving, and must be there with content (see config.py)."""
    try:
        hosts = parse_hosts(ctx.options.gomodel_hosts)
    except ValueError as e:
        raise ConfigError(f"option gomodel_hosts: {e}") from e
    sizes = {}
    for option, allow_zero in (
        ("gomodel_max_body_size", False),
        ("gomodel_stream_body_size", True),
    ):
        try:
            sizes[option] = parse_size(getattr(ctx.options, option), allow_zero)
        except ValueError as e:
            raise ConfigError(f"option {option}: {e}") from e
    try:
        log_format = parse_format(ctx.options.gomodel_access_log_format)
        log_bodies = parse_bool(ctx.options.gomodel_log_bodies, "gomodel_log_bodies")
        stream_usage = parse_bool(ctx.options.gomodel_stream_usage, "gomodel_stream_usage")
        passthrough = parse_passthrough(ctx.options.gomodel_passthrough)
        list_aliases_only = parse_listing(ctx.options.gomodel_list_models)
        allowed_origins = parse_origins(ctx.options.gomodel_allowed_origins)
        redis_url = parse_redis_url(option_or_environment("gomodel_redis_url", os.environ))
        usage_db = parse_usage_db(option_or_environment("gomodel_usage_db", os.environ))
        idle_timeout = parse_idle_timeout(ctx.options.gomodel_idle_timeout)
    except ValueError as e:
        raise ConfigError(f"option {e}") from e
    log_file = ctx.options.gomodel_access_log_file
    access_log = AccessLog(log_format, Path(log_file).expanduser() if log_file else None)
    explicit = bool(ctx.options.gomodel_config)
    path = Path(ctx.options.gomodel_config).expanduser() if explicit else DEFAULT_CONFIG
    stamp = file_stamp(path)
    config = load_config(path, os.environ, required=explicit, reload=reload)
    return Settings(
        hosts,
        config,
        path,
        sizes["gomodel_max_body_size"],
        access_log,
        log_bodies,
        stream_usage,
        passthrough,
        allowed_origins,
        sizes["gomodel_stream_body_size"],
        list_aliases_only,
        stamp,
        redis_url,
        usage_db,
        idle_timeout,
    )


def option_or_environment(option: str, environ: Mapping[str, str]) -> str:
    """The option's value, or its environment variable's while the option is at its default."""
    variable, default = FROM_ENVIRONMENT[option]
    value = getattr(ctx.options, option)
    from_environment = environ.get(variable, "").strip()
    return from_environment if from_environment and value == default else value


def holds_password(url: str) -> bool:
    """A URL with a password in it (its user part, or a PostgreSQL password= parameter)."""
    try:
        if urlsplit(url.strip()).password:
            return True
    except ValueError:
        return False
    return bool(postgres_passwords(url.strip()))


def options_showing_passwords() -> list[str]:
    """The options whose value (shown by mitmweb's /options and on the command line) holds a
    password."""
    return [option for option in FROM_ENVIRONMENT if holds_password(getattr(ctx.options, option))]


def parse_usage_db(value: str) -> LedgerLocation | None:
    if value.strip().lower() in ("off", "false", "none", ""):
        return None
    try:
        return parse_target(value)
    except ValueError as e:
        raise ValueError(f"gomodel_usage_db: {e}") from e


def parse_redis_url(value: str) -> str | None:
    if not value.strip():
        return None
    try:
        return check_redis_url(value.strip())
    except ValueError as e:
        raise ValueError(f"gomodel_redis_url: {e}") from e


def parse_listing(value: str) -> bool:
    """gomodel_list_models: True when /v1/models lists the aliases alone."""
    if value.strip() not in ("all", "aliases"):
        raise ValueError(f"gomodel_list_models: {value!r} is not all or aliases")
    return value.strip() == "aliases"
