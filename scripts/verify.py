#!/usr/bin/env python3
"""Run the three verification calls against a running GoModel gateway.

    scripts/verify.py                                   # http://localhost:8080/v1
    scripts/verify.py --base-url http://gomodel.local/v1 --proxy http://localhost:8080
    scripts/verify.py --base-url https://gomodel.local/v1 --proxy http://localhost:8080 \\
        --cacert ~/.mitmproxy/mitmproxy-ca-cert.pem

It lists the models, then calls Responses and Chat Completions with one of them (the first listed
unless --model says otherwise), prints each answer and exits 1 if any call failed. Standard
library only: it runs with any Python 3.
"""

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

PROMPT = "Say hello in one short sentence."


def call(
    opener: urllib.request.OpenerDirector,
    args: argparse.Namespace,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    url = args.base_url.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {args.api_key}")
    if data:
        request.add_header("Content-Type", "application/json")
    shown = f" -d '{json.dumps(body)}'" if body else ""
    print(f"\n$ curl -X {method} {url}{shown}")
    try:
        with opener.open(request, timeout=args.timeout) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        print(f"  failed: {getattr(e, 'reason', e)}")
        return 0, None
    try:
        document = json.loads(text)
    except ValueError:
        document = text
    print(f"  HTTP {status}")
    print("  " + json.dumps(document, indent=2).replace("\n", "\n  ")[:3000])
    return status, document


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://localhost:8080/v1")
    parser.add_argument("--proxy", help="reach the gateway through this HTTP proxy (mitmproxy)")
    parser.add_argument("--cacert", help="CA file to trust for an https base URL")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("GOMODEL_MASTER_KEY") or "gomodel",
        help="the key the client sends to the gateway (never Oracle's)",
    )
    parser.add_argument("--model", help="model for the two generation calls")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    proxies = {"http": args.proxy, "https": args.proxy} if args.proxy else {}
    context = ssl.create_default_context(cafile=args.cacert)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler(proxies), urllib.request.HTTPSHandler(context=context)
    )

    status, models = call(opener, args, "GET", "/models")
    ok = status == 200
    model = args.model
    if model is None and ok and models.get("data"):
        model = models["data"][0]["id"]
    if model is None:
        print("\nverify: no model to call; configure models or pass --model", file=sys.stderr)
        return 1
    status, _ = call(opener, args, "POST", "/responses", {"model": model, "input": PROMPT})
    ok = ok and status == 200
    status, _ = call(
        opener,
        args,
        "POST",
        "/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": PROMPT}]},
    )
    ok = ok and status == 200
    print("\nverify: all three calls succeeded" if ok else "\nverify: a call failed (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
