"""Pure rules of who may use the port: pass-through modes, self addresses, origins, headers."""

import pytest
from gomodel_gateway.errors import GatewayError
from gomodel_gateway.exposure import (
    Passthrough,
    decide_exposure,
    is_looping,
    new_via_token,
    origin_allowed,
    parse_origins,
    parse_passthrough,
    preflight_headers,
)
from gomodel_gateway.hosts import ip_address, is_listen_address, names_this_machine
from gomodel_gateway.providers import Provider
from gomodel_gateway.upstream import (
    check_forwarded_headers,
    is_project_ocid,
    outgoing_headers,
    returned_headers,
)

PROJECT = "ocid1.generativeaiproject.oc1.us-chicago-1.amaaaaaaexample"
OTHER_PROJECT = "ocid1.generativeaiproject.oc1..amaaaaaaother"


@pytest.mark.parametrize(
    ("setting", "master_keys", "listen", "open_", "reason"),
    [
        (Passthrough.AUTO, False, ["127.0.0.1"], True, "loopback only and no gateway keys"),
        (Passthrough.AUTO, False, ["localhost", "::1"], True, "loopback only"),
        (Passthrough.AUTO, True, ["127.0.0.1"], False, "gateway keys are configured"),
        (Passthrough.AUTO, False, [""], False, "listens on all interfaces"),
        (Passthrough.AUTO, False, ["127.0.0.1", "0.0.0.0"], False, "listens on 0.0.0.0"),
        (Passthrough.AUTO, False, ["192.168.1.5"], False, "listens on 192.168.1.5"),
        (Passthrough.OFF, False, ["127.0.0.1"], False, "gomodel_passthrough=false"),
        (Passthrough.ON, True, [""], True, "gomodel_passthrough=true"),
    ],
)
def test_passthrough_mode_table(setting, master_keys, listen, open_, reason) -> None:
    exposure = decide_exposure(setting, master_keys, listen)

    assert exposure.open is open_
    assert reason in exposure.reason
    assert ("open" if open_ else "closed") in exposure.describe()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", "auto"), (" TRUE ", "true"), ("on", "true"), ("0", "false"), ("false", "false")],
)
def test_passthrough_option_is_parsed(value: str, expected: str) -> None:
    assert parse_passthrough(value) == Passthrough(expected)


def test_a_bad_passthrough_value_names_the_option() -> None:
    with pytest.raises(ValueError, match="gomodel_passthrough: 'maybe'"):
        parse_passthrough("maybe")


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("127.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("10.0.0.7", "10.0.0.7"),
        ("gomodel.local", None),
        ("1e3", None),
    ],
)
def test_ip_literals_are_read_in_every_spelling_the_resolver_accepts(spelling, address) -> None:
    parsed = ip_address(spelling)
    assert (str(parsed) if parsed else None) == address


@pytest.mark.parametrize(
    ("host", "listen", "expected"),
    [
        ("localhost", "192.168.1.5", True),
        ("127.0.0.2", "192.168.1.5", True),
        ("0.0.0.0", "127.0.0.1", True),
        ("::", "127.0.0.1", True),
        ("192.168.1.5", "192.168.1.5", True),
        ("3232235781", "192.168.1.5", True),  # 192.168.1.5 as one number
        ("proxy.example", "proxy.example", True),
        ("192.168.1.6", "192.168.1.5", False),
        ("example.com", "127.0.0.1", False),
    ],
)
def test_hosts_naming_this_machine(host: str, listen: str, expected: bool) -> None:
    assert names_this_machine(host, listen) is expected


def test_a_request_carrying_our_via_mark_is_a_loop() -> None:
    token = new_via_token()

    assert is_looping(["1.0 corporate-proxy", f"1.1 {token}"], token)
    assert not is_looping(["1.1 gomodel-someone-else"], token)
    assert not is_looping([], token)


@pytest.mark.parametrize(
    ("option", "origin", "allowed"),
    [
        ("", "https://evil.example", False),
        ("http://localhost:3000", "http://localhost:3000", True),
        ("http://localhost:3000", "HTTP://LOCALHOST:3000/", True),
        ("http://localhost:3000", "http://localhost:3001", False),
        ("https://app.example.com, http://localhost:3000", "https://app.example.com", True),
        ("*", "https://anything.example", True),
        ("http://localhost:3000", "null", False),
    ],
)
def test_origins(option: str, origin: str, allowed: bool) -> None:
    assert origin_allowed(origin, parse_origins(option)) is allowed


@pytest.mark.parametrize("bad", ["localhost:3000", "ftp://x.example", "https://x.example/path"])
def test_a_bad_origin_names_the_option(bad: str) -> None:
    with pytest.raises(ValueError, match="gomodel_allowed_origins"):
        parse_origins(bad)


def test_a_preflight_answer_names_the_origin_and_what_it_asked() -> None:
    headers = preflight_headers(
        "http://localhost:3000", {"access-control-request-headers": "authorization"}
    )

    assert headers["access-control-allow-origin"] == "http://localhost:3000"
    assert headers["access-control-allow-headers"] == "authorization"
    assert headers["vary"] == "Origin"


def provider(project: str | None = None) -> Provider:
    return Provider(
        "oracle", "https://oracle.example/openai/v1", "sk-oracle", ("m",), project=project
    )


HOSTILE_HEADERS = [
    ("Cookie", "session=1"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("Forwarded", "for=10.0.0.1"),
    ("OpenAI-Organization", "org-123"),
    ("X-Goog-Api-Key", "goog"),
    ("Ocp-Apim-Subscription-Key", "azure"),
    ("X-Auth-Token", "token"),
    ("Authorization", "Bearer client"),
    ("Proxy-Authorization", "Basic eA=="),
    ("Host", "gomodel.local"),
]


def test_only_what_a_call_needs_reaches_oracle() -> None:
    client = [
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("User-Agent", "OpenAI/Python 3.57"),
        ("opc-request-id", "trace-1"),
        *HOSTILE_HEADERS,
    ]

    sent = outgoing_headers(client, provider())

    assert sent == [
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("User-Agent", "OpenAI/Python 3.57"),
        ("opc-request-id", "trace-1"),
        ("authorization", "Bearer sk-oracle"),
    ]


@pytest.mark.parametrize(
    ("configured", "client", "sent"),
    [
        (PROJECT, None, PROJECT),
        (PROJECT, OTHER_PROJECT, OTHER_PROJECT),
        (PROJECT, "proj_abc123", PROJECT),  # an OpenAI project id is not Oracle's
        (PROJECT, "", PROJECT),  # an empty header never suppresses the configured one
        (None, "proj_abc123", None),
        (None, OTHER_PROJECT, OTHER_PROJECT),
        (None, "ocid1.tenancy.oc1..aaaa", None),  # an OCID, but not a project's
    ],
)
def test_the_project_header_is_an_oci_project_or_the_configured_one(
    configured, client, sent
) -> None:
    headers = [("OpenAI-Project", client)] if client is not None else []

    projects = [
        v for k, v in outgoing_headers(headers, provider(configured)) if k == "OpenAI-Project"
    ]

    assert projects == ([sent] if sent else [])
    assert is_project_ocid(PROJECT) and not is_project_ocid("proj_abc123")


def test_only_what_a_client_needs_comes_back() -> None:
    oracle = [
        ("Content-Type", "application/json"),
        ("opc-request-id", "R1"),
        ("Retry-After", "2"),
        ("x-ratelimit-remaining-requests", "9"),
        ("Set-Cookie", "oracle=1"),
        ("WWW-Authenticate", "Bearer"),
        ("Server", "oracle-internal"),
        ("x-oracle-internal-route", "node-7"),
        ("Content-Length", "10"),
        ("Content-Encoding", "gzip"),
    ]

    assert [k for k, _ in returned_headers(oracle)] == [
        "Content-Type",
        "opc-request-id",
        "Retry-After",
        "x-ratelimit-remaining-requests",
    ]


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("0", 8080, True),  # 0.0.0.0 in inet_aton's shortest spelling
        ("127.0.0.2", 8080, True),
        ("127.1", 9090, True),
        # Possibly this machine's, but nothing here knows: the Via mark catches such a loop.
        ("192.168.1.5", 8080, False),
        ("example.com", 8080, False),
        ("127.0.0.1", 8081, False),
    ],
)
def test_the_proxys_own_listening_sockets_in_any_spelling(host, port, expected) -> None:
    listening = [("", 8080), ("127.0.0.1", 9090, "tcp")]

    assert is_listen_address(host, port, listening) is expected


@pytest.mark.parametrize("value", ["a\x01b", "a\nb", "a\x7f", "a\udcff"])
def test_a_forwarded_header_that_is_not_a_field_value_is_a_400(value: str) -> None:
    with pytest.raises(GatewayError) as refused:
        check_forwarded_headers([("User-Agent", value)])

    assert (refused.value.status, refused.value.code) == (400, "invalid_header")


def test_headers_that_are_not_forwarded_are_not_checked_and_tabs_are_fine() -> None:
    check_forwarded_headers([("X-Other", "a\x01b"), ("User-Agent", "a\tb zürich")])


def test_an_oracle_header_value_no_server_could_send_on_is_dropped() -> None:
    oracle = [("opc-request-id", "a\x01b"), ("x-request-id", "zürich"), ("retry-after", "\udcff")]

    assert returned_headers(oracle) == [("x-request-id", "zürich")]
