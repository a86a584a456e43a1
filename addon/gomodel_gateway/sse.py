"""Server-sent events, parsed incrementally as chunks pass through, without holding them back.

`SSEParser` turns arbitrary byte chunks into events; `StreamSummary` watches chat and responses
streams for what the access log reports (events seen, the [DONE] marker, the final usage).
"""

import json
from dataclasses import dataclass, field
from typing import Any

from . import safejson
from .errors import ErrorCode

DONE = "[DONE]"
# Responses API events carrying the answer's visible output, as text or as a tool call.
OUTPUT_DELTAS = ("response.output_text.delta", "response.function_call_arguments.delta")
# The Responses API's last event (its streams send no [DONE]).
FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
# Once text was seen, an event can change a StreamSummary only by naming one of these keys, or
# the finish reason or status that cut_short looks for. JSON spells them as they are unless it
# escapes them (\u), so an event holding none of these needs no parsing.
MATTERS_AFTER_TEXT = ('"usage"', '"error"', '"sequence_number"', '"length"', '"incomplete"', "\\u")


@dataclass(frozen=True)
class Event:
    data: str
    event: str | None = None


@dataclass
class SSEParser:
    """An incremental parser for the text/event-stream format (WHATWG HTML, 9.2.6)."""

    _buffer: bytes = b""
    _data: list[str] = field(default_factory=list)
    _event: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[Event] = []
        start = 0
        while True:
            if not self._data and self._event is None and (fast := _data_block(buffer, start)):
                data, start = fast
                events.append(Event(data))
                continue
            end = _line_end(buffer, start)
            if end is None:
                self._buffer = buffer[start:]
                return events
            line_end, next_start = end
            line = buffer[start:line_end].decode("utf-8", "replace")
            start = next_start
            if event := self._line(line):
                events.append(event)

    def _line(self, line: str) -> Event | None:
        if not line:
            if not self._data and self._event is None:
                return None
            event = Event("\n".join(self._data), self._event)
            self._data, self._event = [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


def _data_block(buffer: bytes, start: int) -> tuple[str, int] | None:
    """The commonest event, a single `data:` line ended by LF LF, as (its data, where the next
    starts): what the line-by-line parse makes of it, in a few byte searches."""
    if not buffer.startswith(b"data:", start):
        return None
    lf = buffer.find(b"\n", start)
    if lf == -1 or buffer[lf + 1 : lf + 2] != b"\n" or buffer.find(b"\r", start, lf) != -1:
        return None
    return buffer[start + 5 : lf].decode("utf-8", "replace").removeprefix(" "), lf + 2


def _line_end(buffer: bytes, start: int = 0) -> tuple[int, int] | None:
    """Where the line from `start` ends and the next starts; CRLF, LF and CR all end lines."""
    lf, cr = buffer.find(b"\n", start), buffer.find(b"\r", start)
    if cr == -1 and lf == -1:
        return None
    if cr == -1 or (lf != -1 and lf < cr):
        return lf, lf + 1
    if cr + 1 == len(buffer):
        return None  # a lone CR at the end may be the first half of CRLF
    return cr, cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1


@dataclass
class StreamSummary:
    """What a chat or responses stream carried, for the log line at its end."""

    events: int = 0
    done: bool = False  # the last event passed: chat's [DONE], or a FINAL_EVENTS event
    usage: dict[str, Any] | None = None
    error: str | None = None
    text_seen: bool = False  # visible output: text, or a tool call's arguments
    cut_short: bool = False  # the output budget ran out (finish_reason "length", incomplete)
    last_sequence_number: int | None = None  # of the Responses API's events
    response_id: str | None = None  # the Responses API's response, once an event named it
    parser: SSEParser = field(default_factory=SSEParser)

    @property
    def next_sequence_number(self) -> int:
        """What an event the gateway adds to a Responses stream is numbered."""
        return 0 if self.last_sequence_number is None else self.last_sequence_number + 1

    @property
    def starved(self) -> bool:
        """Cut off by its output budget before any visible text or tool call."""
        return self.cut_short and not self.text_seen

    def feed(self, chunk: bytes) -> None:
        for event in self.parser.feed(chunk):
            self.events += 1
            if event.data == DONE:
                self.done = True
                continue
            if self.text_seen and not any(m in event.data for m in MATTERS_AFTER_TEXT):
                continue  # most of a chat stream: parsing it (3 µs) could change nothing
            try:
                payload = safejson.loads(event.data)
            except ValueError:
                continue
            if isinstance(payload, dict):
                self._inspect(payload)

    def _inspect(self, payload: dict[str, Any]) -> None:
        for choice in payload.get("choices") or []:
            if isinstance(choice, dict):
                delta = choice.get("delta")
                if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")):
                    self.text_seen = True
                if choice.get("finish_reason") == "length":
                    self.cut_short = True
        kind = payload.get("type")
        if kind in OUTPUT_DELTAS and payload.get("delta"):
            self.text_seen = True
        elif kind in FINAL_EVENTS:
            self.done = True
        sequence = payload.get("sequence_number")
        if isinstance(sequence, int) and not isinstance(sequence, bool):
            self.last_sequence_number = sequence
        # chat: usage on the last chunk; responses: inside response.completed's "response".
        response = payload.get("response")
        if isinstance(response, dict) and response.get("status") == "incomplete":
            self.cut_short = True
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.response_id = self.response_id or response["id"]
        usage = payload.get("usage")
        if usage is None and isinstance(response, dict):
            usage = response.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            self.error = error["message"]

    def tokens(self) -> tuple[int | None, int | None]:
        return usage_tokens(self.usage)


def usage_tokens(usage: Any) -> tuple[int | None, int | None]:
    """(input, output) tokens from chat's (prompt/completion) or responses' (input/output) usage."""
    if not isinstance(usage, dict):
        return None, None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


def error_event(
    message: str, code: ErrorCode, *, responses_api: bool, sequence_number: int = 0
) -> bytes:
    """The event that ends a broken stream visibly: OpenAI's in-stream error shapes, which the
    openai SDK raises (chat) or yields as an `error` event (responses, numbered after the last
    event the client got)."""
    if responses_api:
        payload = {
            "type": "error",
            "code": code,
            "message": message,
            "param": None,
            "sequence_number": sequence_number,
        }
        return f"event: error\ndata: {json.dumps(payload)}\n\n".encode()
    error = {"message": message, "type": "api_error", "param": None, "code": code}
    return f"data: {json.dumps({'error': error})}\n\n".encode()


EVENT_END = (b"\r\n\r\n", b"\n\n", b"\r\r")


def _block_end(buffer: bytes) -> tuple[int, int] | None:
    """(end of the first complete event block, start of the next), if there is one."""
    found = [(buffer.find(mark), len(mark)) for mark in EVENT_END]
    hits = [(at, size) for at, size in found if at != -1]
    if not hits:
        return None
    at, size = min(hits)
    return at + size, at + size


@dataclass
class UsageChunkFilter:
    """Drops chat streams' usage-only chunk (empty `choices`, a `usage`), which the gateway asked
    Oracle for on the client's behalf; every other byte passes unchanged, an event as soon as it
    is complete."""

    _buffer: bytes = b""

    def feed(self, chunk: bytes) -> bytes:
        """What to pass on now; b"" at the end of the stream flushes the rest."""
        if not chunk:
            rest, self._buffer = self._buffer, b""
            return rest
        self._buffer += chunk
        out = []
        while end := _block_end(self._buffer):
            block, self._buffer = self._buffer[: end[0]], self._buffer[end[1] :]
            if not _is_usage_only(block):
                out.append(block)
        return b"".join(out)


def _is_usage_only(block: bytes) -> bool:
    events = SSEParser().feed(block + b"\n\n")
    if len(events) != 1:
        return False
    try:
        payload = safejson.loads(events[0].data)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("choices") == [] and "usage" in payload
