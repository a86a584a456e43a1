"""Tool calls and structured output through the gateway, as an app hard-wired to OpenAI makes them.

The official openai SDK keeps its default base URL (https://api.openai.com/v1); only the
environment moves it: HTTPS_PROXY points at the gateway and SSL_CERT_FILE trusts mitmproxy's CA.
Assertions look at what the client assembled and at what the Oracle simulator received.
"""

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import CHICAGO_KEY, CLIENT_KEY
from openai import DefaultHttpxClient, OpenAI
from processes import CLEARED_ENV, Gateway, Simulator, start_gateway
from pydantic import BaseModel, ConfigDict

MODEL = "xai.grok-4"  # served under its own id: the gateway sends the client's bytes unchanged
QUESTION = {"role": "user", "content": "What is the weather in Paris?"}
WEATHER_REPORT = '{"temperature_c": 21, "sky": "clear"}'
PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
DESCRIPTION = "The current weather in a city."
CHAT_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": DESCRIPTION,
        "parameters": PARAMETERS,
        "strict": True,
    },
}
RESPONSES_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": DESCRIPTION,
    "parameters": PARAMETERS,
    "strict": True,
}
# What the simulator fills a call's arguments with (see its docstring).
ARGUMENTS = {"city": "example", "unit": "celsius"}


class Forecast(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str
    temperature_c: float
    days: int
    sunny: bool
    warnings: list[str]


FORECAST_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "temperature_c": {"type": "number"},
        "days": {"type": "integer"},
        "sunny": {"type": "boolean"},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "temperature_c", "days", "sunny", "warnings"],
    "additionalProperties": False,
}


@dataclass
class App:
    """An app's OpenAI client, and the bodies of the requests it sent, oldest first."""

    client: OpenAI
    sent: list[bytes] = field(default_factory=list)


def hard_wired_app(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> App:
    """The SDK built as an app hard-wired to OpenAI builds it; the environment does the rest."""
    for name in list(os.environ):
        if CLEARED_ENV.match(name) or name.startswith("OPENAI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HTTPS_PROXY", gateway.proxy)
    monkeypatch.setenv("SSL_CERT_FILE", str(gateway.ca))
    monkeypatch.setenv("OPENAI_API_KEY", CLIENT_KEY)
    sent: list[bytes] = []

    def keep(request: Any) -> None:
        if request.method == "POST":
            sent.append(request.read())

    client = OpenAI(max_retries=0, http_client=DefaultHttpxClient(event_hooks={"request": [keep]}))
    assert str(client.base_url) == "https://api.openai.com/v1/"
    return App(client, sent)


@pytest.fixture
def app(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> App:
    return hard_wired_app(gateway, monkeypatch)


def assert_forwarded_unchanged(simulator: Simulator, app: App) -> list[dict]:
    """Oracle got each body byte for byte as the client sent it, with Oracle's key alone."""
    received = simulator.posts()
    assert len(received) == len(app.sent)
    for got, sent in zip(received, app.sent, strict=True):
        assert got["body_sha256"] == hashlib.sha256(sent).hexdigest()
        assert got["body"] == json.loads(sent)
        assert got["headers"]["authorization"] == f"Bearer {CHICAGO_KEY}"
        assert CLIENT_KEY not in json.dumps(got)
    return [got["body"] for got in received]


def access_line(gateway: Gateway, request_id: str) -> str:
    """The gateway's access log line for the call Oracle answered with `request_id`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in gateway.log().splitlines():
            if f"opc-request-id={request_id}" in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}:\n{gateway.log()[-3000:]}")


def assert_stream_logged(gateway: Gateway, request_id: str, tokens_out: int) -> None:
    line = access_line(gateway, request_id)
    assert re.search(rf"gomodel oracle {re.escape(MODEL)} 200 in=\d+ out={tokens_out} ", line)
    assert " stream " in line and "starved" not in line and "broken" not in line


def tool_call_message(call: Any) -> dict[str, Any]:
    """The assistant's turn as the app sends it back."""
    function = {"name": call.function.name, "arguments": call.function.arguments}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call.id, "type": "function", "function": function}],
    }


# -- chat completions -----------------------------------------------------------------------------


def test_a_chat_tool_call_round_trip(app: App, chicago: Simulator) -> None:
    first = app.client.chat.completions.create(model=MODEL, messages=[QUESTION], tools=[CHAT_TOOL])

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id and call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGUMENTS

    result = {"role": "tool", "tool_call_id": call.id, "content": WEATHER_REPORT}
    conversation = [QUESTION, tool_call_message(call), result]
    second = app.client.chat.completions.create(
        model=MODEL, messages=conversation, tools=[CHAT_TOOL]
    )

    assert second.choices[0].finish_reason == "stop"
    assert WEATHER_REPORT in second.choices[0].message.content
    _, answered = assert_forwarded_unchanged(chicago, app)
    assert answered["messages"] == conversation and answered["tools"] == [CHAT_TOOL]


def test_a_streamed_chat_tool_call_round_trip_is_assembled_and_logged(
    gateway: Gateway, app: App, chicago: Simulator
) -> None:
    with app.client.chat.completions.stream(
        model=MODEL,
        messages=[QUESTION],
        tools=[CHAT_TOOL],
        stream_options={"include_usage": True},
    ) as stream:
        events = list(stream)
        first = stream.get_final_completion()

    pieces = [e.arguments_delta for e in events if e.type == "tool_calls.function.arguments.delta"]
    [done] = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert len(pieces) > 1 and "".join(pieces) == done.arguments  # it came in pieces
    assert done.name == "get_weather" and done.parsed_arguments == ARGUMENTS
    [call] = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.id.startswith("call_") and json.loads(call.function.arguments) == ARGUMENTS
    assert first.usage.completion_tokens > 0

    result = {"role": "tool", "tool_call_id": call.id, "content": WEATHER_REPORT}
    with app.client.chat.completions.stream(
        model=MODEL, messages=[QUESTION, tool_call_message(call), result], tools=[CHAT_TOOL]
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "content.delta")

    assert WEATHER_REPORT in text
    assert_forwarded_unchanged(chicago, app)
    asked, _ = chicago.posts()
    assert_stream_logged(gateway, asked["request_id"], first.usage.completion_tokens)


def test_stream_usage_asked_by_the_gateway_stays_hidden_from_a_tool_call_stream(
    tmp_path: Path, chicago: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env(MODEL),
        "--set",
        "gomodel_stream_usage=true",
        "--set",
        "gomodel_hosts=api.openai.com",
        ca=chicago.ca,
    )
    try:
        app = hard_wired_app(gateway, monkeypatch)
        with app.client.chat.completions.stream(
            model=MODEL, messages=[QUESTION], tools=[CHAT_TOOL]
        ) as stream:
            chunks = [e.chunk for e in stream if e.type == "chunk"]
            completion = stream.get_final_completion()
        [received] = chicago.posts()
        line = access_line(gateway, received["request_id"])
    finally:
        gateway.stop()

    [call] = completion.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == ARGUMENTS
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)  # no usage-only chunk
    assert completion.usage is None
    assert "stream_options" not in json.loads(app.sent[0])
    assert received["body"]["stream_options"] == {"include_usage": True}  # asked for Oracle
    assert re.search(rf"gomodel oracle {re.escape(MODEL)} 200 in=\d+ out=[1-9]\d* ", line)
    assert "stream_options.include_usage added" in line


def test_chat_structured_output_is_forwarded_unchanged_and_answered_to_its_schema(
    app: App, chicago: Simulator
) -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "forecast", "strict": True, "schema": FORECAST_SCHEMA},
    }
    completion = app.client.chat.completions.create(
        model=MODEL, messages=[QUESTION], response_format=response_format
    )
    parsed = app.client.chat.completions.parse(
        model=MODEL, messages=[QUESTION], response_format=Forecast
    )

    forecast = Forecast.model_validate_json(completion.choices[0].message.content)
    assert forecast == Forecast(
        city="example", temperature_c=1.5, days=1, sunny=True, warnings=["example"]
    )
    assert parsed.choices[0].message.parsed == forecast  # the SDK's own schema, from the model
    asked, asked_by_parse = assert_forwarded_unchanged(chicago, app)
    assert asked["response_format"] == response_format
    assert asked_by_parse["response_format"]["json_schema"]["name"] == "Forecast"


# -- the Responses API ----------------------------------------------------------------------------


def test_a_streamed_responses_function_call_round_trip_without_previous_response_id(
    gateway: Gateway, app: App, chicago: Simulator
) -> None:
    events = list(
        app.client.responses.create(
            model=MODEL, input=[QUESTION], tools=[RESPONSES_TOOL], stream=True
        )
    )

    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * len(deltas),
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert len(deltas) > 1 and events[2].item.type == "function_call"
    assert events[-3].arguments == "".join(deltas)
    call = events[-2].item
    assert (call.type, call.name, call.status) == ("function_call", "get_weather", "completed")
    assert call.arguments == "".join(deltas) and json.loads(call.arguments) == ARGUMENTS
    completed = events[-1].response
    assert completed.output == [call] and completed.usage.output_tokens > 0

    conversation = [
        QUESTION,
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_REPORT},
    ]
    answer = list(
        app.client.responses.create(
            model=MODEL, input=conversation, tools=[RESPONSES_TOOL], stream=True
        )
    )

    text = "".join(e.delta for e in answer if e.type == "response.output_text.delta")
    assert WEATHER_REPORT in text and answer[-1].type == "response.completed"
    _, answered = assert_forwarded_unchanged(chicago, app)
    assert answered["input"] == conversation and "previous_response_id" not in answered
    asked, _ = chicago.posts()
    assert_stream_logged(gateway, asked["request_id"], completed.usage.output_tokens)


def test_responses_structured_output_is_forwarded_unchanged_and_answered_to_its_schema(
    app: App, chicago: Simulator
) -> None:
    text_format = {
        "format": {
            "type": "json_schema",
            "name": "forecast",
            "strict": True,
            "schema": FORECAST_SCHEMA,
        }
    }
    response = app.client.responses.create(
        model=MODEL, input="Forecast for Paris, please.", text=text_format
    )

    forecast = Forecast.model_validate_json(response.output_text)
    assert forecast.city == "example" and forecast.warnings == ["example"]
    [asked] = assert_forwarded_unchanged(chicago, app)
    assert asked["text"] == text_format
