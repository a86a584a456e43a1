"""Error shaping (OCI -> OpenAI) and incremental SSE parsing."""

import json

import pytest
from gomodel_gateway import safejson
from gomodel_gateway.errors import clip_for_message, error_body, from_oracle
from gomodel_gateway.sse import (
    Event,
    SSEParser,
    StreamSummary,
    UsageChunkFilter,
    error_event,
    usage_tokens,
)
from hypothesis import given
from hypothesis import strategies as st


def error_of(body: bytes) -> dict:
    document = json.loads(body)
    assert set(document) == {"error"}
    assert set(document["error"]) == {"message", "type", "param", "code"}
    return document["error"]


@pytest.mark.parametrize(
    ("status", "body", "type_", "code", "message_parts"),
    [
        (
            404,
            b'{"code":"404","message":"Authorization failed or requested resource not found."}',
            "invalid_request_error",
            "not_found",
            ["answered 404: Authorization failed", "IAM policy", "region", "opc-request-id: R1"],
        ),
        (
            401,
            b'{"code":"401","message":"The required information to complete authentication '
            b'was not provided or was incorrect."}',
            "authentication_error",
            "invalid_api_key",
            ["answered 401", "not an OCI CLI signing key"],
        ),
        (
            400,
            b'{"code":"400","message":"Invalid \'maxTokens\': must be >= 1"}',
            "invalid_request_error",
            "bad_request",
            ["Invalid 'maxTokens'"],
        ),
        (
            404,
            b'{"code":"NotAuthorizedOrNotFound","message":"Not found"}',
            "invalid_request_error",
            "NotAuthorizedOrNotFound",
            ["Not found"],
        ),
        (
            429,
            b'{"code":"429","message":"Too many"}',
            "rate_limit_error",
            "rate_limit_exceeded",
            ["Too many"],
        ),
        (
            503,
            b"<html>Service Unavailable</html>",
            "api_error",
            "upstream_unavailable",
            ["<html>Service Unavailable</html>"],
        ),
        (500, b"", "api_error", "upstream_error", ["HTTP 500 with an empty body"]),
    ],
)
def test_oracle_errors_become_openai_errors(status, body, type_, code, message_parts) -> None:
    error = error_of(from_oracle(status, body, "oracle-eu", "inference.example", "R1"))
    assert (error["type"], error["code"]) == (type_, code)
    assert error["message"].startswith(f"Oracle (oracle-eu, inference.example) answered {status}")
    for part in message_parts:
        assert part in error["message"]


def test_openai_shaped_upstream_errors_pass_unchanged() -> None:
    body = b'{"error": {"message": "m", "type": "t", "param": null, "code": "c"}}'
    assert from_oracle(400, body, "oracle", "h", None) is body


def test_deeply_nested_error_bodies_are_treated_as_text() -> None:
    error = error_of(from_oracle(500, b"[" * 100_000, "oracle", "h", None))
    assert error["code"] == "upstream_error"


def test_long_non_json_errors_are_truncated() -> None:
    error = error_of(from_oracle(502, b"x" * 10_000, "oracle", "h", None))
    assert len(error["message"]) < 700


def test_error_body_shape() -> None:
    assert error_of(error_body(404, "no", code="model_not_found", param="model")) == {
        "message": "no",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"data: a\n\n"], [Event("a")]),
        ([b"data: a\r\n\r\n"], [Event("a")]),
        ([b"data: a\r\r", b"data: b\r\r"], [Event("a")]),  # a final CR may start a CRLF
        ([b"da", b"ta: a", b"\n", b"\n"], [Event("a")]),
        ([b"data: a\r", b"\n\r\n"], [Event("a")]),
        ([b"event: response.created\ndata: {}\n\n"], [Event("{}", "response.created")]),
        ([b"data: line1\ndata: line2\n\n"], [Event("line1\nline2")]),
        ([b": keep-alive comment\n\n", b"data:no-space\n\n"], [Event("no-space")]),
        ([b"data: [DONE]\n\n"], [Event("[DONE]")]),
        ([b"data: unfinished"], []),
        ([b"id: 1\nretry: 5\n\n"], []),
        ([b"data: caf\xc3", b"\xa9\n\n"], [Event("caf\u00e9")]),
    ],
)
def test_sse_parser_handles_any_chunking(chunks: list[bytes], expected: list[Event]) -> None:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    assert events == expected


def chat_stream(include_usage: bool) -> bytes:
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if include_usage:
        chunks.append({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}})
    body = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
    return body + b"data: [DONE]\n\n"


def test_stream_summary_reads_chat_usage_byte_by_byte() -> None:
    summary = StreamSummary()
    for byte in chat_stream(include_usage=True):
        summary.feed(bytes([byte]))
    assert (summary.events, summary.done, summary.tokens()) == (4, True, (7, 2))


def test_stream_summary_without_usage() -> None:
    summary = StreamSummary()
    summary.feed(chat_stream(include_usage=False))
    assert summary.tokens() == (None, None) and summary.done


def test_stream_summary_reads_responses_usage_and_errors() -> None:
    completed = {
        "type": "response.completed",
        "response": {"usage": {"input_tokens": 3, "output_tokens": 9}},
    }
    failed = {"type": "error", "error": {"message": "upstream went away"}}
    summary = StreamSummary()
    summary.feed(f"event: response.completed\ndata: {json.dumps(completed)}\n\n".encode())
    summary.feed(f"event: error\ndata: {json.dumps(failed)}\n\n".encode())
    assert summary.tokens() == (3, 9)
    assert summary.error == "upstream went away"


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 1, "completion_tokens": 2}, (1, 2)),
        ({"input_tokens": 3, "output_tokens": 4}, (3, 4)),
        ({"prompt_tokens": "1"}, (None, None)),
        (None, (None, None)),
        ([1, 2], (None, None)),
    ],
)
def test_usage_tokens(usage, expected) -> None:
    assert usage_tokens(usage) == expected


USAGE_STREAM = (
    b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
    b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
    b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}\n\n'
    b"data: [DONE]\n\n"
)
WITHOUT_USAGE = USAGE_STREAM.replace(
    b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}\n\n', b""
)


@given(cuts=st.lists(st.integers(0, len(USAGE_STREAM)), max_size=12))
def test_the_usage_chunk_is_dropped_however_the_stream_is_cut(cuts: list[int]) -> None:
    hide, start, out = UsageChunkFilter(), 0, b""
    for cut in sorted(set(cuts)):
        out += hide.feed(USAGE_STREAM[start:cut])
        start = max(start, cut)
    out += hide.feed(USAGE_STREAM[start:]) + hide.feed(b"")
    assert out == WITHOUT_USAGE


def test_the_usage_filter_passes_complete_events_at_once_and_keeps_other_bytes() -> None:
    hide = UsageChunkFilter()
    assert (
        hide.feed(b'data: {"choices": [1]}\r\n\r\ndata: par') == b'data: {"choices": [1]}\r\n\r\n'
    )
    assert hide.feed(b"tial\n\n: comment\n\n") == b"data: partial\n\n: comment\n\n"
    assert hide.feed(b"data: unterminated") == b""
    assert hide.feed(b"") == b"data: unterminated"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("m.a", 100, "'m.a'"),
        ("", 100, "''"),
        ("x" * 100, 100, repr("x" * 100)),
        ("x" * 101, 100, repr("x" * 100) + "... (101 characters)"),
        ("x" * 9_000_000, 100, repr("x" * 100) + "... (9000000 characters)"),
        ("abcdef", 3, "'abc'... (6 characters)"),
        ("\x00" * 50, 100, repr("\x00" * 25) + "... (50 characters)"),  # escapes count as shown
        ("\U0001f600" * 80, 100, repr("\U0001f600" * 80)),  # printable: shown as is
        ("\udcff" * 200, 100, repr("\udcff" * 16) + "... (200 characters)"),
    ],
)
def test_clip_for_message_quotes_and_clips_what_clients_sent(text, limit, expected) -> None:
    assert clip_for_message(text, limit) == expected


@given(st.text(max_size=300), st.integers(1, 150))
def test_clipped_text_stays_near_its_limit(text: str, limit: int) -> None:
    assert len(clip_for_message(text, limit)) <= limit + len(f"''... ({len(text)} characters)")


@pytest.mark.parametrize(
    ("body", "unique_keys", "expected"),
    [
        (b'{"a": 1, "a": 2}', False, {"a": 2}),  # Oracle's answers: parsed as json does
        (b'{"a": 1, "b": {"a": 2}}', True, {"a": 1, "b": {"a": 2}}),  # same key, other objects
        (b'[{"a": 1}, {"a": 2}]', True, [{"a": 1}, {"a": 2}]),
    ],
)
def test_safejson_parses_keys_given_twice_only_when_asked_to(body, unique_keys, expected) -> None:
    assert safejson.loads(body, unique_keys=unique_keys) == expected


def test_safejson_names_the_key_given_twice() -> None:
    with pytest.raises(ValueError) as caught:
        safejson.loads(b'{"x": [{"k": 1, "k": 1}]}', unique_keys=True)
    assert isinstance(caught.value, safejson.DuplicateKeyError)
    assert caught.value.key == "k"


def test_oracle_errors_with_a_key_given_twice_still_become_openai_errors() -> None:
    body = b'{"code": "NotFound", "message": "first", "message": "last"}'
    error = error_of(from_oracle(404, body, "oracle", "h", None))
    assert "answered 404: last" in error["message"]


def test_an_error_event_in_a_responses_stream_is_numbered_after_the_last_event() -> None:
    summary = StreamSummary()
    summary.feed(
        b'event: response.created\ndata: {"type": "response.created", "sequence_number": 0}\n\n'
    )
    summary.feed(
        b'event: x\ndata: {"type": "response.output_text.delta", "delta": "a", '
        b'"sequence_number": 7}\n\n'
    )

    event = error_event(
        "cut",
        "stream_interrupted",
        responses_api=True,
        sequence_number=summary.next_sequence_number,
    )

    assert summary.last_sequence_number == 7
    assert json.loads(event.decode().split("data: ", 1)[1])["sequence_number"] == 8
    assert StreamSummary().next_sequence_number == 0


# -- tool calls in streams ------------------------------------------------------------------------


def sse(*payloads: dict, event_names: bool = False) -> bytes:
    blocks = []
    for payload in payloads:
        name = f"event: {payload['type']}\n" if event_names else ""
        blocks.append(f"{name}data: {json.dumps(payload)}\n\n".encode())
    return b"".join(blocks)


def tool_call_chat_stream(finish_reason: str, include_usage: bool) -> bytes:
    """A chat stream answering with a tool call, shaped as OpenAI streams one."""

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    opening = {"index": 0, "id": "call_1", "type": "function"}
    opening["function"] = {"name": "get_weather", "arguments": ""}
    chunks = [chunk({"role": "assistant", "content": None, "tool_calls": [opening]})]
    for piece in ['{"cit', 'y": "P', 'aris"}']:
        chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    chunks.append(chunk({}, finish_reason))
    if include_usage:
        chunks.append({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5}})
    return sse(*chunks) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("finish_reason", ["tool_calls", "length"])
def test_a_tool_call_stream_is_counted_and_never_called_starved(finish_reason: str) -> None:
    summary = StreamSummary()
    for byte in tool_call_chat_stream(finish_reason, include_usage=True):
        summary.feed(bytes([byte]))

    assert (summary.events, summary.done, summary.tokens()) == (7, True, (12, 5))
    assert summary.cut_short is (finish_reason == "length")
    assert not summary.starved  # the budget ran out, but after an answer: the tool call


def test_a_responses_function_call_stream_is_counted_and_never_called_starved() -> None:
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather"}
    response = {"status": "incomplete", "usage": {"input_tokens": 4, "output_tokens": 6}}
    stream = sse(
        {"type": "response.output_item.added", "item": {**item, "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "delta": '{"city"'},
        {"type": "response.function_call_arguments.delta", "delta": ': "Par'},
        {"type": "response.output_item.done", "item": {**item, "arguments": '{"city": "Par'}},
        {"type": "response.incomplete", "response": response},
        event_names=True,
    )
    summary = StreamSummary()
    summary.feed(stream)

    assert summary.tokens() == (4, 6) and summary.cut_short
    assert not summary.starved


def test_a_stream_cut_short_before_text_or_a_tool_call_is_still_starved() -> None:
    summary = StreamSummary()
    summary.feed(
        sse(
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        )
    )
    assert summary.starved


@given(cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_only_the_usage_chunk_is_dropped_from_a_tool_call_stream(cuts: list[int]) -> None:
    stream = tool_call_chat_stream("tool_calls", include_usage=True)
    hide, start, out = UsageChunkFilter(), 0, b""
    for cut in sorted({min(c, len(stream)) for c in cuts}):
        out += hide.feed(stream[start:cut])
        start = max(start, cut)
    out += hide.feed(stream[start:]) + hide.feed(b"")
    assert out == tool_call_chat_stream("tool_calls", include_usage=False)


# -- the fast paths give what parsing every line and every event gives ----------------------------

SSE_LINES = [
    b"data: a",
    b"data:b",
    b"data: {}",
    b"event: e",
    b": c",
    b"id: 1",
    b"",
    b"data: [DONE]",
]


@given(
    lines=st.lists(st.sampled_from(SSE_LINES), max_size=20),
    ends=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=20, max_size=20),
)
def test_sse_events_are_the_same_whole_or_byte_by_byte(
    lines: list[bytes], ends: list[bytes]
) -> None:
    # Whole, single-line data events take the fast path; a byte at a time, never.
    stream = b"".join(line + end for line, end in zip(lines, ends, strict=False))
    parser = SSEParser()
    by_byte = [event for byte in stream for event in parser.feed(bytes([byte]))]
    assert SSEParser().feed(stream) == by_byte


USAGE = st.fixed_dictionaries(
    {"prompt_tokens": st.integers(0, 9), "completion_tokens": st.integers(0, 9)}
)
CHOICE = st.fixed_dictionaries(
    {
        "index": st.just(0),
        "delta": st.sampled_from(
            [{}, {"content": ""}, {"content": "x"}, {"content": '"usage"'}, {"tool_calls": [{}]}]
        ),
        "finish_reason": st.sampled_from([None, "stop", "length"]),
    }
)
PAYLOAD_PARTS = {
    "choices": st.lists(CHOICE, min_size=1, max_size=2),
    "usage": USAGE,
    "error": st.fixed_dictionaries({"message": st.text(max_size=4)}),
    "type": st.sampled_from(["response.output_text.delta", "response.created", "error"]),
    "delta": st.sampled_from(["", "a"]),
    "sequence_number": st.integers(0, 9) | st.booleans(),
    "response": st.fixed_dictionaries(
        {"status": st.sampled_from(["completed", "incomplete"])}, optional={"usage": USAGE}
    ),
}
TEXT_EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
# JSON may spell any of the names the summary looks for with \u escapes.
ESCAPED = {
    '"usage"': '"\\u0075sage"',
    '"error"': '"\\u0065rror"',
    '"length"': '"\\u006cength"',
    '"incomplete"': '"\\u0069ncomplete"',
    '"sequence_number"': '"\\u0073equence_number"',
}


@st.composite
def sse_blocks(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["json", "json", "json", "text", "done", "comment", "not json"]))
    if kind == "text":
        return TEXT_EVENT
    if kind == "done":
        return b"data: [DONE]\n\n"
    if kind == "comment":
        return b": ping\n\n"
    if kind == "not json":
        return b"data: {usage\n\n"
    keys = draw(st.sets(st.sampled_from(list(PAYLOAD_PARTS)), max_size=3))
    payload = {key: draw(PAYLOAD_PARTS[key]) for key in sorted(keys)}
    text = json.dumps(payload, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        for plain, escaped in ESCAPED.items():
            text = text.replace(plain, escaped)
    prefix = draw(st.sampled_from(["data: ", "data:", "event: x\ndata: "]))
    end = draw(st.sampled_from(["\n\n", "\r\n\r\n"]))
    return (prefix + text + end).encode()


def summary_fields(summary: StreamSummary) -> tuple:
    return (
        summary.events,
        summary.done,
        summary.usage,
        summary.error,
        summary.text_seen,
        summary.cut_short,
        summary.last_sequence_number,
    )


@given(blocks=st.lists(sse_blocks(), max_size=12), cuts=st.lists(st.integers(0, 3000), max_size=8))
def test_the_stream_summary_equals_parsing_every_event(
    blocks: list[bytes], cuts: list[int]
) -> None:
    # The reference: each event on its own, in a summary that has seen no text yet, so parsed.
    expected = StreamSummary()
    for block in blocks:
        alone = StreamSummary()
        alone.feed(block)
        expected.events += alone.events
        expected.done |= alone.done
        expected.text_seen |= alone.text_seen
        expected.cut_short |= alone.cut_short
        if alone.usage is not None:
            expected.usage = alone.usage
        if alone.error is not None:
            expected.error = alone.error
        if alone.last_sequence_number is not None:
            expected.last_sequence_number = alone.last_sequence_number
    stream, summary, start = b"".join(blocks), StreamSummary(), 0
    for cut in sorted({min(c, len(stream)) for c in cuts}):
        summary.feed(stream[start:cut])
        start = cut
    summary.feed(stream[start:])
    assert summary_fields(summary) == summary_fields(expected)


@pytest.mark.parametrize(
    ("late_event", "field", "value"),
    [
        (b'{"choices": [], "usage": {"prompt_tokens": 1}}', "usage", {"prompt_tokens": 1}),
        (b'{"\\u0075sage": {"prompt_tokens": 1}}', "usage", {"prompt_tokens": 1}),
        (b'{"error": {"message": "gone"}}', "error", "gone"),
        (b'{"type": "x", "sequence_number": 4}', "last_sequence_number", 4),
        (b'{"choices": [{"index": 0, "finish_reason": "length"}]}', "cut_short", True),
        (b'{"response": {"status": "incomplete"}}', "cut_short", True),
    ],
)
def test_events_after_text_are_still_read_for_what_they_may_change(
    late_event: bytes, field: str, value: object
) -> None:
    summary = StreamSummary()
    summary.feed(TEXT_EVENT + b"data: " + late_event + b"\n\n")
    assert getattr(summary, field) == value


@pytest.mark.parametrize(
    ("events", "done"),
    [
        ([{"type": "response.created", "sequence_number": 0}], False),
        ([{"type": "response.output_text.delta", "delta": "hi", "sequence_number": 1}], False),
        ([{"type": "response.completed", "sequence_number": 2, "response": {}}], True),
        ([{"type": "response.incomplete", "sequence_number": 2, "response": {}}], True),
        ([{"type": "response.failed", "sequence_number": 2, "response": {}}], True),
    ],
)
def test_a_responses_stream_is_done_at_its_final_event(events: list[dict], done: bool) -> None:
    summary = StreamSummary()
    summary.feed(sse({"type": "response.output_text.delta", "delta": "x", "sequence_number": 0}))
    summary.feed(sse(*events))
    assert summary.done is done
