"""Reading Oracle's answers: a whole body, or an event stream passed on as it comes, each with
an idle timeout between two pieces. A read that breaks or times out fails with StreamBroken."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from .oracle_session import describe


class StreamBroken(Exception):
    """Oracle's stream ended before it was complete."""


async def read_chunk(response: aiohttp.ClientResponse, idle_timeout: float) -> bytes:
    """The next piece of a body (b"" at its end), waiting at most `idle_timeout` for it."""
    try:
        async with asyncio.timeout(idle_timeout):
            return await response.content.readany()
    except TimeoutError as e:
        raise StreamBroken(f"no data from Oracle for {idle_timeout:g} s (idle timeout)") from e
    except (aiohttp.ClientError, OSError) as e:
        raise StreamBroken(f"the connection to Oracle dropped ({describe(e)})") from e


async def read_body(response: aiohttp.ClientResponse, idle_timeout: float) -> bytes:
    parts = []
    try:
        while chunk := await read_chunk(response, idle_timeout):
            parts.append(chunk)
    finally:
        response.release()
    return b"".join(parts)


@dataclass
class UpstreamStream:
    """A 2xx event stream whose first chunk has arrived; the rest is read as it is passed on.

    Its idle timeout is one timer for the whole stream, which, when it fires early, is set again
    for when the read waiting then would time out: a timer per read (asyncio.timeout) costs
    about 4 µs per chunk. A read that times out fails with StreamBroken."""

    response: aiohttp.ClientResponse
    idle_timeout: float
    first_chunk: bytes = b""
    reading_since: float | None = None  # while a read waits, when it started
    idle_timer: asyncio.TimerHandle | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.first_chunk:
            yield self.first_chunk
        loop = asyncio.get_running_loop()
        self.idle_timer = loop.call_later(self.idle_timeout, self.check_idle)
        while True:
            self.reading_since = loop.time()
            try:
                chunk = await self.response.content.readany()
            except (aiohttp.ClientError, OSError) as e:
                raise StreamBroken(f"the connection to Oracle dropped ({describe(e)})") from e
            self.reading_since = None
            if not chunk:
                return
            yield chunk

    def check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        now, since = loop.time(), self.reading_since
        if since is not None and now - since >= self.idle_timeout:
            # Ends the waiting read with this error (what aiohttp does with a broken connection).
            self.response.content.set_exception(
                StreamBroken(f"no data from Oracle for {self.idle_timeout:g} s (idle timeout)")
            )
            return
        restart = now if since is None else since
        self.idle_timer = loop.call_at(restart + self.idle_timeout, self.check_idle)

    def close(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.response.close()
