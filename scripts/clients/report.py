"""What each Python client program prints for scripts/try_clients.py: one marked JSON line per
call (and one with the client's version), whatever the library logs around it.

Each program gets the way in from its environment (HTTP_PROXY, HTTPS_PROXY, SSL_CERT_FILE set by
try_clients.py) and three arguments: --base-url (absent: the client's own default,
https://api.openai.com/v1), --model (absent: the client's default model) and --expect, the
Oracle model the answer must come from (the simulator says "Hello from <model> ...").
"""

import argparse
import json
from collections.abc import Callable

MARK = "@@try-clients "


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--base-url", help="absent: the client's default (api.openai.com)")
    parser.add_argument("--model", help="absent: the client's default model")
    parser.add_argument("--expect", required=True, help="the Oracle model that must answer")
    return parser.parse_args()


def emit(document: dict) -> None:
    print(MARK + json.dumps(document), flush=True)


def version(text: str) -> None:
    emit({"version": text})


def call(name: str, expect: str, run: Callable[[], tuple[str, str]]) -> None:
    """Run one call; `run` returns (the answer's text, a short note for the table)."""
    try:
        text, note = run()
    except Exception as e:  # any failure is a result to report, not a crash
        emit({"call": name, "ok": False, "detail": f"{type(e).__name__}: {e}"})
        return
    if f"Hello from {expect} " in text:
        detail = ", ".join(filter(None, [expect, note]))
        emit({"call": name, "ok": True, "detail": detail})
    else:
        emit({"call": name, "ok": False, "detail": f"unexpected answer {text[:120]!r}"})
