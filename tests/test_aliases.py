"""Apps hard-wired to OpenAI, end to end: they reach the gateway as api.openai.com through
HTTPS_PROXY, send OpenAI model names, and get Oracle models through aliases; OpenAI's account
headers stay home; the other OpenAI calls such apps make are answered locally."""

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import CLIENT_KEY
from openai import DefaultHttpxClient, OpenAI
from processes import Gateway, Simulator, clean_env, start_gateway

PROJECT = "ocid1.generativeaiproject.oc1.us-chicago-1.amaaaaaaconfigured"
HELLO = [{"role": "user", "content": "hi"}]
ALIASES_YAML = f"""
providers:
  oracle:
    base_url: ${{URL}}
    api_key: ${{KEY}}
    project: {PROJECT}
    models: [xai.grok-4, openai.gpt-oss-120b]
    models_mode: allowlist
aliases:
  gpt-5.6-luna: openai.gpt-oss-120b
  "gpt-*": xai.grok-4
"""


@pytest.fixture
def openai_gateway(tmp_path: Path, chicago: Simulator) -> Iterator[Gateway]:
    config = tmp_path / "gomodel.yaml"
    config.write_text(ALIASES_YAML)
    gateway = start_gateway(
        tmp_path / "gw",
        {"URL": chicago.base_url(), "KEY": chicago.api_key, "GOMODEL_ALIASES": "o3=xai.grok-4"},
        "--set",
        f"gomodel_config={config}",
        "--set",
        "gomodel_hosts=api.openai.com",
        ca=chicago.ca,
    )
    yield gateway
    gateway.stop()


def hard_wired(gateway: Gateway) -> OpenAI:
    """The SDK's defaults: api.openai.com, reached through the proxy with its CA trusted."""
    return OpenAI(
        api_key=CLIENT_KEY,
        max_retries=0,
        default_headers={"OpenAI-Organization": "org-abc", "OpenAI-Project": "proj_abc"},
        http_client=DefaultHttpxClient(
            proxy=gateway.proxy,
            verify=ssl.create_default_context(cafile=str(gateway.ca)),
            trust_env=False,
        ),
    )


def test_openai_names_reach_oracle_models_through_aliases(
    openai_gateway: Gateway, chicago: Simulator
) -> None:
    api = hard_wired(openai_gateway)

    exact = api.chat.completions.create(model="gpt-5.6-luna", messages=HELLO)
    globbed = list(api.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
    from_env = list(api.responses.create(model="o3", input="hi", stream=True))
    retrieved = api.models.retrieve("gpt-4.1")
    listed = [m.id for m in api.models.list().data]

    sent = [(p["body"]["model"], p["body"].get("stream", False)) for p in chicago.posts()]
    assert sent == [("openai.gpt-oss-120b", False), ("xai.grok-4", True), ("xai.grok-4", True)]
    assert exact.model == "openai.gpt-oss-120b"  # answers name the model that answered
    assert globbed[-1].choices[0].finish_reason == "stop"
    assert from_env[-1].type == "response.completed"
    assert retrieved.id == "gpt-4.1" and retrieved.owned_by == "oracle"
    assert "gpt-5.6-luna" in listed and "o3" in listed and "gpt-*" not in listed
    log = openai_gateway.log()
    assert "gomodel oracle openai.gpt-oss-120b 200" in log and "requested=gpt-5.6-luna" in log
    assert "requested=gpt-4o-mini" in log
    metrics = subprocess.run(
        ["curl", "-sS", f"{openai_gateway.url}/metrics"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=True,
    ).stdout
    assert 'gomodel_alias_requests_total{alias="gpt-*",model="xai.grok-4"} 1.0' in metrics


def test_openai_account_headers_never_reach_oracle(
    openai_gateway: Gateway, chicago: Simulator
) -> None:
    hard_wired(openai_gateway).chat.completions.create(model="gpt-4o", messages=HELLO)
    hard_wired(openai_gateway).chat.completions.create(
        model="gpt-4o", messages=HELLO, extra_headers={"OpenAI-Project": ""}
    )

    for received in chicago.posts():
        assert "openai-organization" not in received["headers"]
        assert received["headers"]["openai-project"] == PROJECT  # the configured one, always


def test_an_unknown_openai_name_says_how_to_alias_it(openai_gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        hard_wired(openai_gateway).chat.completions.create(model="claude-3-opus", messages=HELLO)

    message = caught.value.body["message"]
    assert "GOMODEL_ALIASES='claude-3-opus=<model>'" in message
    assert "xai.grok-4" in message and "ORACLE_MODELS" not in message


def test_embeddings_are_a_clear_404(openai_gateway: Gateway, chicago: Simulator) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        hard_wired(openai_gateway).embeddings.create(model="text-embedding-3-small", input="hi")

    assert "offers no embeddings" in caught.value.body["message"]
    assert chicago.posts() == []


def test_agents_sdk_traces_are_accepted_and_dropped(
    openai_gateway: Gateway, chicago: Simulator
) -> None:
    """What the Agents SDK's exporter sends: POST /v1/traces/ingest, with OpenAI-Beta."""
    response = hard_wired(openai_gateway).post(
        "/traces/ingest",
        body={"data": [{"object": "trace", "id": "trace_1", "workflow_name": "w"}]},
        cast_to=openai._legacy_response.HttpxBinaryResponseContent,
        options={"headers": {"OpenAI-Beta": "traces=v1"}},
    )
    time.sleep(0.3)

    assert response.response.status_code == 204
    assert chicago.requests() == []
    assert "gomodel traces" not in openai_gateway.log()  # no access log noise


def test_a_hard_wired_app_in_its_own_process(openai_gateway: Gateway, chicago: Simulator) -> None:
    """Only HTTPS_PROXY and SSL_CERT_FILE set, as a user would for an app they cannot change."""
    program = (
        "from openai import OpenAI\n"
        "api = OpenAI(api_key='sk-anything', max_retries=0)\n"
        "print(api.chat.completions.create(model='gpt-4o', "
        "messages=[{'role': 'user', 'content': 'hi'}]).model)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(HTTPS_PROXY=openai_gateway.proxy, SSL_CERT_FILE=str(openai_gateway.ca)),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "xai.grok-4"
    assert json.loads(json.dumps(chicago.posts()[0]["body"]))["model"] == "xai.grok-4"
