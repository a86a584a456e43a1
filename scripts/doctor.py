"""Check a GoModel configuration step by step and say how to fix what fails.

    scripts/doctor                      # config.yaml and ORACLE_* variables, as the gateway reads
    scripts/doctor --config my.yaml
    scripts/doctor --gateway http://localhost:8080/v1   # a running gateway, not a temporary one
    scripts/doctor --proxy http://user:pass@proxy.corp:3128   # behind a corporate proxy

Steps: the configuration parses and every variable resolves; per provider, the base URL's shape
and region, DNS, TLS, whether Oracle accepts the key (one minimal chat call), whether /models is
available, and OCI discovery when configured; then the three verification calls (models,
responses, chat completions) through a gateway. Prints a table; exit status 1 if anything failed.
Like the gateway, the doctor never follows a redirect with the key: it reports it as a failure.
With --proxy every check goes through that HTTP proxy (CONNECT), as the gateway's calls do under
`mitmdump --mode upstream:URL`, and the temporary gateway is started in that mode.
"""

import argparse
import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPSConnection
from pathlib import Path
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "addon"))

from gomodel_gateway.config import load_config  # noqa: E402
from gomodel_gateway.config_values import ConfigError  # noqa: E402
from gomodel_gateway.discovery import DiscoveryError, RedirectRefused  # noqa: E402
from gomodel_gateway.oci_discovery import fetch_oci_models  # noqa: E402
from gomodel_gateway.providers import GatewayConfig, Provider  # noqa: E402
from gomodel_gateway.redirects import direct_opener, is_redirect, refused  # noqa: E402
from gomodel_gateway.regions import INFERENCE_HOST, check_region  # noqa: E402

DEFAULT_CONFIG = HERE.parent / "config.yaml"
BASE_PATHS = ("/20231130/actions/v1", "/openai/v1")
TIMEOUT = 15.0
FIX_404 = (
    "Oracle's 404 'Authorization failed or requested resource not found' means one of: the API "
    "key's IAM policy is missing (Allow any-user to use generative-ai-family in tenancy where ALL "
    "{request.principal.type='generativeaiapikey'}; a key created before its policy may need "
    "re-creating), the base URL's region is not the key's region, or the model is not available "
    "to the account in that region."
)
FIX_401 = (
    "The key was not accepted: use an OCI Generative AI API key (sk-...) created in this region, "
    "not the OCI CLI's signing key from ~/.oci/config."
)
FIX_REDIRECT = (
    "The key was not sent there. Set base_url to Oracle's inference endpoint itself "
    "(https://inference.generativeai.<region>.oci.oraclecloud.com/20231130/actions/v1), not to "
    "an address that redirects."
)


@dataclass
class Check:
    step: str
    subject: str
    result: str  # pass, warn, fail, skip
    detail: str


@dataclass(frozen=True)
class Route:
    """How the doctor reaches Oracle: whom to trust, and through which proxy, if any."""

    context: ssl.SSLContext
    proxy: str | None = None


def http(
    method: str, url: str, key: str, route: Route, body: dict | None = None
) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    if data:
        request.add_header("Content-Type", "application/json")
    try:
        opener = direct_opener(route.context, route.proxy)
        with opener.open(request, timeout=TIMEOUT) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        if is_redirect(e.code):
            raise RedirectRefused(refused(e.code, url, e.headers.get("location"))) from e
        return e.code, e.read().decode(errors="replace")


def oracle_message(text: str) -> str:
    try:
        document = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):
            return str(error.get("message", ""))[:300]
        return str(document.get("message", text))[:300]
    return text[:200]


def check_config(path: Path, explicit: bool) -> tuple[GatewayConfig | None, list[Check]]:
    try:
        config = load_config(path, os.environ, required=explicit)
    except ConfigError as e:
        return None, [Check("configuration", str(path), "fail", str(e))]
    where = config.source or "environment only (no config file)"
    checks = [Check("configuration", where, "pass", f"{len(config.providers)} provider(s)")]
    for warning in config.warnings:
        result = "fail" if "skipped" in warning else "warn"
        checks.append(
            Check("variables", warning.split("'")[1] if "'" in warning else "-", result, warning)
        )
    if not config.providers:
        checks.append(
            Check(
                "providers",
                "-",
                "fail",
                "no usable provider: set ORACLE_BASE_URL (or ORACLE_REGION) and "
                "ORACLE_API_KEY, or add one to config.yaml",
            )
        )
    return config, checks


def check_shape(provider: Provider) -> list[Check]:
    parts = urlsplit(provider.base_url)
    checks = []
    if parts.path in BASE_PATHS:
        checks.append(Check("base URL", provider.name, "pass", provider.base_url))
    else:
        checks.append(
            Check(
                "base URL",
                provider.name,
                "warn",
                f"path {parts.path!r} is neither of Oracle's documented shapes "
                f"{' or '.join(BASE_PATHS)}",
            )
        )
    if not INFERENCE_HOST.match(parts.hostname or ""):
        checks.append(
            Check(
                "region",
                provider.name,
                "warn",
                f"{parts.hostname} is not an Oracle inference host "
                "(inference.generativeai.<region>.oci.<domain>); fine for a test "
                "server or simulator",
            )
        )
    elif provider.region:
        warning = check_region(provider.region)
        checks.append(
            Check(
                "region", provider.name, "warn" if warning else "pass", warning or provider.region
            )
        )
    return checks


def check_network(provider: Provider, route: Route) -> list[Check]:
    host, port = provider.host, urlsplit(provider.base_url).port or 443
    if route.proxy:
        return [check_proxy_tunnel(host, port, route.context, route.proxy)]
    context = route.context
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        return [
            Check(
                "DNS",
                provider.name,
                "fail",
                f"{host} does not resolve ({e}): check the region in the URL and the machine's DNS",
            )
        ]
    checks = [Check("DNS", provider.name, "pass", f"{host} -> {addresses[0][4][0]}")]
    try:
        with (
            socket.create_connection((host, port), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            checks.append(Check("TLS", provider.name, "pass", f"{tls.version()}, certificate ok"))
    except ssl.SSLCertVerificationError as e:
        checks.append(
            Check(
                "TLS",
                provider.name,
                "fail",
                f"certificate not trusted ({e.verify_message}): behind a TLS-"
                "inspecting proxy, give its CA with --oracle-ca and mitmproxy's "
                "ssl_verify_upstream_trusted_ca",
            )
        )
    except OSError as e:
        checks.append(Check("TLS", provider.name, "fail", f"cannot connect to {host}:{port}: {e}"))
    return checks


def check_proxy_tunnel(host: str, port: int, context: ssl.SSLContext, proxy: str) -> Check:
    """A CONNECT through the proxy and a TLS handshake with Oracle inside it."""
    parts = urlsplit(proxy)
    shown = f"{parts.hostname}:{parts.port or 8080}"
    headers = {}
    if parts.username:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials).decode()
    connection = HTTPSConnection(
        parts.hostname or "", parts.port or 8080, timeout=TIMEOUT, context=context
    )
    connection.set_tunnel(host, port, headers=headers)
    try:
        connection.connect()
        version = connection.sock.version() if isinstance(connection.sock, ssl.SSLSocket) else ""
        return Check("proxy", shown, "pass", f"CONNECT {host}:{port} and {version} ok")
    except ssl.SSLCertVerificationError as e:
        detail = f"certificate not trusted ({e.verify_message}); a TLS-inspecting proxy's CA: "
        return Check("proxy", shown, "fail", detail + "--oracle-ca")
    except OSError as e:
        return Check("proxy", shown, "fail", f"CONNECT {host}:{port} through {shown}: {e}")
    finally:
        connection.close()


def check_key(provider: Provider, route: Route) -> Check:
    if not provider.models:
        return Check(
            "API key",
            provider.name,
            "skip",
            "no model to try: list at least one in ORACLE_MODELS or models:",
        )
    model = provider.models[0]
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 16}
    try:
        status, text = http(
            "POST", provider.base_url + "/chat/completions", provider.api_key, route, body
        )
    except RedirectRefused as e:
        return Check("API key", provider.name, "fail", f"Oracle {e}. {FIX_REDIRECT}")
    except OSError as e:
        return Check("API key", provider.name, "fail", f"no answer: {e}")
    if status == 200:
        return Check("API key", provider.name, "pass", f"Oracle answered a chat call on {model}")
    message = oracle_message(text)
    if status == 401:
        return Check("API key", provider.name, "fail", f"401 {message} {FIX_401}")
    if status == 404:
        return Check("API key", provider.name, "fail", f"404 {message} {FIX_404}")
    if status == 400:
        return Check(
            "API key",
            provider.name,
            "warn",
            f"the key was accepted, but Oracle refused the test call on {model}: {message}",
        )
    return Check("API key", provider.name, "fail", f"{status} {message}")


def check_models(provider: Provider, route: Route) -> Check:
    if provider.models_mode == "allowlist":
        return Check("/models", provider.name, "skip", "models_mode: allowlist never asks")
    try:
        status, text = http("GET", provider.base_url + "/models", provider.api_key, route)
    except RedirectRefused as e:
        return Check("/models", provider.name, "fail", f"Oracle {e}. {FIX_REDIRECT}")
    except OSError as e:
        return Check("/models", provider.name, "warn", f"no answer: {e}")
    if status == 200:
        try:
            count = len(json.loads(text).get("data", []))
        except (ValueError, AttributeError):
            count = 0
        return Check("/models", provider.name, "pass", f"Oracle lists {count} model(s)")
    return Check(
        "/models",
        provider.name,
        "warn",
        f"{status}: Oracle's /models is not available for this key (usual for API "
        "keys), so the gateway serves the configured models only: keep ORACLE_MODELS "
        "or models: complete, or use discovery: oci",
    )


def check_oci_discovery(provider: Provider, oracle_ca: str | None) -> Check | None:
    if provider.discovery != "oci":
        return None
    try:
        models = fetch_oci_models(provider, oracle_ca)
    except DiscoveryError as e:
        return Check("OCI discovery", provider.name, "fail", str(e))
    return Check(
        "OCI discovery",
        provider.name,
        "pass" if models else "warn",
        f"{len(models)} chat model(s): {', '.join(models[:6])}",
    )


def check_gateway(args: argparse.Namespace) -> list[Check]:
    if args.gateway:
        return [verify(args.gateway, args.gateway_cacert)]
    sys.path.insert(0, str(HERE))
    from processes import start_gateway  # the same helper the tests and the demo use

    env = {k: v for k, v in os.environ.items() if k.startswith(("ORACLE_", "GOMODEL_"))}
    options = ["--set", f"gomodel_config={args.config}"] if args.config else []
    if args.proxy:
        parts = urlsplit(args.proxy)
        options += ["--mode", f"upstream:{parts.scheme}://{parts.hostname}:{parts.port or 8080}"]
        if parts.username:
            auth = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            options += ["--set", f"upstream_auth={auth}"]
    workdir = Path(tempfile.mkdtemp(prefix="gomodel-doctor-"))
    try:
        gateway = start_gateway(
            workdir, env, *options, ca=Path(args.oracle_ca) if args.oracle_ca else None
        )
    except RuntimeError as e:
        return [Check("gateway", "mitmdump", "fail", f"the gateway did not start: {e}"[-400:])]
    try:
        return [verify(f"{gateway.url}/v1", None)]
    finally:
        gateway.stop()


def verify(base_url: str, cacert: str | None) -> Check:
    command = [sys.executable, str(HERE / "verify.py"), "--base-url", base_url]
    if cacert:
        command += ["--cacert", cacert]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    statuses = [
        line.strip() for line in result.stdout.splitlines() if line.strip().startswith("HTTP ")
    ]
    detail = f"models, responses, chat completions: {', '.join(statuses) or 'no answer'}"
    if result.returncode:
        tail = [line for line in result.stdout.splitlines() if '"message"' in line][:1]
        detail += f"; {tail[0].strip()}" if tail else ""
    return Check(
        "3 verification calls", base_url, "pass" if result.returncode == 0 else "fail", detail
    )


def table(checks: list[Check]) -> str:
    marks = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
    lines = [f"{'step':<22} {'subject':<24} {'result':<6} detail / fix", "-" * 100]
    for check in checks:
        lines.append(
            f"{check.step:<22} {check.subject[:24]:<24} {marks[check.result]:<6} {check.detail}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML file (default: config.yaml at the repo root)")
    parser.add_argument(
        "--oracle-ca",
        help="CA bundle to trust for Oracle (a proxy's or a test "
        "server's); also given to the temporary gateway",
    )
    parser.add_argument(
        "--gateway",
        help="verify this running gateway's base URL instead of starting a temporary one",
    )
    parser.add_argument("--gateway-cacert", help="CA for an https --gateway URL")
    parser.add_argument("--skip-gateway", action="store_true", help="no verification calls")
    parser.add_argument(
        "--proxy",
        help="an HTTP proxy every check goes through (http://[user:pass@]host:port), as "
        "mitmdump --mode upstream:URL makes the gateway's calls do",
    )
    args = parser.parse_args()

    path = Path(args.config) if args.config else DEFAULT_CONFIG
    config, checks = check_config(path, explicit=bool(args.config))
    route = Route(ssl.create_default_context(cafile=args.oracle_ca), args.proxy)
    for provider in config.providers if config else ():
        checks += check_shape(provider)
        network = check_network(provider, route)
        checks += network
        if all(c.result == "pass" for c in network):
            checks.append(check_key(provider, route))
            checks.append(check_models(provider, route))
        if oci := check_oci_discovery(provider, args.oracle_ca):
            checks.append(oci)
    if config and config.providers and not args.skip_gateway:
        checks += check_gateway(args)
    print(table(checks))
    failed = sum(c.result == "fail" for c in checks)
    print(
        f"\n{failed} failed, {sum(c.result == 'warn' for c in checks)} warning(s), "
        f"{sum(c.result == 'pass' for c in checks)} passed"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
