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
"""

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web

from .errors import GatewayError
from .routing import Endpoint, Route
from .sse import error_event
from .transport import Reply, StreamBroken, Transport

logger = logging.getLogger("gomodel")

PATH_PREFIX = "/gomodel-relay/"
REFUSAL_PATH = "/gomodel-refusal"
UNCLAIMED_JOB_SECONDS = 30.0
MAX_PENDING_BYTES = 64 * 1024 * 1024


@dataclass
class StreamJob:
    route: Route
    client_headers: Sequence[tuple[str, str]]
    transport: Transport
    created: float = field(default_factory=time.monotonic)
    reply: Reply | None = None  # set once Oracle answered, for the gateway's log
    broken: str | None = None  # why the stream broke, if it did

    @property
    def size(self) -> int:
        return sum(len(body) for body in self.route.bodies.values())


def relay_busy() -> GatewayError:
    return GatewayError(
        503,
        "The gateway has too many streamed calls waiting to start; retry in a moment.",
        code="gateway_busy",
        type="api_error",
        headers=(("retry-after", "1"),),
    )


class StreamRelay:
    def __init__(self) -> None:
        self.jobs: dict[str, StreamJob] = {}
        self.expiries: dict[str, asyncio.TimerHandle] = {}
        self.pending_bytes = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        if self.runner is not None:
            return
        app = web.Application()
        app.router.add_post(PATH_PREFIX + "{token}", self.handle)
        app.router.add_route("*", REFUSAL_PATH, self.refuse)
        # handler_cancellation: a call whose client left (mitmproxy dropped the connection) stops
        # at once, whether it still waits for Oracle or is streaming.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        for token in list(self.jobs):
            self.discard(PATH_PREFIX + token)
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def register(self, job: StreamJob) -> str:
        """The path mitmproxy must POST to for this job (usable once); 503 when too much waits."""
        if self.pending_bytes + job.size > MAX_PENDING_BYTES:
            raise relay_busy()
        token = secrets.token_urlsafe(24)
        self.jobs[token] = job
        self.pending_bytes += job.size
        self.expiries[token] = asyncio.get_running_loop().call_later(
            UNCLAIMED_JOB_SECONDS, self._claim, token
        )
        return PATH_PREFIX + token

    def discard(self, path: str) -> None:
        """Drop a job nobody will fetch (its client left)."""
        self._claim(path.removeprefix(PATH_PREFIX))

    def _claim(self, token: str) -> StreamJob | None:
        job = self.jobs.pop(token, None)
        if job is not None:
            self.pending_bytes -= job.size
            self.expiries.pop(token).cancel()
        return job

    async def refuse(self, request: web.Request) -> web.Response:
        """The early refusals' end point: the gateway writes the real answer in its response
        hook; this one only ends the exchange, and the connection, at once."""
        response = web.Response(status=403)
        response.force_close()
        return response

    async def handle(self, request: web.Request) -> web.StreamResponse:
        job = self._claim(request.match_info["token"])
        if job is None:
            raise web.HTTPNotFound()
        try:
            reply = job.reply = await job.transport.send(job.route, job.client_headers)
        except GatewayError as e:
            return web.Response(status=e.status, body=e.body(), headers=e.response_headers())
        if reply.stream is None:
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        try:
            await response.prepare(request)
            try:
                async for chunk in reply.stream.chunks():
                    await response.write(chunk)
            except StreamBroken as broken:
                job.broken = str(broken)
                await response.write(self.broken_event(job, reply, broken))
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError) as gone:
            # The client left; mitmproxy reports the flow's end.
            logger.info("gomodel: the client left a stream from %s", reply.target.provider.name)
            if isinstance(gone, asyncio.CancelledError):
                raise
        finally:
            reply.stream.close()
        return response

    @staticmethod
    def broken_event(job: StreamJob, reply: Reply, broken: StreamBroken) -> bytes:
        provider = reply.target.provider
        logger.warning(
            "gomodel: stream from %s (%s) broke: %s; opc-request-id=%s",
            provider.name,
            provider.host,
            broken,
            reply.request_id or "-",
        )
        message = f"Oracle ({provider.name}, {provider.host}): {broken}. The stream is incomplete."
        return error_event(
            message, "stream_interrupted", responses_api=job.route.endpoint is Endpoint.RESPONSES
        )
