"""JSON parsing for untrusted input (clients' bodies, Oracle's answers)."""

import json
from typing import Any


def loads(data: bytes | str) -> Any:
    """json.loads that fails only with ValueError: bad JSON, bad UTF-8, or nesting so deep that
    the parser would otherwise raise RecursionError."""
    try:
        return json.loads(data)
    except RecursionError as e:
        raise ValueError("JSON is nested too deeply") from e
