#!/usr/bin/env python3
"""A local HTTPS stand-in for Oracle Generative AI's OpenAI-compatible endpoint.

Built from ../shared/oracle-notes.md: both base paths (/20231130/actions/v1 and /openai/v1),
bearer keys answered with Oracle's own 401/404 bodies, /models missing unless asked for, chat
completions and responses (JSON or SSE, with configurable gaps between chunks), the reasoning
models' small-max_tokens quirk, and an `opc-request-id` on every answer.

Test hooks live under /_sim/ (no auth): GET /_sim/requests lists every request received,
POST /_sim/reset forgets them and restores the start settings, POST /_sim/settings changes
them: list_models, models, chunk_delay, stream_bytes (pads chat streams to about that size),
faults for generation calls (fail: statuses for the next requests, header_delay: seconds before
answering, cut_after: events before a stream's connection is dropped), and redirects: a 302 to
the given URL for the given endpoints, before any key check ({"models": url, "responses": url,
"chat/completions": url}), as a misconfigured or hostile server in between would answer; and
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

import trustme

BASE_PATHS = ("/20231130/actions/v1", "/openai/v1")
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
            "stream_bytes": 0,  # pad chat streams with filler deltas to about this size
            "headers": [],  # [name, value] pairs added to every answer, sent as UTF-8
            "redirects": {},  # endpoint (e.g. "models") -> URL it answers a 302 to
        }
        self.settings = dict(self.initial_settings)

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)


def words_of(document: dict[str, Any]) -> int:
    return max(1, len(json.dumps(document.get("messages") or document.get("input") or "").split()))


def last_user_text(document: dict[str, Any]) -> str:
    if isinstance(document.get("input"), str):
        return document["input"]
    for message in reversed(document.get("messages") or document.get("input") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    str(part.get("text", "")) for part in content if isinstance(part, dict)
                )
    return ""


def output_budget(document: dict[str, Any]) -> int | None:
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if key in document:
            return document[key]
    return None


def answer_text(model: str, document: dict[str, Any]) -> str:
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
        reasoning = None
        finish = "stop"
        if (
            model.startswith(REASONING_PREFIXES)
            and budget is not None
            and budget <= REASONING_TOKENS
        ):
            reasoning, text, finish = "Thinking about the answer...", "", "length"
        usage_in, usage_out = words_of(document), budget if reasoning else len(text.split())
        if endpoint == "chat/completions":
            self.chat_completion(document, model, text, reasoning, finish, usage_in, usage_out)
        else:
            self.create_response(document, model, text, finish, usage_in, usage_out)

    def chat_completion(
        self, document, model, text, reasoning, finish, usage_in, usage_out
    ) -> None:
        completion_id = f"chatcmpl-{self.request_id[:24]}"
        created = int(time.time())
        usage = {
            "prompt_tokens": usage_in,
            "completion_tokens": usage_out,
            "total_tokens": usage_in + usage_out,
        }
        if not document.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if reasoning:
                message["reasoning_content"] = reasoning
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

    def create_response(self, document, model, text, finish, usage_in, usage_out) -> None:
        response_id = f"resp_{self.request_id[:24]}"
        item_id = f"msg_{self.request_id[:24]}"
        incomplete = finish == "length"
        content = [{"type": "output_text", "text": text, "annotations": []}]
        item = {
            "id": item_id,
            "type": "message",
            "status": "incomplete" if incomplete else "completed",
            "role": "assistant",
            "content": content,
        }
        response: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "incomplete" if incomplete else "completed",
            "model": model,
            "output": [item],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
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
        if not document.get("stream"):
            self.send_json(200, response)
            return
        sequence = iter(range(1_000_000))

        def event(kind: str, **fields: Any) -> bytes:
            payload = {"type": kind, "sequence_number": next(sequence), **fields}
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        empty_item = {**item, "status": "in_progress", "content": []}
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        events = [
            event("response.created", response=started),
            event("response.in_progress", response=started),
            event("response.output_item.added", output_index=0, item=empty_item),
            event("response.content_part.added", part=part, **where),
        ]
        events += [event("response.output_text.delta", delta=p, **where) for p in _pieces(text)]
        events += [
            event("response.output_text.done", text=text, **where),
            event("response.content_part.done", part=content[0], **where),
            event("response.output_item.done", output_index=0, item=item),
            event("response.incomplete" if incomplete else "response.completed", response=response),
        ]
        self.send_events(events)


def _pieces(text: str) -> list[str]:
    """The text as stream deltas: one per word, spaces kept."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words) if w or i == 0] if text else []


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
