#!/usr/bin/env python3
"""A local HTTPS stand-in for Oracle Generative AI's OpenAI-compatible endpoint.

Built from ../shared/oracle-notes.md: both base paths (/20231130/actions/v1 and /openai/v1),
bearer keys answered with Oracle's own 401/404 bodies, /models missing unless asked for, chat
completions and responses (JSON or SSE, with configurable gaps between chunks), the reasoning
models' small-max_tokens quirk, and an `opc-request-id` on every answer.

Tools and structured output, answered as OpenAI shapes them. A request with function `tools`
(unless `tool_choice` is "none", or it ends with tool results) is answered with a call to the
first function tool (or the one `tool_choice` names): chat's `message.tool_calls` with
finish_reason "tool_calls" (streamed as a delta with the call's id, type and name, then
`arguments` in pieces), the Responses API's `function_call` output item (streamed as
output_item.added, function_call_arguments.delta/.done, output_item.done). Requests ending with
tool results (chat's `tool` messages, Responses' `function_call_output` items) get a text answer
quoting them. A `response_format` (chat) or `text.format` (Responses) of type json_schema is
answered with JSON fitting the schema, as are a call's arguments with the tool's `parameters`:
an object with the required properties, strings "example", integers 1, numbers 1.5, booleans
true, arrays of one item, the first of an `enum` or `anyOf`; nothing else in the schema (such as
$ref or minimum) is heeded. json_object is answered with {"answer": <the usual text>}.

Stored resources under /openai/v1 only, as Oracle documents them (see oracle_store.py):
responses by id (retrieve, delete, cancel, input items; background responses polled to
`completed` or resumed as a stream with `starting_after`), conversations and their items, files
(multipart uploads, list, retrieve, content, delete) and containers. They need an OpenAI-Project
header and are kept per project; a response created on either base path can be retrieved on
/openai/v1; `previous_response_id` and `conversation` must name stored state. Vector stores are
not simulated (Oracle creates them on its control plane): their paths answer 404.

Test hooks live under /_sim/ (no auth): GET /_sim/requests lists every request received
(method, path, lower-cased headers, the parsed body, raw_body_size, and body_sha256: the SHA-256
of the body's bytes, for checking that a body arrived unchanged), POST /_sim/reset forgets them
and restores the start settings, POST /_sim/settings changes them: list_models, models,
chunk_delay, stream_bytes (pads chat text streams to about that size), faults for generation
calls (fail: statuses for the next requests, header_delay: seconds before answering, cut_after:
events before a stream's connection is dropped, tail_delay: seconds between a stream's last
event and its end, as a server slow to close), and redirects: a 302 to the given URL for the
given endpoints, before any key check ({"models": url, "responses": url, "chat/completions":
url}), as a misconfigured or hostile server in between would answer; and
headers: extra [name, value] pairs on every answer.

    python scripts/oracle_simulator.py --port 0 --cert-dir /tmp/sim --api-key sk-test
prints `oracle simulator listening at https://127.0.0.1:PORT` once ready; the CA that signed its
certificate is written to <cert-dir>/ca.pem.
"""

import argparse
import contextlib
import hashlib
import json
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trustme
from oracle_store import OracleError, Store

BASE_PATHS = ("/20231130/actions/v1", "/openai/v1")
RESOURCES_BASE = "/openai/v1"
RESOURCE_FAMILIES = ("responses", "conversations", "files", "containers", "vector_stores")
NO_PROJECT = (
    400,
    "A project is required: send the OCI Generative AI project's OCID as OpenAI-Project.",
)
DEFAULT_MODELS = (
    "openai.gpt-oss-120b",
    "openai.gpt-oss-20b",
    "xai.grok-3",
    "xai.grok-4",
    "xai.grok-4-fast-reasoning",
    "xai.grok-code-fast-1",
    "meta.llama-3.3-70b-instruct",
    "meta.llama-4-maverick-17b-128e-instruct-fp8",
    "google.gemini-2.5-pro",
    "google.gemini-2.5-flash",
)
REASONING_PREFIXES = ("openai.gpt-oss", "xai.grok-4-fast-reasoning")
REASONING_TOKENS = 200
FILLER_SIZE = 16 * 1024  # what a reasoning model spends before it answers
NOT_AUTHENTICATED = (
    401,
    "The required information to complete authentication was not provided or was incorrect.",
)
NOT_FOUND = (404, "Authorization failed or requested resource not found.")


class Simulator:
    """Settings and the record of received requests, shared by the handler threads."""

    def __init__(self, api_keys: list[str], models: list[str], list_models: bool, delay: float):
        self.api_keys = api_keys
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.initial_settings: dict[str, Any] = {
            "models": models,
            "list_models": list_models,
            "chunk_delay": delay,
            "fail": [],  # statuses for the next generation requests, one each
            "header_delay": 0.0,  # seconds before a generation answer starts
            "cut_after": None,  # drop streams' connections after this many events
            "tail_delay": 0.0,  # seconds between a stream's last event and its end
            "stream_bytes": 0,  # pad chat streams with filler deltas to about this size
            "headers": [],  # [name, value] pairs added to every answer, sent as UTF-8
            "redirects": {},  # endpoint (e.g. "models") -> URL it answers a 302 to
            "background_seconds": 0.3,  # until a background response is completed
        }
        self.settings = dict(self.initial_settings)
        self.store = Store()

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)


def words_of(document: dict[str, Any]) -> int:
    return max(1, len(json.dumps(document.get("messages") or document.get("input") or "").split()))


def content_text(content: Any) -> str:
    """A message's content (or a tool result's output): a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def last_user_text(document: dict[str, Any]) -> str:
    if isinstance(document.get("input"), str):
        return document["input"]
    for message in reversed(conversation(document)):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def conversation(document: dict[str, Any]) -> list[Any]:
    """Chat's messages or the Responses API's input items."""
    items = document.get("messages") or document.get("input")
    return items if isinstance(items, list) else []


def tool_results(document: dict[str, Any]) -> list[str]:
    """The tool results the conversation ends with: chat's `tool` messages, the Responses API's
    `function_call_output` items."""
    results = []
    for item in reversed(conversation(document)):
        if isinstance(item, dict) and item.get("role") == "tool":
            results.append(content_text(item.get("content")))
        elif isinstance(item, dict) and item.get("type") == "function_call_output":
            results.append(content_text(item.get("output")))
        else:
            break
    return results[::-1]


def function_tools(document: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, parameters) of each function tool: nested under "function" in chat, flat in the
    Responses API."""
    tools: list[tuple[str, Any]] = []
    listed = document.get("tools")
    for tool in listed if isinstance(listed, list) else []:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        spec = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        if isinstance(spec.get("name"), str):
            tools.append((spec["name"], spec.get("parameters")))
    return tools


def tool_to_call(document: dict[str, Any]) -> tuple[str, Any] | None:
    """The function tool this request is answered with a call to, if any."""
    tools, choice = function_tools(document), document.get("tool_choice")
    if not tools or choice == "none" or tool_results(document):
        return None
    if isinstance(choice, dict):  # {"type": "function", "function": {"name"}} or {"name"}
        named = choice.get("function") if isinstance(choice.get("function"), dict) else choice
        return next((t for t in tools if t[0] == named.get("name")), tools[0])
    return tools[0]


PLACEHOLDERS = {"string": "example", "integer": 1, "number": 1.5, "boolean": True, "null": None}


def example(schema: Any, depth: int = 0) -> Any:
    """A placeholder value fitting a simple JSON schema (see the module's docstring)."""
    if not isinstance(schema, dict) or depth > 20:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example(schema[key][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first that is not null
        kind = next((k for k in kind if k != "null"), "null")
    if not isinstance(kind, str | None):
        return None
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = schema.get("required") if isinstance(schema.get("required"), list) else []
        return {
            name: example(properties.get(name), depth + 1)
            for name in required
            if isinstance(name, str)
        }
    if kind == "array":
        return [example(schema.get("items"), depth + 1)]
    return PLACEHOLDERS.get(kind)


def structured_text(document: dict[str, Any], text: str) -> str | None:
    """The answer asked for by chat's `response_format` or the Responses API's `text.format`."""
    text_options = document.get("text")
    fmt = document.get("response_format")
    if fmt is None and isinstance(text_options, dict):
        fmt = text_options.get("format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return json.dumps({"answer": text})
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), dict) else fmt
        return json.dumps(example(spec.get("schema") or {"type": "object"}))
    return None


def output_budget(document: dict[str, Any]) -> int | None:
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if key in document:
            return document[key]
    return None


def answer_text(model: str, document: dict[str, Any]) -> str:
    if results := tool_results(document):
        return f"Hello from {model} on the Oracle simulator. The tool said: {'; '.join(results)}"
    said = " ".join(last_user_text(document).split()[:20])
    return f"Hello from {model} on the Oracle simulator. You said: {said}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: "SimulatorServer"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the record under /_sim/requests is the log

    # -- plumbing ------------------------------------------------------------------------------

    def send_json(self, status: int, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_common_headers()
        self.wfile.write(body)

    def send_oracle_error(self, status: int, message: str) -> None:
        self.send_json(status, {"code": str(status), "message": message})

    def send_redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("location", location)
        self.send_header("content-length", "0")
        self.end_common_headers()

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_common_headers()

    def end_common_headers(self) -> None:
        """opc-request-id, the configured extra headers, and the end of the head. Extra values
        go out as UTF-8 bytes (send_header allows only Latin-1), as a misbehaving server might."""
        self.send_header("opc-request-id", self.request_id)
        for name, value in self.server.simulator.settings["headers"]:
            self._headers_buffer.append(f"{name}: {value}\r\n".encode())
        self.end_headers()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def send_events(self, events: list[bytes]) -> None:
        settings = self.server.simulator.settings
        delay, cut_after = settings["chunk_delay"], settings["cut_after"]
        self.start_stream()
        digest = hashlib.sha256()
        for index, event in enumerate(events):
            if index and delay:
                time.sleep(delay)
            if cut_after is not None and index >= cut_after:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_chunk(event)
            digest.update(event)
        if tail_delay := settings["tail_delay"]:
            time.sleep(tail_delay)
        self.send_chunk(b"")
        # What a client must have received, byte for byte (the load test checks it).
        self.entry["response_sha256"] = digest.hexdigest()

    def read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    # -- dispatch ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_POST(self) -> None:
        self.handle_any("POST")

    def do_DELETE(self) -> None:
        self.handle_any("DELETE")

    def handle_any(self, method: str) -> None:
        self.request_id = uuid.uuid4().hex.upper()
        body = self.read_body()
        simulator = self.server.simulator
        if self.path.startswith("/_sim/"):
            self.control(method, body)
            return
        try:
            document = json.loads(body) if body else None
        except (ValueError, RecursionError):
            document = None
        self.entry = {
            "request_id": self.request_id,
            "method": method,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": document,
            "raw_body_size": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        simulator.record(self.entry)
        path = self.path.split("?")[0]
        base = next((b for b in BASE_PATHS if path.startswith(b + "/")), None)
        if base is None:
            self.send_oracle_error(*NOT_FOUND)
            return
        endpoint = path[len(base) + 1 :]
        if location := simulator.settings["redirects"].get(endpoint):
            self.send_redirect(location)
            return
        authorization = self.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            self.send_oracle_error(*NOT_AUTHENTICATED)
            return
        if authorization.removeprefix("Bearer ") not in simulator.api_keys:
            self.send_oracle_error(*NOT_FOUND)
            return
        if method == "GET" and endpoint == "models":
            self.list_models()
        elif method == "POST" and endpoint in ("chat/completions", "responses"):
            self.generate(endpoint, document)
        elif base == RESOURCES_BASE and endpoint.split("/")[0] in RESOURCE_FAMILIES:
            self.resource(method, endpoint.split("/"), body, document)
        else:
            self.send_oracle_error(*NOT_FOUND)

    def control(self, method: str, body: bytes) -> None:
        simulator = self.server.simulator
        if method == "GET" and self.path == "/_sim/requests":
            with simulator.lock:
                self.send_json(200, simulator.requests)
        elif method == "POST" and self.path == "/_sim/reset":
            with simulator.lock:
                simulator.requests.clear()
                simulator.settings = dict(simulator.initial_settings)
            simulator.store.reset()
            self.send_json(200, simulator.settings)
        elif method == "POST" and self.path == "/_sim/settings":
            simulator.settings.update(json.loads(body))
            self.send_json(200, simulator.settings)
        else:
            self.send_json(404, {"error": "unknown control path"})

    # -- Oracle's endpoints --------------------------------------------------------------------

    def list_models(self) -> None:
        settings = self.server.simulator.settings
        if not settings["list_models"]:
            self.send_oracle_error(*NOT_FOUND)
            return
        data = [
            {"id": m, "object": "model", "created": 1754000000, "owned_by": m.split(".")[0]}
            for m in settings["models"]
        ]
        self.send_json(200, {"object": "list", "data": data})

    def take_fault(self) -> int | None:
        simulator = self.server.simulator
        with simulator.lock:
            fail = simulator.settings["fail"]
            status = fail.pop(0) if fail else None
        if delay := simulator.settings["header_delay"]:
            time.sleep(delay)
        return status

    def generate(self, endpoint: str, document: Any) -> None:
        if status := self.take_fault():
            self.send_oracle_error(status, f"Simulated failure {status}.")
            return
        if not isinstance(document, dict):
            self.send_oracle_error(400, "Invalid request body: expected a JSON object.")
            return
        model = document.get("model")
        if model not in self.server.simulator.settings["models"] or str(model).startswith(
            "cohere."
        ):
            self.send_oracle_error(*NOT_FOUND)
            return
        budget = output_budget(document)
        if budget is not None and (not isinstance(budget, int) or budget < 1):
            self.send_oracle_error(400, f"Invalid 'maxTokens': {budget!r} must be an integer >= 1")
            return
        if endpoint == "responses" and model.startswith("meta."):
            self.send_oracle_error(400, f"Model {model} is not supported by the Responses API.")
            return
        text = answer_text(model, document)
        if endpoint == "responses":
            try:
                earlier = self.server.simulator.store.context_of(document, self.project)
            except OracleError as e:
                self.send_oracle_error(e.status, e.message)
                return
            if earlier:
                text += f" (continuing {len(earlier)} earlier items)"
        reasoning, call = None, None
        finish = "stop"
        if (
            model.startswith(REASONING_PREFIXES)
            and budget is not None
            and budget <= REASONING_TOKENS
        ):
            reasoning, text, finish = "Thinking about the answer...", "", "length"
        elif tool := tool_to_call(document):
            name, parameters = tool
            arguments = example(parameters)
            call = {
                "call_id": f"call_{self.request_id[:24]}",
                "name": name,
                "arguments": json.dumps(arguments if isinstance(arguments, dict) else {}),
            }
            text, finish = "", "tool_calls"
        elif (structured := structured_text(document, text)) is not None:
            text = structured
        output = call["arguments"] if call else text
        usage_in, usage_out = words_of(document), budget if reasoning else len(output.split())
        if endpoint == "chat/completions":
            self.chat_completion(
                document, model, text, reasoning, call, finish, usage_in, usage_out
            )
        else:
            self.create_response(document, model, text, call, finish, usage_in, usage_out)

    def chat_completion(
        self, document, model, text, reasoning, call, finish, usage_in, usage_out
    ) -> None:
        completion_id = f"chatcmpl-{self.request_id[:24]}"
        created = int(time.time())
        usage = {
            "prompt_tokens": usage_in,
            "completion_tokens": usage_out,
            "total_tokens": usage_in + usage_out,
        }
        tool_call = call and {
            "id": call["call_id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": call["arguments"]},
        }
        if not document.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if reasoning:
                message["reasoning_content"] = reasoning
            if tool_call:
                message.update(content=None, tool_calls=[tool_call])
            self.send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                },
            )
            return

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }
            return f"data: {json.dumps(payload)}\n\n".encode()

        if tool_call:
            # OpenAI's shape: the call's id, type and name first, then its arguments in pieces.
            opening = {"index": 0, **tool_call, "function": {**tool_call["function"]}}
            opening["function"]["arguments"] = ""
            events = [chunk({"role": "assistant", "content": None, "tool_calls": [opening]})]
            events += [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                for piece in _slices(tool_call["function"]["arguments"])
            ]
        else:
            events = [chunk({"role": "assistant", "content": ""})]
            if reasoning:
                events.append(chunk({"reasoning_content": reasoning}))
            events += [chunk({"content": word}) for word in _pieces(text)]
            if padding := self.server.simulator.settings["stream_bytes"]:
                filler = chunk({"content": "x" * FILLER_SIZE})
                events += [filler] * (padding // len(filler))
        events.append(chunk({}, finish))
        if (document.get("stream_options") or {}).get("include_usage"):
            usage_chunk = json.loads(chunk({})[6:])
            usage_chunk["choices"] = []
            usage_chunk["usage"] = usage
            events.append(f"data: {json.dumps(usage_chunk)}\n\n".encode())
        events.append(b"data: [DONE]\n\n")
        self.send_events(events)

    def create_response(self, document, model, text, call, finish, usage_in, usage_out) -> None:
        response_id = f"resp_{self.request_id[:24]}"
        incomplete = finish == "length"
        status = "incomplete" if incomplete else "completed"
        content = [{"type": "output_text", "text": text, "annotations": []}]
        if call:
            item_id = f"fc_{self.request_id[:24]}"
            item = {"id": item_id, "type": "function_call", "status": status, **call}
        else:
            item_id = f"msg_{self.request_id[:24]}"
            item = {
                "id": item_id,
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": content,
            }
        response: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": model,
            "output": [item],
            "parallel_tool_calls": True,
            "tool_choice": document.get("tool_choice", "auto"),
            "tools": document.get("tools") or [],
            "usage": {
                "input_tokens": usage_in,
                "output_tokens": usage_out,
                "total_tokens": usage_in + usage_out,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": usage_out if incomplete else 0},
            },
        }
        if incomplete:
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        response["background"] = bool(document.get("background"))
        store, seconds = self.server.simulator.store, self.server.simulator.settings
        if not document.get("stream"):
            store.keep_response(document, response, [], self.project, seconds["background_seconds"])
            if response["background"]:
                self.send_json(200, store.retrieve_response(response_id, self.project))
            else:
                self.send_json(200, response)
            return
        sequence = iter(range(1_000_000))

        def event(kind: str, **fields: Any) -> bytes:
            payload = {"type": kind, "sequence_number": next(sequence), **fields}
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        events = [
            event("response.created", response=started),
            event("response.in_progress", response=started),
        ]
        if call:
            where = {"item_id": item_id, "output_index": 0}
            empty_item = {**item, "status": "in_progress", "arguments": ""}
            events.append(event("response.output_item.added", output_index=0, item=empty_item))
            events += [
                event("response.function_call_arguments.delta", delta=piece, **where)
                for piece in _slices(call["arguments"])
            ]
            events.append(
                event(
                    "response.function_call_arguments.done",
                    name=call["name"],
                    arguments=call["arguments"],
                    **where,
                )
            )
        else:
            empty_item = {**item, "status": "in_progress", "content": []}
            part = {"type": "output_text", "text": "", "annotations": []}
            where = {"item_id": item_id, "output_index": 0, "content_index": 0}
            events += [
                event("response.output_item.added", output_index=0, item=empty_item),
                event("response.content_part.added", part=part, **where),
            ]
            events += [event("response.output_text.delta", delta=p, **where) for p in _pieces(text)]
            events += [
                event("response.output_text.done", text=text, **where),
                event("response.content_part.done", part=content[0], **where),
            ]
        events += [
            event("response.output_item.done", output_index=0, item=item),
            event("response.incomplete" if incomplete else "response.completed", response=response),
        ]
        store.keep_response(document, response, events, self.project, seconds["background_seconds"])
        self.send_events(events)

    @property
    def project(self) -> str | None:
        return self.headers.get("openai-project")

    def resource(self, method: str, parts: list[str], body: bytes, document: Any) -> None:
        """The stored resources' endpoints (see oracle_store.py)."""
        if not self.project:
            self.send_oracle_error(*NO_PROJECT)
            return
        store, project = self.server.simulator.store, self.project
        query = dict(parse_qsl(urlsplit(self.path).query))
        document = document if isinstance(document, dict) else {}
        try:
            match method, parts:
                case "GET", ["responses", rid] if query.get("stream") == "true":
                    after = query.get("starting_after")
                    self.send_events(store.response_events(rid, project, after and int(after)))
                    return
                case "GET", ["responses", rid]:
                    answer = store.retrieve_response(rid, project)
                case "DELETE", ["responses", rid]:
                    answer = store.delete(rid, "response", project)
                case "POST", ["responses", rid, "cancel"]:
                    answer = store.cancel_response(rid, project)
                case "GET", ["responses", rid, "input_items"]:
                    answer = store.input_items(rid, project, query)
                case "POST", ["conversations"]:
                    answer = store.create_conversation(document, project)
                case "GET", ["conversations", cid]:
                    answer = store.conversation(cid, project)
                case "POST", ["conversations", cid]:
                    answer = store.conversation(cid, project, update=document)
                case "DELETE", ["conversations", cid]:
                    answer = store.delete(cid, "conversation", project)
                case "GET", ["conversations", cid, "items"]:
                    answer = store.conversation_items(cid, project, query)
                case "POST", ["conversations", cid, "items"]:
                    answer = store.add_items(cid, project, document)
                case "GET" | "DELETE", ["conversations", cid, "items", iid]:
                    answer = store.conversation_item(cid, iid, project, delete=method == "DELETE")
                case "POST", ["files"]:
                    content_type = self.headers.get("content-type", "")
                    answer = store.create_file(content_type, body, project)
                case "GET", ["files" | "containers" as family]:
                    answer = store.listing(family.removesuffix("s"), project, query)
                case "GET", ["files", fid]:
                    answer = store.file(fid, project).document
                case "GET", ["files", fid, "content"]:
                    self.send_bytes(store.file(fid, project).content)
                    return
                case "DELETE", ["files" | "containers" as family, rid]:
                    answer = store.delete(rid, family.removesuffix("s"), project)
                case "POST", ["containers"]:
                    answer = store.create_container(document, project)
                case "GET", ["containers", rid]:
                    answer = store.get(rid, "container", project).document
                case _:
                    raise OracleError(*NOT_FOUND)
        except OracleError as e:
            self.send_oracle_error(e.status, e.message)
            return
        self.send_json(200, answer)

    def send_bytes(self, content: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(len(content)))
        self.end_common_headers()
        self.wfile.write(content)


def _pieces(text: str) -> list[str]:
    """The text as stream deltas: one per word, spaces kept."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words) if w or i == 0] if text else []


def _slices(text: str, size: int = 5) -> list[str]:
    """A tool call's arguments as stream deltas: pieces of a few characters, cutting through
    JSON tokens as a model's output does."""
    return [text[i : i + size] for i in range(0, len(text), size)]


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        super().__init__(address, Handler)
        self.simulator = simulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that connect and leave (reachability checks, failed TLS) are normal.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def make_tls_context(cert_dir: Path) -> ssl.SSLContext:
    """A certificate for 127.0.0.1 and localhost, from a CA written to <cert_dir>/ca.pem."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="GoModel Oracle simulator")
    ca.cert_pem.write_to_path(str(cert_dir / "ca.pem"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost", "::1").configure_cert(context)
    return context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--cert-dir", type=Path, required=True, help="where ca.pem is written")
    parser.add_argument(
        "--api-key", action="append", required=True, help="an accepted key (repeatable)"
    )
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated")
    parser.add_argument("--list-models", action="store_true", help="answer GET /models")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    args = parser.parse_args()

    simulator = Simulator(
        args.api_key,
        [m for m in args.models.split(",") if m],
        args.list_models,
        args.chunk_delay,
    )
    server = SimulatorServer((args.host, args.port), simulator)
    context = make_tls_context(args.cert_dir)
    # The handshake happens in each connection's thread, not in the accepting one.
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    host, port = server.server_address[:2]
    print(f"oracle simulator listening at https://{host}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
