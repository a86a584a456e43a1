"""Owner lookups for the request path, on threads of their own.

Never the event loop's default pool, which DNS resolution shares: `LOOKUP_WORKERS` daemon
threads (one stuck on a database that does not answer never holds up the process's exit), each
keeping one connection, reopened after an error. A caller waits at most `LOOKUP_SECONDS`
(see Ledger.lookup).
"""

import queue
import threading
from concurrent.futures import Future
from contextlib import suppress

from .ledger_location import LedgerLocation
from .ledger_store import Owned, connect, find_owner

LOOKUP_WORKERS = 2
LOOKUP_SECONDS = 2.0  # the longest a call waits for one owner lookup


class LookupPool:
    def __init__(self, where: LedgerLocation, workers: int = LOOKUP_WORKERS) -> None:
        self.where = where
        self.jobs: queue.SimpleQueue[tuple[str, Future[Owned | None]] | None] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._work, name=f"gomodel-lookup-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self.threads:
            thread.start()

    def submit(self, id: str) -> "Future[Owned | None]":
        future: Future[Owned | None] = Future()
        self.jobs.put((id, future))
        return future

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)

    def _work(self) -> None:
        connection = None
        while (job := self.jobs.get()) is not None:
            id, future = job
            if not future.set_running_or_notify_cancel():  # its caller stopped waiting
                continue
            try:
                connection = connection or connect(self.where, LOOKUP_SECONDS)
                future.set_result(find_owner(connection, self.where, id))
            except BaseException as error:
                future.set_exception(error)
                if connection is not None:
                    with suppress(Exception):
                        connection.close()
                connection = None
        if connection is not None:
            with suppress(Exception):
                connection.close()
