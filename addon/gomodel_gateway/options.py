"""The gateway's mitmproxy options, and the settings read from them and the config file.

Every option is declared once, in `OPTIONS` (name, default, help, parser, the `Settings` field it
fills): `load()` declares them from it, `configure()` validates them through it, and `Settings`
is built from it by keyword. Every option is a string parsed here: mitmproxy silently unloads a
script when a `--set` value does not parse for an option's declared type, and a misspelled or
malformed value must stop the gateway with a message instead.

The Redis and PostgreSQL URLs may hold a password, which an option shows to anyone who sees
mitmweb's /options or the process's command line (`ps`): they may come from the environment
instead (`GOMODEL_REDIS_URL`, `GOMODEL_USAGE_DB`), used when the option is left at its
default, and the gateway warns at start-up about a password in an option.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .accesslog import AccessLog, LogFormat, parse_format
from .config import load_config
from .config_values import ConfigError
from .exposure import Passthrough, parse_origins, parse_passthrough
from .hosts import parse_hosts
from .idle import parse_idle_timeout
from .ledger_location import DEFAULT_USAGE_DB, LedgerLocation, parse_target, postgres_passwords
from .limiter import check_redis_url
from .providers import GatewayConfig
from .sizes import parse_size
from .watch import Stamp, file_stamp

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    required: bool  # named by the operator: it must exist


def parse_config_file(value: str) -> ConfigFile:
    if not value:
        return ConfigFile(DEFAULT_CONFIG, required=False)
    return ConfigFile(Path(value).expanduser(), required=True)


def parse_body_size(value: str) -> int:
    return parse_size(value, allow_zero=False)


def parse_kept_size(value: str) -> int:
    return parse_size(value, allow_zero=True)


def parse_log_file(value: str) -> Path | None:
    return Path(value).expanduser() if value else None


def parse_flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0", ""):
        return False
    raise ValueError(f"{value!r} is not true or false")


def parse_listing(value: str) -> bool:
    """gomodel_list_models: True when /v1/models lists the aliases alone."""
    if value.strip() not in ("all", "aliases"):
        raise ValueError(f"{value!r} is not all or aliases")
    return value.strip() == "aliases"


def parse_usage_db(value: str) -> LedgerLocation | None:
    if value.strip().lower() in ("off", "false", "none", ""):
        return None
    return parse_target(value)


def parse_redis_url(value: str) -> str | None:
    return check_redis_url(value.strip()) if value.strip() else None


@dataclass(frozen=True)
class Option:
    name: str
    default: str
    help: str
    parse: Callable[[str], Any]  # raises ValueError saying what is wrong with the value
    field: str  # the Settings field it fills
    environment: str | None = None  # read instead while the option is at its default


OPTIONS: tuple[Option, ...] = (
    Option(
        "gomodel_config",
        "",
        "Path of the gateway's YAML configuration (providers: blocks of type oracle). Empty: "
        "config.yaml at the repository root, which may be absent; a path given here must "
        "exist. ORACLE_* environment variables override it. Edits are picked up while "
        "running; a broken edit is logged and the previous configuration keeps serving.",
        parse_config_file,
        "config_file",
    ),
    Option(
        "gomodel_hosts",
        "gomodel.local",
        "Comma-separated hostnames the gateway answers for (e.g. "
        "gomodel.local,api.openai.com). Requests sent straight to the proxy port are always "
        "answered. Other traffic passes through only as gomodel_passthrough allows.",
        parse_hosts,
        "hosts",
    ),
    Option(
        "gomodel_passthrough",
        "auto",
        "Whether requests that are not for the gateway (other hosts, CONNECT tunnels "
        "elsewhere) are forwarded: auto forwards them only while mitmproxy listens on "
        "loopback alone and no gateway key (master or client) is configured; true always (an "
        "open proxy for whoever can reach the port); false never. Refused requests get 403 "
        "and nothing is forwarded.",
        parse_passthrough,
        "passthrough",
    ),
    Option(
        "gomodel_allowed_origins",
        "",
        "Comma-separated web origins (e.g. https://app.example.com,http://localhost:3000) "
        "whose pages may call the gateway from a browser, or * for any. Requests carrying any "
        "other Origin header get 403; CORS preflights are answered for listed origins only.",
        parse_origins,
        "allowed_origins",
    ),
    Option(
        "gomodel_list_models",
        "all",
        "What GET /v1/models lists: all (every served model and exact alias) or aliases (the "
        "exact aliases alone; the other models stay callable).",
        parse_listing,
        "list_aliases_only",
    ),
    Option(
        "gomodel_max_body_size",
        "10MiB",
        "Largest request body the gateway accepts (e.g. 10MiB, 512KiB, 1048576); larger ones "
        "get 413.",
        parse_body_size,
        "max_body_size",
    ),
    Option(
        "gomodel_stream_body_size",
        "1MiB",
        "How much of each streamed answer the flow keeps for mitmweb and -w flow files (e.g. "
        "1MiB, 0 for none); a longer stream is cut there, with a note. The client always gets "
        "all of it.",
        parse_kept_size,
        "stream_body_size",
    ),
    Option(
        "gomodel_access_log_format",
        "text",
        "Access log lines (one per gateway request) as text or json.",
        parse_format,
        "access_log_format",
    ),
    Option(
        "gomodel_access_log_file",
        "",
        "Append the access log to this file. Empty: write it to mitmproxy's own log.",
        parse_log_file,
        "access_log_file",
    ),
    Option(
        "gomodel_log_bodies",
        "false",
        "Debugging only: true puts request bodies (prompts) and plain responses in the access "
        "log. Keys are never logged.",
        parse_flag,
        "log_bodies",
    ),
    Option(
        "gomodel_usage_db",
        DEFAULT_USAGE_DB,
        "Where the usage ledger (one row per call: time, key name, provider, models, "
        "endpoint, status, tokens, latency, opc-request-id) is kept: a SQLite file (created, "
        "WAL mode), a postgresql://user:password@host/db URL several gateways can share, or "
        "off. Rows are written in batches off the request path; scripts/usage reports them. "
        "Left at its default, the environment variable GOMODEL_USAGE_DB is used if set (a "
        "password there is not shown by mitmweb or ps).",
        parse_usage_db,
        "usage_db",
        environment="GOMODEL_USAGE_DB",
    ),
    Option(
        "gomodel_redis_url",
        "",
        "redis://[user:password@]host:port/db (or rediss://, unix://) to keep the client "
        "keys' rate-limit and budget counters in Redis, shared by every gateway using it. "
        "Empty: each gateway counts alone. When Redis cannot be reached, the gateway logs it "
        "and enforces the limits alone until Redis answers again. Left empty, the environment "
        "variable GOMODEL_REDIS_URL is used if set (a password there is not shown by mitmweb "
        "or ps).",
        parse_redis_url,
        "redis_url",
        environment="GOMODEL_REDIS_URL",
    ),
    Option(
        "gomodel_idle_timeout",
        "60",
        "Seconds a client connection may carry no call (from its start, or since its last "
        "call) before the gateway closes it, while pass-through is closed. Calls in progress "
        "are never cut; what a stranger sends does not count; a connection that carried a "
        "call made with a gateway key is its client's to keep. off: never.",
        parse_idle_timeout,
        "idle_timeout",
    ),
    Option(
        "gomodel_stream_usage",
        "false",
        "true: ask Oracle for the usage of every chat stream (stream_options.include_usage), "
        "so tokens are counted, and drop that extra chunk from streams whose client did not "
        "ask for it. Off by default: Oracle has refused stream_options for some models.",
        parse_flag,
        "stream_usage",
    ),
)
OPTION_NAMES = frozenset(option.name for option in OPTIONS)


def declare_options(loader: Any) -> None:
    for option in OPTIONS:
        loader.add_option(option.name, str, option.default, option.help)


@dataclass(frozen=True)
class Settings:
    """Everything the gomodel_* options and the configuration file decide."""

    config_file: ConfigFile
    hosts: tuple[str, ...]
    passthrough: Passthrough
    allowed_origins: frozenset[str]
    list_aliases_only: bool
    max_body_size: int
    stream_body_size: int  # of a streamed answer, kept for mitmweb and flow files
    access_log: AccessLog
    log_bodies: bool
    usage_db: LedgerLocation | None
    redis_url: str | None
    idle_timeout: float | None
    stream_usage: bool
    config: GatewayConfig = field(default_factory=lambda: GatewayConfig(()))
    # The config file's stamp from just before it was read: the watch starts from it, so an
    # edit made between reading and watching is not missed.
    config_stamp: Stamp = None

    @property
    def config_path(self) -> Path:
        return self.config_file.path


def parse_options(values: Mapping[str, str]) -> dict[str, Any]:
    """Each option's value parsed into its Settings field; ConfigError naming the option."""
    fields = {}
    for option in OPTIONS:
        try:
            fields[option.field] = option.parse(values[option.name])
        except ValueError as e:
            detail = str(e).removeprefix(f"{option.name}: ")  # some parsers name it already
            raise ConfigError(f"option {option.name}: {detail}") from e
    log_format: LogFormat = fields.pop("access_log_format")
    fields["access_log"] = AccessLog(log_format, fields.pop("access_log_file"))
    return fields


def default_settings() -> Settings:
    """The settings before the first configure: every option at its default, no config file."""
    return Settings(**parse_options({option.name: option.default for option in OPTIONS}))


def read_settings(options: Any, reload: bool = False) -> Settings:
    """Read mitmproxy's `options`, the environment and the configuration file; ConfigError if
    invalid. `reload`: the file changed while serving, and must be there with content (see
    config_reload.py)."""
    values = {option.name: option_value(option, options, os.environ) for option in OPTIONS}
    fields = parse_options(values)
    config_file: ConfigFile = fields["config_file"]
    stamp = file_stamp(config_file.path)
    config = load_config(config_file.path, os.environ, required=config_file.required, reload=reload)
    return Settings(**fields, config=config, config_stamp=stamp)


def option_value(option: Option, options: Any, environ: Mapping[str, str]) -> str:
    """The option's value, or its environment variable's while the option is at its default."""
    value = getattr(options, option.name)
    if option.environment is None or value != option.default:
        return value
    return environ.get(option.environment, "").strip() or value


def holds_password(url: str) -> bool:
    """A URL with a password in it (its user part, or a PostgreSQL password= parameter)."""
    try:
        if urlsplit(url.strip()).password:
            return True
    except ValueError:
        return False
    return bool(postgres_passwords(url.strip()))


def options_showing_passwords(options: Any) -> list[Option]:
    """The options whose value (shown by mitmweb's /options and on the command line) holds a
    password."""
    return [
        option
        for option in OPTIONS
        if option.environment and holds_password(getattr(options, option.name))
    ]
