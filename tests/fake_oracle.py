"""An in-process HTTPS Oracle for unit tests of the transport and the hooks (aiohttp on loopback,
inside the test's own event loop). Each request takes the next scripted answer; the end-to-end
tests use the real simulator process instead."""

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiohttp import web

CA = trustme.CA()


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    CA.configure_trust(context)
    return context


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the headers
    events: list[bytes] | None = None  # an SSE stream instead of a body
    event_gap: float = 0.0
    cut_after: int | None = None  # drop the connection after this many events


def completion(model: str = "m.one", text: str = "hi") -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


class FakeOracle:
    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.received: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/20231130/actions/v1"

    async def __aenter__(self) -> "FakeOracle":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        CA.issue_cert("127.0.0.1").configure_cert(context)
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            {"path": request.path_qs, "headers": dict(request.headers), "body": body}
        )
        answer = self.answers.pop(0) if self.answers else Answer(body=completion())
        if answer.delay:
            await asyncio.sleep(answer.delay)
        headers = {"opc-request-id": f"R{len(self.received)}", **answer.headers}
        if answer.events is None:
            payload = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body)
            return web.Response(
                status=answer.status,
                body=payload,
                headers={"content-type": "application/json", **headers},
            )
        response = web.StreamResponse(
            status=answer.status, headers={"content-type": "text/event-stream", **headers}
        )
        await response.prepare(request)
        for index, event in enumerate(answer.events):
            if answer.cut_after is not None and index >= answer.cut_after:
                request.transport.abort()  # the connection drops mid-stream
                return response
            if index and answer.event_gap:
                await asyncio.sleep(answer.event_gap)
            await response.write(event)
        await response.write_eof()
        return response
