"""The gateway end to end: real mitmdump, real HTTPS Oracle simulators, the openai SDK and curl.

Every way in (3a straight to the proxy port, 3b HTTP_PROXY, 3c HTTPS_PROXY) is exercised, and
assertions look at what the simulator received, not only at what the client got.
"""

import itertools
import json
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from conftest import (
    CHICAGO_KEY,
    CLIENT_KEY,
    FRANKFURT_KEY,
)
from openai import DefaultHttpxClient, OpenAI
from processes import (
    Gateway,
    Simulator,
    clean_env,
    free_port,
    run_mitmdump_until_exit,
    start_gateway,
    start_mitmweb,
)

WAYS_IN = ["direct", "http_proxy", "https_proxy"]
HELLO = [{"role": "user", "content": "hello gateway"}]
PROJECT = "ocid1.generativeaiproject.oc1.us-chicago-1.amaaaaaaexampleproject"


def client_for(gateway: Gateway, way: str) -> OpenAI:
    """An openai client reaching the gateway one of the three documented ways."""
    if way == "direct":
        base_url, http_client = f"{gateway.url}/v1", DefaultHttpxClient(trust_env=False)
    elif way == "http_proxy":
        base_url = "http://gomodel.local/v1"
        http_client = DefaultHttpxClient(proxy=gateway.proxy, trust_env=False)
    else:
        base_url = "https://gomodel.local/v1"
        http_client = DefaultHttpxClient(
            proxy=gateway.proxy,
            verify=ssl.create_default_context(cafile=str(gateway.ca)),
            trust_env=False,
        )
    return OpenAI(base_url=base_url, api_key=CLIENT_KEY, max_retries=0, http_client=http_client)


def only_request(simulator: Simulator) -> dict:
    received = simulator.requests()
    assert len(received) == 1, received
    return received[0]


def assert_no_client_credentials(received: dict, oracle_key: str) -> None:
    assert received["headers"]["authorization"] == f"Bearer {oracle_key}"
    assert CLIENT_KEY not in json.dumps(received)


def curl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        env=clean_env(**(env or {})),
        check=True,
    )


# -- /v1/models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS_IN)
def test_models_are_listed_locally_with_every_model_routable(
    gateway: Gateway, chicago: Simulator, frankfurt: Simulator, way: str
) -> None:
    models = client_for(gateway, way).models.list()

    listed = [(m.id, m.owned_by) for m in models.data]
    assert listed == [
        ("openai.gpt-oss-120b", "oracle"),
        ("xai.grok-4", "oracle"),
        ("meta.llama-3.3-70b-instruct", "oracle"),
        ("oracle-eu/openai.gpt-oss-120b", "oracle-eu"),
        ("google.gemini-2.5-flash", "oracle-eu"),
    ]
    assert all(m.object == "model" and m.created > 0 for m in models.data)
    assert chicago.requests() == [] and frankfurt.requests() == []  # allowlist: never asked


def test_one_model_is_retrieved_and_an_unknown_one_is_404(gateway: Gateway) -> None:
    client = client_for(gateway, "direct")
    assert client.models.retrieve("xai.grok-4").owned_by == "oracle"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("xai.grok-99")
    assert caught.value.body["code"] == "model_not_found"


# -- chat completions and responses ---------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS_IN)
def test_chat_completion_reaches_oracle_with_its_key_and_never_the_clients(
    gateway: Gateway, chicago: Simulator, way: str
) -> None:
    completion = client_for(gateway, way).chat.completions.create(
        model="xai.grok-4", messages=HELLO, extra_headers={"OpenAI-Project": PROJECT}
    )

    assert completion.choices[0].message.content.startswith("Hello from xai.grok-4")
    assert completion.usage.total_tokens > 0
    received = only_request(chicago)
    assert received["path"] == "/20231130/actions/v1/chat/completions"
    assert received["body"]["model"] == "xai.grok-4"
    assert received["headers"]["openai-project"] == PROJECT
    assert received["headers"]["host"] == chicago.url.removeprefix("https://")
    assert_no_client_credentials(received, CHICAGO_KEY)


@pytest.mark.parametrize("way", WAYS_IN)
def test_responses_call_reaches_oracle(gateway: Gateway, chicago: Simulator, way: str) -> None:
    response = client_for(gateway, way).responses.create(model="xai.grok-4", input="hi there")

    assert response.output_text.startswith("Hello from xai.grok-4")
    received = only_request(chicago)
    assert received["path"] == "/20231130/actions/v1/responses"
    assert_no_client_credentials(received, CHICAGO_KEY)


@pytest.mark.parametrize("way", WAYS_IN)
def test_streamed_chat_and_responses_arrive_whole(
    gateway: Gateway, chicago: Simulator, way: str
) -> None:
    client = client_for(gateway, way)
    chat = client.chat.completions.create(model="xai.grok-4", messages=HELLO, stream=True)
    chat_text = "".join(chunk.choices[0].delta.content or "" for chunk in chat if chunk.choices)
    events = list(client.responses.create(model="xai.grok-4", input="hello gateway", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")

    expected = "Hello from xai.grok-4 on the Oracle simulator. You said: hello gateway"
    assert chat_text == expected
    assert deltas == expected
    assert events[-1].type == "response.completed"
    assert [r["body"]["stream"] for r in chicago.requests()] == [True, True]


def test_stream_events_pass_through_unchanged(gateway: Gateway, chicago: Simulator) -> None:
    body = json.dumps({"model": "xai.grok-4", "messages": HELLO, "stream": True})
    direct = curl(
        "-N",
        "--cacert",
        str(chicago.ca),
        "-H",
        f"Authorization: Bearer {CHICAGO_KEY}",
        "-d",
        body,
        chicago.base_url() + "/chat/completions",
    ).stdout
    through = curl("-N", "-d", body, f"{gateway.url}/v1/chat/completions").stdout

    def normalized(stream: str) -> str:  # ids and timestamps differ per request
        return re.sub(r'"(id|created)": "?[\w-]+"?', r'"\1": X', stream)

    assert through.endswith("data: [DONE]\n\n")
    assert normalized(through) == normalized(direct)


def test_stream_chunks_reach_the_client_as_oracle_sends_them(
    gateway: Gateway, chicago: Simulator
) -> None:
    gap = 0.25
    chicago.configure(chunk_delay=gap)
    stream = client_for(gateway, "direct").chat.completions.create(
        model="xai.grok-4", messages=HELLO, stream=True
    )
    arrivals = [time.monotonic() for _ in stream]

    spread = arrivals[-1] - arrivals[0]
    sent_over = gap * (len(arrivals) - 1)
    assert len(arrivals) >= 10
    # Buffering would deliver everything at once; streaming spreads arrivals like the sender.
    assert spread >= 0.7 * sent_over, (spread, sent_over)
    median_gap = sorted(b - a for a, b in itertools.pairwise(arrivals))[len(arrivals) // 2]
    assert median_gap >= 0.5 * gap


def test_pinned_model_goes_to_its_provider_with_the_bare_id(
    gateway: Gateway, chicago: Simulator, frankfurt: Simulator
) -> None:
    client = client_for(gateway, "direct")
    completion = client.chat.completions.create(
        model="oracle-eu/openai.gpt-oss-120b", messages=HELLO
    )

    assert completion.model == "openai.gpt-oss-120b"
    received = only_request(frankfurt)
    assert received["path"] == "/openai/v1/chat/completions"
    assert received["body"]["model"] == "openai.gpt-oss-120b"
    assert received["body"]["messages"] == HELLO
    assert_no_client_credentials(received, FRANKFURT_KEY)
    assert chicago.requests() == []


def test_bare_model_goes_to_the_first_provider_serving_it(
    gateway: Gateway, chicago: Simulator, frankfurt: Simulator
) -> None:
    client = client_for(gateway, "direct")
    client.chat.completions.create(model="openai.gpt-oss-120b", messages=HELLO)
    client.chat.completions.create(model="google.gemini-2.5-flash", messages=HELLO)

    assert [r["body"]["model"] for r in chicago.requests()] == ["openai.gpt-oss-120b"]
    assert [r["body"]["model"] for r in frankfurt.requests()] == ["google.gemini-2.5-flash"]


def test_a_query_string_on_a_model_call_is_refused_naming_it(
    gateway: Gateway, chicago: Simulator
) -> None:
    """Model calls take no query parameters (resource calls allowlist theirs): none reaches
    Oracle unchecked."""
    answer = curl(
        "-w",
        "\n%{http_code}",
        "-d",
        json.dumps({"model": "xai.grok-4", "messages": HELLO}),
        f"{gateway.url}/v1/chat/completions?api-version=1",
    )
    body, status = answer.stdout.rsplit("\n", 1)
    assert status == "400"
    assert json.loads(body)["error"]["param"] == "api-version"
    assert chicago.requests() == []


# -- errors answered by the gateway ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "message_part"),
    [
        ("xai.grok-99", "ORACLE_MODELS"),
        ("oracle-eu/xai.grok-4", "Provider 'oracle-eu' does not serve model 'xai.grok-4'"),
    ],
)
def test_unknown_or_unserved_model_is_404_and_nothing_is_sent(
    gateway: Gateway, chicago: Simulator, frankfurt: Simulator, model: str, message_part: str
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client_for(gateway, "direct").chat.completions.create(model=model, messages=HELLO)

    assert caught.value.body["code"] == "model_not_found"
    assert message_part in caught.value.body["message"]
    assert chicago.requests() == [] and frankfurt.requests() == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/v1/chat/completions", "not json", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", "[1, 2]", 400, "invalid_body"),
        ("POST", "/v1/chat/completions", '{"messages": []}', 400, "missing_model"),
        ("POST", "/v1/responses", '{"model": "xai.grok-4", "stream": "yes"}', 400, "invalid_type"),
        ("POST", "/v1/embeddings", '{"model": "xai.grok-4"}', 404, "unknown_url"),
        ("GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
        ("DELETE", "/v1/models", None, 405, "method_not_allowed"),
    ],
)
def test_bad_requests_get_openai_style_errors_and_nothing_is_sent(
    gateway: Gateway,
    chicago: Simulator,
    method: str,
    path: str,
    body: str | None,
    status: int,
    code: str,
) -> None:
    args = ["-X", method, "-w", "\n%{http_code}", f"{gateway.url}{path}"]
    if body is not None:
        args += ["-H", "content-type: application/json", "-d", body]
    answer, _, got_status = curl(*args).stdout.rpartition("\n")

    error = json.loads(answer)["error"]
    assert int(got_status) == status
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    assert chicago.requests() == []


def test_health_reports_providers_and_models(gateway: Gateway) -> None:
    health = json.loads(curl(f"{gateway.url}/health").stdout)
    assert health["status"] == "ok"
    assert [(p["name"], p["models"]) for p in health["providers"]] == [
        ("oracle", 3),
        ("oracle-eu", 2),
    ]


# -- curl, the three ways in ----------------------------------------------------------------------


def test_curl_reaches_the_gateway_every_way(gateway: Gateway, chicago: Simulator) -> None:
    body = json.dumps({"model": "xai.grok-4", "messages": HELLO})
    straight = curl(f"http://localhost:{gateway.port}/v1/models").stdout
    # curl reads the lowercase http_proxy only; HTTPS_PROXY in either case.
    via_http = curl("http://gomodel.local/v1/models", env={"http_proxy": gateway.proxy}).stdout
    via_https = curl(
        "--cacert",
        str(gateway.ca),
        "-d",
        body,
        "https://gomodel.local/v1/chat/completions",
        env={"HTTPS_PROXY": gateway.proxy},
    ).stdout

    assert json.loads(straight) == json.loads(via_http)
    assert json.loads(via_https)["choices"][0]["message"]["content"].startswith("Hello from")
    assert_no_client_credentials(only_request(chicago), CHICAGO_KEY)


def test_app_hard_wired_to_openai_moves_to_oracle_with_https_proxy_alone(
    gateway: Gateway, chicago: Simulator
) -> None:
    program = (
        "from openai import OpenAI\n"
        "reply = OpenAI(max_retries=0).chat.completions.create(model='xai.grok-4',"
        " messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print(reply.choices[0].message.content)\n"
    )
    env = clean_env(
        HTTPS_PROXY=gateway.proxy, SSL_CERT_FILE=str(gateway.ca), OPENAI_API_KEY=CLIENT_KEY
    )
    env.pop("OPENAI_BASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hello from xai.grok-4")
    assert_no_client_credentials(only_request(chicago), CHICAGO_KEY)


def test_other_traffic_passes_through_untouched(gateway: Gateway, chicago: Simulator) -> None:
    body = json.dumps({"model": "xai.grok-4", "messages": HELLO})
    result = curl(
        "-x",
        gateway.proxy,
        "--cacert",
        str(gateway.ca),
        "-H",
        f"Authorization: Bearer {CHICAGO_KEY}",
        "-d",
        body,
        chicago.base_url() + "/chat/completions",
    )

    assert json.loads(result.stdout)["object"] == "chat.completion"
    received = only_request(chicago)
    assert received["headers"]["authorization"] == f"Bearer {CHICAGO_KEY}"
    assert received["body"] == json.loads(body)


def test_provider_key_never_reaches_client_or_log(gateway: Gateway, chicago: Simulator) -> None:
    client = client_for(gateway, "direct")
    completion = client.chat.completions.with_raw_response.create(
        model="xai.grok-4", messages=HELLO
    )
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope.model", messages=HELLO)

    for text in (completion.text, str(completion.headers), json.dumps(caught.value.body)):
        assert CHICAGO_KEY not in text and FRANKFURT_KEY not in text
    assert CHICAGO_KEY not in gateway.log() and FRANKFURT_KEY not in gateway.log()


# -- env-only configuration, Oracle's errors, discovery, unreachable upstream ---------------------


@pytest.fixture
def env_gateway(tmp_path: Path, chicago: Simulator):
    """Start a gateway configured from ORACLE_* variables only; stopped after the test."""
    started: list[Gateway] = []

    def start(*options: str, **env: str) -> Gateway:
        gateway = start_gateway(
            tmp_path / f"gw{len(started)}",
            {
                "ORACLE_BASE_URL": chicago.base_url("/openai/v1"),
                "ORACLE_API_KEY": CHICAGO_KEY,
                **env,
            },
            *options,
            ca=chicago.ca,
        )
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def test_env_only_provider_serves_trimmed_deduplicated_models(
    env_gateway, chicago: Simulator
) -> None:
    gateway = env_gateway(ORACLE_MODELS=" xai.grok-4, ,openai.gpt-oss-20b,xai.grok-4 ")
    client = client_for(gateway, "direct")

    assert [m.id for m in client.models.list().data] == ["xai.grok-4", "openai.gpt-oss-20b"]
    client.chat.completions.create(model="openai.gpt-oss-20b", messages=HELLO)
    received = [r for r in chicago.requests() if r["method"] == "POST"]
    assert received[0]["path"] == "/openai/v1/chat/completions"
    assert "provider oracle: host 127.0.0.1, 2 models configured" in gateway.log()


def test_oracle_errors_become_openai_errors_with_the_troubleshooting_hint(
    env_gateway, chicago: Simulator
) -> None:
    gateway = env_gateway(ORACLE_API_KEY="sk-wrong-region-key", ORACLE_MODELS="xai.grok-4")
    with pytest.raises(openai.NotFoundError) as caught:
        client_for(gateway, "direct").chat.completions.create(model="xai.grok-4", messages=HELLO)

    error = caught.value.body
    assert "Authorization failed or requested resource not found" in error["message"]
    assert "IAM policy" in error["message"] and "region" in error["message"]
    assert "opc-request-id" in error["message"]
    assert caught.value.response.headers["opc-request-id"]
    assert "sk-wrong-region-key" not in json.dumps(error)


def test_oracle_400_keeps_its_status_and_message(env_gateway) -> None:
    gateway = env_gateway(ORACLE_MODELS="openai.gpt-oss-120b")
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(gateway, "direct").chat.completions.create(
            model="openai.gpt-oss-120b", messages=HELLO, max_tokens=0
        )
    assert "Invalid 'maxTokens'" in caught.value.body["message"]
    assert caught.value.body["type"] == "invalid_request_error"


def test_discovered_models_join_the_configured_ones_on_refresh(
    env_gateway, tmp_path: Path, chicago: Simulator
) -> None:
    config = tmp_path / "refresh.yaml"
    config.write_text("models_refresh_seconds: 0.5\n")
    gateway = env_gateway(f"--set=gomodel_config={config}", ORACLE_MODELS="xai.grok-4")
    client = client_for(gateway, "direct")
    assert [m.id for m in client.models.list().data] == ["xai.grok-4"]  # /models is 404

    chicago.configure(list_models=True, models=["xai.grok-4", "google.gemini-2.5-pro"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ids = [m.id for m in client.models.list().data]
        if len(ids) > 1:
            break
        time.sleep(0.2)
    assert ids == ["xai.grok-4", "google.gemini-2.5-pro"]
    client.chat.completions.create(model="google.gemini-2.5-pro", messages=HELLO)
    discovery = [r for r in chicago.requests() if r["method"] == "GET"]
    assert discovery[0]["path"] == "/openai/v1/models"
    assert discovery[0]["headers"]["authorization"] == f"Bearer {CHICAGO_KEY}"


def test_unreachable_oracle_is_a_502_naming_provider_and_host(env_gateway) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    gateway = env_gateway(
        ORACLE_EU_BASE_URL=f"https://127.0.0.1:{closed_port}/openai/v1",
        ORACLE_EU_API_KEY="sk-eu",
        ORACLE_EU_MODELS="xai.grok-3",
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client_for(gateway, "direct").chat.completions.create(model="xai.grok-3", messages=HELLO)

    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_unreachable"
    assert (
        f"oracle-eu (127.0.0.1:{closed_port}): connection refused (x3)"
        in caught.value.body["message"]
    )
    assert "sk-eu" not in gateway.log()


def test_mitmweb_loads_the_same_script(tmp_path: Path, chicago: Simulator) -> None:
    mitmweb = start_mitmweb(
        tmp_path,
        chicago.oracle_env("xai.grok-4"),
        free_port(),
        "test",
    )
    try:
        models = json.loads(curl(f"{mitmweb.url}/v1/models").stdout)
    finally:
        mitmweb.stop()
    assert [m["id"] for m in models["data"]] == ["xai.grok-4"]


# -- startup errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config_text", "options", "message"),
    [
        pytest.param("providers: [\n", (), "is not valid YAML at line 2", id="invalid-yaml"),
        pytest.param(
            "providers:\n  x:\n    type: azure\n    base_url: https://h/v1\n    api_key: k\n",
            (),
            "providers.x.type: unknown provider type 'azure'",
            id="unknown-type",
        ),
        pytest.param(
            "providers:\n  x:\n    base_url: http://h/v1\n    api_key: k\n",
            (),
            "providers.x.base_url: base URL 'http://h/v1' is not an https URL",
            id="http-base-url",
        ),
        pytest.param(None, (), "does not exist (option gomodel_config)", id="missing-config"),
        pytest.param("", ("--set", "gomodel_hosts=bad host"), "option gomodel_hosts", id="hosts"),
        pytest.param(
            "",
            ("--set", "gomodel_max_body_size=lots"),
            "option gomodel_max_body_size: 'lots' is not a size",
            id="unparsable-size",
        ),
        pytest.param(
            "",
            ("--set", "gomodel_access_log_format=xml"),
            "gomodel_access_log_format: 'xml' is not text or json",
            id="log-format",
        ),
        pytest.param(
            "",
            ("--set", "gomodel_stream_usage=maybe"),
            "gomodel_stream_usage: 'maybe' is not true or false",
            id="boolean",
        ),
        pytest.param(
            "",
            ("--set", "gomodel_bogus=1"),
            "unknown option(s): gomodel_bogus",
            id="misspelled-option",
        ),
    ],
)
def test_bad_configuration_stops_mitmdump_with_a_message_not_a_traceback(
    tmp_path: Path, config_text: str | None, options: tuple[str, ...], message: str
) -> None:
    config = tmp_path / "gomodel.yaml"
    if config_text is not None:
        config.write_text(config_text)
    result = run_mitmdump_until_exit(
        tmp_path,
        {"ORACLE_API_KEY": "sk-startup-secret"},
        "--set",
        f"gomodel_config={config}",
        *options,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert message in output
    if config_text is not None and "gomodel_" not in " ".join(options):
        assert str(config) in output
    assert "Traceback" not in output
    assert "sk-startup-secret" not in output
