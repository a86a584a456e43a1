"""A capture server: a plain TCP listener on a free loopback port that records every connection
and the bytes it received, and answers each with a small HTTP 200. Tests use it as a place that
must see nothing (a foreign host, a redirect's target) or to see what arrived."""

import socket
import threading
import time
from types import TracebackType


class CaptureServer:
    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        self.received: list[bytes] = []  # one entry per connection
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        data = b""
        with connection:
            connection.settimeout(2)
            try:
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ncaptured")
            except OSError:
                pass
        with self.lock:
            self.received.append(data)

    def seen(self, settle: float = 0.3) -> list[bytes]:
        """What arrived, after a moment for connections still being read."""
        time.sleep(settle)
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.listener.close()

    def __enter__(self) -> "CaptureServer":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
