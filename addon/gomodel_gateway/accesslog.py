"""The access log: one line per gateway request, as text or JSON, in mitmproxy's log or a file.

Never a key. Prompts and completions only when `gomodel_log_bodies` asks for them. Lines about
strangers (requests refused before any key was presented) are at most
STRANGER_LINES_PER_SECOND on average: one connection pipelining refused requests would
otherwise write a line each, as fast as it sends them; the next line let through says how many
were dropped.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

logger = logging.getLogger("gomodel")

LogFormat = Literal["text", "json"]
MAX_LOGGED_BODY = 4000
STRANGER_LINES_PER_SECOND = 20.0
STRANGER_LINE_BURST = 100


@dataclass
class AccessRecord:
    method: str
    path: str
    status: int
    seconds: float
    provider: str = "gateway"  # the provider that answered; "gateway" when answered locally
    model: str = ""  # the model id Oracle was asked for
    requested_model: str = ""  # the model the client named
    alias: str = ""  # the alias it went through (an exact name or a glob), if any
    endpoint: str = ""
    key: str = ""  # the client key's name (never the key)
    stream: bool = False
    tokens_in: int | None = None
    tokens_out: int | None = None
    first_byte_seconds: float | None = None
    request_id: str | None = None  # Oracle's opc-request-id
    error: str | None = None  # the error code of a refused or failed request
    attempts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    request_body: str | None = None
    response_body: str | None = None
    url: str = ""  # the whole URL the client asked for, for mitmweb
    broken: bool = False  # a stream Oracle ended early
    warning: bool = False  # worth a warning: broken, or starved by its output budget

    def summary(self) -> str:
        """The short form: the access log line's start."""
        if self.provider == "gateway":
            return f"gomodel {self.endpoint or 'request'} {self.status}" + (
                f" {self.error}" if self.error else ""
            )
        return (
            f"gomodel {self.provider} {self.model} {self.status} in={_count(self.tokens_in)} "
            f"out={_count(self.tokens_out)} {self.seconds:.2f}s"
        )

    def comment(self) -> str:
        """mitmweb's comment column: the summary, what the client asked, and how it went."""
        parts = [self.summary()]
        if self.provider != "gateway":
            parts.append(
                f"client: {self.method} {self.url or self.path} model={self.requested_model}"
            )
            if len(self.attempts) > 1:
                parts.append("attempts: " + ", ".join(self.attempts))
            parts += self.notes
        return " | ".join(parts)

    def text(self) -> str:
        parts = [self.summary(), f"{self.method} {self.path}"]
        if self.requested_model and self.requested_model != self.model:
            parts.append(f"requested={self.requested_model}")
        if self.stream:
            parts.append("stream")
        if self.first_byte_seconds is not None:
            parts.append(f"first-byte={self.first_byte_seconds:.3f}s")
        parts.append(f"opc-request-id={self.request_id or '-'}")
        if len(self.attempts) > 1:
            parts.append("attempts: " + ", ".join(self.attempts))
        parts += self.notes
        if self.request_body is not None:
            parts.append(f"request={self.request_body!r}")
        if self.response_body is not None:
            parts.append(f"response={self.response_body!r}")
        return " ".join(parts)

    def json(self) -> str:
        # A shallow copy: asdict copies every list and field deeply, 16 µs for a line dumped once.
        record = {"time": round(time.time(), 3), **vars(self)}
        record["seconds"] = round(self.seconds, 4)
        if self.first_byte_seconds is not None:
            record["first_byte_seconds"] = round(self.first_byte_seconds, 4)
        return json.dumps({k: v for k, v in record.items() if v not in (None, [], "")})


def printable(line: str) -> str:
    """A text line with what a terminal would obey (escape sequences, a bell, bidi overrides,
    line breaks) escaped: a client's path is on it, read by an operator's terminal."""
    if line.isprintable():
        return line
    return "".join(char if char.isprintable() else f"\\u{ord(char):04x}" for char in line)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def clip(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    return text if len(text) <= MAX_LOGGED_BODY else text[:MAX_LOGGED_BODY] + "...[cut]"


class LineBudget:
    """A token bucket: `rate` lines a second on average, `burst` at once; clock injected."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.updated = float(burst), clock()
        self.dropped = 0

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            self.dropped += 1
            return False
        self.tokens -= 1
        return True


class AccessLog:
    def __init__(
        self,
        log_format: LogFormat = "text",
        path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.format = log_format
        self.path = path
        self.lock = threading.Lock()
        self.strangers = LineBudget(STRANGER_LINES_PER_SECOND, STRANGER_LINE_BURST, clock)

    def write(self, record: AccessRecord) -> None:
        if not record.key and not self.strangers.take():  # no key: a stranger's request
            return
        line = record.json() if self.format == "json" else printable(record.text())
        if not record.key and (dropped := self.strangers.dropped):
            self.strangers.dropped = 0
            if self.format == "json":
                line = json.dumps({**json.loads(line), "strangers_dropped_before": dropped})
            else:
                line = f"{line} ({dropped} lines about strangers dropped before this one)"
        if self.path is None:
            log_line(line, logging.WARNING if record.warning else logging.INFO)
            return
        with self.lock, self.path.open("a", encoding="utf-8") as sink:
            sink.write(line + "\n")


def log_line(line: str, level: int) -> None:
    """logger.log(level, line) without looking for the caller's file and line, which no
    handler of mitmproxy's shows (logging walks the stack for them: 2-3 µs a line, one line a
    call)."""
    if logger.isEnabledFor(level):
        logger.handle(logger.makeRecord(logger.name, level, "(unknown file)", 0, line, (), None))


def parse_format(value: str) -> LogFormat:
    if value not in ("text", "json"):
        raise ValueError(f"gomodel_access_log_format: {value!r} is not text or json")
    return value  # type: ignore[return-value]
