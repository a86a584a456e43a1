"""A fake OCI Generative AI control plane: HTTPS on loopback, GET /20231130/models, answered only
to requests carrying a valid OCI signature (draft-cavage HTTP signatures, rsa-sha256) made with the
test key, and paged with opc-next-page. Also makes that key and an ~/.oci/config for it.
With `redirect_to` set, every request is answered a 302 to that URL instead."""

import base64
import hashlib
import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

TENANCY = "ocid1.tenancy.oc1..aaaaaaaatestgomodeltenancy"
USER = "ocid1.user.oc1..aaaaaaaatestgomodeluser"
COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaatestgomodelcompartment"
REQUIRED_HEADERS = {"date", "(request-target)", "host"}
MAX_SKEW_SECONDS = 300
SIGNATURE_FIELD = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class OciIdentity:
    """An API signing key and the ~/.oci/config profile that uses it."""

    key: rsa.RSAPrivateKey
    config_file: Path

    @property
    def fingerprint(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashlib.md5(der, usedforsecurity=False).hexdigest()
        return ":".join(digest[i : i + 2] for i in range(0, 32, 2))

    @property
    def key_id(self) -> str:
        return f"{TENANCY}/{USER}/{self.fingerprint}"


def make_identity(directory: Path, profile: str = "DEFAULT") -> OciIdentity:
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = directory / "oci_api_key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    identity = OciIdentity(key, directory / "config")
    identity.config_file.write_text(
        f"[{profile}]\nuser={USER}\nfingerprint={identity.fingerprint}\n"
        f"tenancy={TENANCY}\nregion=us-chicago-1\nkey_file={key_file}\n"
    )
    return identity


def check_signature(
    method: str,
    target: str,
    headers: dict[str, str],
    public_key: rsa.RSAPublicKey,
    key_id: str,
    now: datetime,
) -> str | None:
    """Why a request's OCI signature is not acceptable, or None when it is."""
    authorization = headers.get("authorization", "")
    if not authorization.startswith("Signature "):
        return "missing Signature authorization"
    fields = dict(SIGNATURE_FIELD.findall(authorization))
    signed = fields.get("headers", "").split()
    if fields.get("keyId") != key_id:
        return f"unknown keyId {fields.get('keyId')!r}"
    if fields.get("algorithm") != "rsa-sha256" or fields.get("version") != "1":
        return "unsupported signature algorithm or version"
    if not set(signed) >= REQUIRED_HEADERS:
        return f"signature must cover {sorted(REQUIRED_HEADERS)}"
    lines = []
    for name in signed:
        if name == "(request-target)":
            lines.append(f"(request-target): {method.lower()} {target}")
        elif name in headers:
            lines.append(f"{name}: {headers[name]}")
        else:
            return f"signed header {name!r} is missing"
    try:
        moment = parsedate_to_datetime(headers["date"])
    except (TypeError, ValueError):
        return "unreadable date header"
    if abs((now - moment).total_seconds()) > MAX_SKEW_SECONDS:
        return "stale date: request signed more than 5 minutes away from now"
    try:
        public_key.verify(
            base64.b64decode(fields.get("signature", "")),
            "\n".join(lines).encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, ValueError):
        return "signature does not verify"
    return None


def summary(name: str, **overrides: Any) -> dict[str, Any]:
    """A ModelSummary as the control plane sends it (camelCase JSON)."""
    return {
        "id": f"ocid1.generativeaimodel.oc1.us-chicago-1.{name.replace('.', '')}",
        "displayName": name,
        "vendor": name.split(".")[0],
        "version": "1.0",
        "capabilities": ["CHAT"],
        "lifecycleState": "ACTIVE",
        "timeCreated": "2025-01-01T00:00:00.000Z",
        "type": "BASE",
        "compartmentId": COMPARTMENT,
        **overrides,
    }


@dataclass
class ControlPlane:
    identity: OciIdentity
    items: list[dict[str, Any]]
    page_size: int = 2
    redirect_to: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    ca: trustme.CA = field(default_factory=trustme.CA)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"https://127.0.0.1:{self.server.server_address[1]}/20231130"

    def write_ca(self, path: Path) -> Path:
        self.ca.cert_pem.write_to_path(str(path))
        return path

    def __enter__(self) -> "ControlPlane":
        plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                plane.received.append({"path": self.path, "headers": headers})
                if plane.redirect_to:
                    self.answer(302, {}, {"location": plane.redirect_to})
                    return
                problem = check_signature(
                    "GET",
                    self.path,
                    headers,
                    plane.identity.key.public_key(),
                    plane.identity.key_id,
                    datetime.now(UTC),
                )
                if problem:
                    plane.rejected.append(problem)
                    self.answer(401, {"code": "NotAuthenticated", "message": problem})
                    return
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if url.path != "/20231130/models" or query.get("compartmentId") != [COMPARTMENT]:
                    self.answer(404, {"code": "NotAuthorizedOrNotFound", "message": "no such"})
                    return
                start = int(query.get("page", ["0"])[0])
                page = plane.items[start : start + plane.page_size]
                more = start + plane.page_size < len(plane.items)
                extra = {"opc-next-page": str(start + plane.page_size)} if more else {}
                self.answer(200, {"items": page}, extra)

            def answer(self, status: int, body: Any, extra: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("opc-request-id", "CP-REQUEST")
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
