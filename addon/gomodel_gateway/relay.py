"""The stream relay: where mitmproxy fetches streamed answers from, inside the gateway.

mitmproxy streams a response only from an upstream connection it made itself, and cannot retry,
fail over, time out an idle stream, or end a broken one with an error event. So a streamed call
is handed to this loopback server (aiohttp) under a single-use token; mitmproxy connects to it,
and it makes the call through the `Transport`, then passes Oracle's stream on chunk by chunk.
A stream that breaks midway ends with an OpenAI-style error event instead of a silent cut.
"""

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
UNCLAIMED_JOB_SECONDS = 120.0


@dataclass
class StreamJob:
    route: Route
    client_headers: Sequence[tuple[str, str]]
    transport: Transport
    created: float = field(default_factory=time.monotonic)
    reply: Reply | None = None  # set once Oracle answered, for the gateway's log
    broken: str | None = None  # why the stream broke, if it did


class StreamRelay:
    def __init__(self) -> None:
        self.jobs: dict[str, StreamJob] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        if self.runner is not None:
            return
        app = web.Application()
        app.router.add_post(PATH_PREFIX + "{token}", self.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def register(self, job: StreamJob) -> str:
        """The path mitmproxy must POST to for this job (usable once)."""
        now = time.monotonic()
        for token in [t for t, j in self.jobs.items() if now - j.created > UNCLAIMED_JOB_SECONDS]:
            del self.jobs[token]  # the client left before mitmproxy connected
        token = secrets.token_urlsafe(24)
        self.jobs[token] = job
        return PATH_PREFIX + token

    async def handle(self, request: web.Request) -> web.StreamResponse:
        job = self.jobs.pop(request.match_info["token"], None)
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
        except ConnectionResetError:  # the client left; mitmproxy reports the flow's end
            logger.info("gomodel: the client left a stream from %s", reply.target.provider.name)
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
