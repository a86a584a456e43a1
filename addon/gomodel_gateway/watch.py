"""Watch the configuration file and call back when it changes (polling: portable, no deps)."""

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0

Stamp = tuple[int, int] | None


def file_stamp(path: Path) -> Stamp:
    """What changes when the file is edited, replaced or removed."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


async def watch_file(
    path: Path, seen: Stamp, on_change: Callable[[], None], poll_seconds: float = POLL_SECONDS
) -> None:
    """Call on_change each time the file's stamp differs from the last one seen (`seen`: the
    stamp of the version already read)."""
    while True:
        await asyncio.sleep(poll_seconds)
        current = file_stamp(path)
        if current == seen:
            continue
        seen = current
        try:
            on_change()
        except Exception:
            logger.exception("gomodel: reloading %s failed", path)
