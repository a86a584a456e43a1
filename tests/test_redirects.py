"""Redirects are refused wherever the Oracle key travels: the pure parts, and a real gateway whose
Oracle answers its calls with a 302 to a capture server. (Discovery, OCI discovery and the doctor
are proved in test_discovery.py and test_fidelity.py.)"""

import json
import ssl
import time
import urllib.error
import urllib.request

import openai
import pytest
from capture import CaptureServer
from conftest import CHICAGO_KEY, capture_url, openai_client
from gomodel_gateway.redirects import direct_opener, location_host, refused, refused_by_oracle
from processes import Gateway, Simulator

HELLO = [{"role": "user", "content": "hello"}]
ORACLE = "https://inference.example/20231130/actions/v1/chat/completions"


@pytest.mark.parametrize(
    ("location", "host"),
    [
        ("http://evil.example:8080/steal?token=secret", "evil.example"),
        ("https://user:pass@evil.example/x", "evil.example"),
        ("//other.example/x", "other.example"),
        ("/20231130/elsewhere?x=1", "inference.example"),  # relative: the same host
        ("  https://padded.example/  ", "padded.example"),
        (None, "nowhere (no Location header)"),
        ("", "nowhere (no Location header)"),
        ("http://[broken/", "an unreadable Location"),
    ],
)
def test_a_redirect_is_named_by_its_host_only(location: str | None, host: str) -> None:
    assert location_host(ORACLE, location) == host


def test_the_refusal_says_who_redirected_where_and_that_the_key_stayed() -> None:
    message = refused(307, ORACLE, "http://evil.example/steal?token=secret")
    assert message == (
        "answered 307, a redirect to evil.example: redirect refused: the gateway does not follow "
        "redirects with the provider key"
    )


def test_oracles_redirect_is_a_502_in_openais_shape() -> None:
    location = "http://evil.example/steal?token=secret"
    error = refused_by_oracle(302, ORACLE, location, "oracle-eu", "inference.example", "R7")
    body = json.loads(error.body())["error"]

    assert error.status == 502 and error.response_headers()["content-type"] == "application/json"
    assert body["code"] == "upstream_redirect" and body["type"] == "api_error"
    assert body["message"].startswith(
        "Oracle (oracle-eu, inference.example) answered 302, a redirect to evil.example: "
        "redirect refused: the gateway does not follow redirects with the provider key."
    )
    assert body["message"].endswith("opc-request-id: R7")
    assert "steal" not in body["message"] and "secret" not in body["message"]


def test_the_direct_opener_turns_a_redirect_into_an_error_and_follows_nothing(
    chicago: Simulator, capture: CaptureServer
) -> None:
    chicago.configure(list_models=True, redirects={"models": capture_url(capture)})
    request = urllib.request.Request(
        chicago.base_url() + "/models", headers={"Authorization": f"Bearer {CHICAGO_KEY}"}
    )
    context = ssl.create_default_context(cafile=str(chicago.ca))

    with pytest.raises(urllib.error.HTTPError) as caught:
        direct_opener(context).open(request, timeout=10)

    assert caught.value.code == 302 and caught.value.headers["location"] == capture_url(capture)
    assert capture.seen() == []


# -- a real gateway -------------------------------------------------------------------------------


def call(gateway: Gateway, endpoint: str, stream: bool) -> None:
    client = openai_client(gateway)
    if endpoint == "responses":
        client.responses.create(model="openai.gpt-oss-120b", input="hello", stream=stream)
    else:
        client.chat.completions.create(model="openai.gpt-oss-120b", messages=HELLO, stream=stream)


def access_line(gateway: Gateway, request_id: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in gateway.log().splitlines() if request_id in line]
        if lines:
            return lines[0]
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}:\n{gateway.log()[-3000:]}")


@pytest.mark.parametrize(
    ("endpoint", "stream"),
    [("chat/completions", False), ("chat/completions", True), ("responses", True)],
)
def test_a_redirected_call_is_a_502_and_the_key_goes_nowhere(
    gateway: Gateway,
    chicago: Simulator,
    frankfurt: Simulator,
    capture: CaptureServer,
    endpoint: str,
    stream: bool,
) -> None:
    # openai.gpt-oss-120b: Chicago first, then Frankfurt, which a redirect must not fail over to.
    chicago.configure(redirects={endpoint: capture_url(capture, f"/v1/{endpoint}?token=secret")})
    with pytest.raises(openai.APIStatusError) as caught:
        call(gateway, endpoint, stream)

    error = caught.value.response.json()["error"]
    assert caught.value.status_code == 502 and error["code"] == "upstream_redirect"
    assert error["message"].startswith(
        "Oracle (oracle, 127.0.0.1) answered 302, a redirect to 127.0.0.1: redirect refused: "
        "the gateway does not follow redirects with the provider key."
    )
    assert "secret" not in error["message"] and str(capture.port) not in error["message"]
    assert capture.seen() == []  # nothing, so not the key either
    (redirected,) = chicago.posts()  # not retried
    assert frankfurt.posts() == []  # not failed over
    line = access_line(gateway, redirected["request_id"])
    assert "gomodel oracle openai.gpt-oss-120b 502" in line
    assert error["message"].endswith(f"opc-request-id: {redirected['request_id']}")
