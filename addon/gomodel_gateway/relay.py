"""The stream relay: where mitmproxy fetches streamed answers and early refusals from, inside
the gateway.

mitmproxy streams a response only from an upstream connection it made itself, and cannot retry,
fail over, time out an idle stream, or end a broken one with an error event. So a streamed call
is handed to this loopback server (aiohttp) under a single-use token; mitmproxy connects to it,
and it makes the call through the `Transport`, then passes Oracle's stream on chunk by chunk.
A stream that breaks midway ends with an OpenAI-style error event instead of a silent cut.

A job waits here only between the gateway's request hook and mitmproxy's connection, normally a
few milliseconds: it is dropped when its client leaves, expires after `UNCLAIMED_JOB_SECONDS`,
and the bodies waiting are capped (`MAX_PENDING_BYTES`), so abandoned streams cost no memory.

Refusals: mitmproxy reads a request's whole body before it sends a response an addon set, so a
request refused from its headers alone (no key, too large...) is streamed here instead, its body
dropped chunk by chunk, and answered at once; the relay then closes the connection, and
mitmproxy closes the client's after the answer, so the rest of the body is never read.

mitmproxy opens its port before the addon's `running` hook starts this server, so the relay's
port is taken earlier (`reserve`, from `configure`): a request refused in those first
milliseconds is pointed at it too, and waits in the listening socket's backlog until the server
runs, instead of having its body read (a body that never ends was never answered).
"""

import asyncio
import logging
import secrets
import socket

from aiohttp import web

from .call import Call
from .errors import ErrorCode, GatewayError
from .oracle_stream import StreamBroken
from .providers import Provider
from .routing import Endpoint
from .sse import error_event
from .transport import Transport

logger = logging.getLogger("gomodel")

PATH_PREFIX = "/gomodel-relay/"
REFUSAL_PATH = "/gomodel-refusal"
UNCLAIMED_JOB_SECONDS = 30.0
MAX_PENDING_BYTES = 64 * 1024 * 1024
BACKLOG = 128  # aiohttp's own default


def waiting_size(call: Call) -> int:
    """The bytes a call waiting for the relay holds (its bodies, one per candidate provider)."""
    return sum(len(body) for body in call.route.bodies.values()) if call.route else 0


def relay_busy() -> GatewayError:
    return GatewayError(
        503,
        "The gateway has too many streamed calls waiting to start; retry in a moment.",
        code=ErrorCode.GATEWAY_BUSY,
        type="api_error",
        headers=(("retry-after", "1"),),
    )


class StreamRelay:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.jobs: dict[str, Call] = {}
        self.expiries: dict[str, asyncio.TimerHandle] = {}
        self.pending_bytes = 0
        self.runner: web.AppRunner | None = None
        self.listening: socket.socket | None = None
        self.port = 0

    def reserve(self) -> None:
        """Take the relay's port now, before the server runs (idempotent)."""
        if self.listening is not None:
            return
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listening.bind(("127.0.0.1", 0))
        listening.listen(BACKLOG)
        self.listening, self.port = listening, listening.getsockname()[1]

    async def start(self) -> None:
        if self.runner is not None:
            return
        self.reserve()
        assert self.listening is not None
        app = web.Application()
        app.router.add_post(PATH_PREFIX + "{token}", self.handle)
        app.router.add_get(PATH_PREFIX + "{token}", self.handle)  # a stored response's stream
        app.router.add_route("*", REFUSAL_PATH, self.refuse)
        # handler_cancellation: a call whose client left (mitmproxy dropped the connection) stops
        # at once, whether it still waits for Oracle or is streaming.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await runner.setup()
        site = web.SockSite(runner, self.listening, backlog=BACKLOG)
        await site.start()
        self.runner = runner

    async def stop(self) -> None:
        for token in list(self.jobs):
            self.discard(PATH_PREFIX + token)
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.listening is not None:
            self.listening.close()
            self.listening = None

    def register(self, call: Call) -> str:
        """The path mitmproxy must POST to for this call (usable once); 503 when too much
        waits."""
        size = waiting_size(call)
        if self.pending_bytes + size > MAX_PENDING_BYTES:
            raise relay_busy()
        token = secrets.token_urlsafe(24)
        self.jobs[token] = call
        self.pending_bytes += size
        self.expiries[token] = asyncio.get_running_loop().call_later(
            UNCLAIMED_JOB_SECONDS, self._claim, token
        )
        return PATH_PREFIX + token

    def discard(self, path: str) -> None:
        """Drop a job nobody will fetch (its client left)."""
        self._claim(path.removeprefix(PATH_PREFIX))

    def _claim(self, token: str) -> Call | None:
        call = self.jobs.pop(token, None)
        if call is not None:
            self.pending_bytes -= waiting_size(call)
            self.expiries.pop(token).cancel()
        return call

    async def refuse(self, request: web.Request) -> web.Response:
        """The early refusals' end point: the gateway writes the real answer in its response
        hook; this one only ends the exchange, and the connection, at once."""
        response = web.Response(status=403)
        response.force_close()
        return response

    async def handle(self, request: web.Request) -> web.StreamResponse:
        call = self._claim(request.match_info["token"])
        if call is None or call.route is None:
            raise web.HTTPNotFound()
        try:
            reply = await self.transport.send(call.route, call.client_headers, call.attempts)
        except GatewayError as e:
            call.error = e.code
            return web.Response(status=e.status, body=e.body(), headers=e.response_headers())
        call.answered(reply.target, reply.status, reply.request_id)
        if reply.stream is None:
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        try:
            await response.prepare(request)
            try:
                async for chunk in reply.stream.chunks():
                    if out := call.pass_chunk(chunk):
                        await response.write(out)
            except StreamBroken as broken:
                call.broken = str(broken)
                await response.write(self.broken_event(call, reply.target.provider, broken))
            if tail := call.pass_chunk(b""):
                await response.write(tail)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError) as gone:
            # The client left; mitmproxy reports the flow's end.
            if not (call.stream and call.stream.done):
                logger.info("gomodel: the client left a stream from %s", reply.target.provider.name)
            if isinstance(gone, asyncio.CancelledError):
                raise
        finally:
            reply.stream.close()
        return response

    @staticmethod
    def broken_event(call: Call, provider: Provider, broken: StreamBroken) -> bytes:
        logger.warning(
            "gomodel: stream from %s (%s) broke: %s; opc-request-id=%s",
            provider.name,
            provider.host,
            broken,
            call.request_id or "-",
        )
        message = f"Oracle ({provider.name}, {provider.host}): {broken}. The stream is incomplete."
        responses_api = call.route is not None and call.route.endpoint is Endpoint.RESPONSES
        sequence = call.stream.next_sequence_number if call.stream else 0
        return error_event(
            message,
            ErrorCode.STREAM_INTERRUPTED,
            responses_api=responses_api,
            sequence_number=sequence,
        )
