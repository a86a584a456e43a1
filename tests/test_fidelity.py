"""Oracle fidelity: OCI discovery against a signature-checking control plane, reasoning budgets
and parameter maps, projects, and the doctor."""

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace

import oci
import pytest
from capture import CaptureServer
from conftest import CHICAGO_KEY, capture_url, openai_client
from fake_control_plane import (
    COMPARTMENT,
    TENANCY,
    USER,
    ControlPlane,
    check_signature,
    make_identity,
    summary,
)
from gomodel_gateway.adapt import ModelRules, adapt, starved
from gomodel_gateway.discovery import DiscoveryError, RedirectRefused
from gomodel_gateway.oci_discovery import fetch_oci_models, redirect_answer, select_chat_models
from gomodel_gateway.providers import Provider
from processes import REPO, Gateway, Simulator, clean_env, start_gateway

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HELLO = [{"role": "user", "content": "hello"}]


# -- OCI request signatures -----------------------------------------------------------------------


def signed_request(identity, url: str, date: str | None = None) -> dict[str, str]:
    """Headers of a GET signed by the official SDK's signer, as the control plane sees them."""
    signer = oci.signer.Signer(
        TENANCY, USER, identity.fingerprint, str(identity.config_file.parent / "oci_api_key.pem")
    )
    request = SimpleNamespace(
        method="GET",
        url=url,
        headers={},
        body=None,
        path_url=url.split("127.0.0.1", 1)[-1].split("/", 1)[-1],
    )
    request.path_url = "/" + request.path_url
    if date:
        request.headers["date"] = date
    signer(request)
    return {k.lower(): v for k, v in request.headers.items()}


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory):
    return make_identity(tmp_path_factory.mktemp("oci"))


TARGET = "/20231130/models?compartmentId=x&capability=CHAT"
URL = "https://127.0.0.1:9/20231130/models?compartmentId=x&capability=CHAT"


def test_a_request_signed_by_the_sdk_verifies(identity) -> None:
    headers = signed_request(identity, URL)
    assert (
        check_signature(
            "GET", TARGET, headers, identity.key.public_key(), identity.key_id, datetime.now(UTC)
        )
        is None
    )


def test_the_signature_check_rejects_what_it_must(identity, tmp_path: Path) -> None:
    other = make_identity(tmp_path / "other")
    public, key_id, now = identity.key.public_key(), identity.key_id, datetime.now(UTC)
    good = signed_request(identity, URL)
    forged = signed_request(other, URL)
    forged["authorization"] = forged["authorization"].replace(other.key_id, key_id)
    stale = signed_request(identity, URL, format_datetime(now - timedelta(minutes=20), usegmt=True))
    tampered = dict(good, host="evil.example")

    def problem(headers: dict[str, str], target: str = TARGET) -> str | None:
        return check_signature("GET", target, headers, public, key_id, now)

    assert problem({k: v for k, v in good.items() if k != "authorization"}) == (
        "missing Signature authorization"
    )
    assert problem(forged) == "signature does not verify"  # wrong key
    assert problem(stale).startswith("stale date")
    assert problem(tampered) == "signature does not verify"  # a signed header changed
    assert problem(good, TARGET + "&page=2") == "signature does not verify"
    assert problem(signed_request(other, URL)).startswith("unknown keyId")


# -- OCI discovery --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "kept"),
    [
        (
            {"display_name": "openai.gpt-oss-120b", "vendor": "openai", "capabilities": ["CHAT"]},
            True,
        ),
        (
            {"display_name": "cohere.command-r-plus", "vendor": "cohere", "capabilities": ["CHAT"]},
            False,
        ),
        (
            {
                "display_name": "cohere.embed-v3",
                "vendor": "cohere",
                "capabilities": ["TEXT_EMBEDDINGS"],
            },
            False,
        ),
        (
            {
                "display_name": "meta.llama-3.3-70b-instruct",
                "vendor": "meta",
                "capabilities": ["CHAT"],
                "time_on_demand_retired": NOW - timedelta(days=1),
            },
            False,
        ),
        (
            {
                "display_name": "meta.llama-3.3-70b-instruct",
                "vendor": "meta",
                "capabilities": ["CHAT"],
                "time_on_demand_retired": NOW + timedelta(days=30),
            },
            True,
        ),
        (
            {
                "display_name": "xai.grok-4",
                "vendor": "xai",
                "capabilities": ["CHAT"],
                "lifecycle_state": "DELETED",
            },
            False,
        ),
        (
            {
                "display_name": "ocid1.generativeaimodel.oc1..ft",
                "vendor": "",
                "capabilities": ["CHAT"],
            },
            False,
        ),
        ({"display_name": "my fine tune", "vendor": "meta", "capabilities": ["CHAT"]}, False),
    ],
)
def test_discovery_keeps_served_chat_models_only(item: dict, kept: bool) -> None:
    assert select_chat_models([item], NOW) == ((item["display_name"],) if kept else ())


PLANE_ITEMS = [
    summary("openai.gpt-oss-120b"),
    summary("cohere.command-r-plus"),
    summary("xai.grok-4"),
    summary("meta.llama-3.3-70b-instruct", timeOnDemandRetired="2020-01-01T00:00:00.000Z"),
    summary("google.gemini-2.5-flash"),
]


def oci_provider(identity, plane: ControlPlane) -> Provider:
    return Provider(
        "oracle",
        "https://h.example/v1",
        "k",
        (),
        discovery="oci",
        compartment_id=COMPARTMENT,
        oci_config_file=str(identity.config_file),
        control_plane_url=plane.url,
    )


def test_discovery_lists_every_page_through_signed_requests(identity, tmp_path: Path) -> None:
    with ControlPlane(identity, PLANE_ITEMS) as plane:
        models = fetch_oci_models(
            oci_provider(identity, plane), str(plane.write_ca(tmp_path / "ca.pem"))
        )
    assert models == ("openai.gpt-oss-120b", "xai.grok-4", "google.gemini-2.5-flash")
    assert len(plane.received) == 3 and plane.rejected == []  # 5 items, pages of 2
    first = plane.received[0]["path"]
    assert "capability=CHAT" in first and "lifecycleState=ACTIVE" in first
    assert plane.received[1]["path"].endswith("page=2")


def test_discovery_with_the_wrong_key_is_refused(identity, tmp_path: Path) -> None:
    impostor = make_identity(tmp_path / "impostor")
    with ControlPlane(identity, PLANE_ITEMS) as plane:
        provider = oci_provider(impostor, plane)
        with pytest.raises(DiscoveryError, match="answered 401 NotAuthenticated"):
            fetch_oci_models(provider, str(plane.write_ca(tmp_path / "ca.pem")))
    assert plane.rejected and plane.rejected[0].startswith("unknown keyId")


def test_discovery_refuses_a_redirect_and_the_signature_goes_nowhere(
    identity, tmp_path: Path, capture: CaptureServer
) -> None:
    with ControlPlane(identity, PLANE_ITEMS, redirect_to=capture_url(capture, "/s?t=x")) as plane:
        provider = oci_provider(identity, plane)
        with pytest.raises(RedirectRefused) as caught:
            fetch_oci_models(provider, str(plane.write_ca(tmp_path / "ca.pem")))
    assert str(caught.value) == (
        "the OCI control plane answered 302, a redirect to 127.0.0.1: redirect refused: the "
        "gateway does not follow redirects with an OCI request signature"
    )
    assert len(plane.received) == 1
    assert capture.seen() == []


def test_only_a_redirect_answer_behind_an_sdk_error_counts_as_one() -> None:
    redirect = SimpleNamespace(status_code=307, headers={"location": "https://elsewhere/"})
    # as the SDK raises it: its RequestException around requests' TooManyRedirects
    refused = oci.exceptions.RequestException("Exceeded 0 redirects.", response=redirect)
    assert redirect_answer(oci.exceptions.RequestException(refused)) is redirect
    wrapped = oci.exceptions.RequestException("wrapped")
    wrapped.__context__ = refused
    assert redirect_answer(wrapped) is redirect
    answer = SimpleNamespace(status_code=404, headers={})
    not_found = oci.exceptions.RequestException("404", response=answer)
    assert redirect_answer(oci.exceptions.RequestException(not_found)) is None
    assert redirect_answer(oci.exceptions.RequestException("connection refused")) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p.__class__(**{**p.__dict__, "oci_config_file": "/nonexistent/config"}),
            "nonexistent/config",
        ),
        (lambda p: p.__class__(**{**p.__dict__, "oci_profile": "NOPE"}), "NOPE"),
    ],
)
def test_a_broken_oci_setup_is_a_discovery_error(identity, change, message, tmp_path) -> None:
    with ControlPlane(identity, PLANE_ITEMS) as plane, pytest.raises(DiscoveryError, match=message):
        fetch_oci_models(change(oci_provider(identity, plane)), None)


def test_discovery_without_the_oci_package_says_how_to_install_it(
    identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "oci", None)  # as if it were not installed
    provider = Provider(
        "oracle",
        "https://h/v1",
        "k",
        (),
        discovery="oci",
        compartment_id=COMPARTMENT,
        control_plane_url="https://h/20231130",
    )
    with pytest.raises(DiscoveryError, match="pip install oci"):
        fetch_oci_models(provider, None)


def test_a_gateway_with_oci_discovery_needs_no_model_list(
    identity, tmp_path: Path, chicago: Simulator
) -> None:
    with ControlPlane(identity, PLANE_ITEMS) as plane:
        bundle = tmp_path / "bundle.pem"
        bundle.write_text(chicago.ca.read_text() + plane.ca.cert_pem.bytes().decode())
        config = tmp_path / "gomodel.yaml"
        config.write_text(
            "providers:\n  oracle:\n"
            f"    base_url: {chicago.base_url()}\n    api_key: {CHICAGO_KEY}\n"
            f"    discovery: oci\n    compartment_id: {COMPARTMENT}\n"
            f"    oci_config_file: {identity.config_file}\n    control_plane_url: {plane.url}\n"
        )
        gateway = start_gateway(tmp_path / "gw", {}, "--set", f"gomodel_config={config}", ca=bundle)
        try:
            deadline = time.monotonic() + 15
            while not (ids := [m.id for m in openai_client(gateway).models.list().data]):
                assert time.monotonic() < deadline, gateway.log()
                time.sleep(0.2)
            reply = openai_client(gateway).chat.completions.create(
                model="xai.grok-4", messages=HELLO
            )
        finally:
            gateway.stop()
    assert ids == ["openai.gpt-oss-120b", "xai.grok-4", "google.gemini-2.5-flash"]
    assert reply.choices[0].message.content.startswith("Hello from xai.grok-4")
    assert "provider oracle: the OCI control plane listed 3 models" in gateway.log()


def test_failed_oci_discovery_falls_back_to_the_configured_list_with_a_warning(
    identity, tmp_path: Path, chicago: Simulator
) -> None:
    impostor = make_identity(tmp_path / "impostor")
    with ControlPlane(identity, PLANE_ITEMS) as plane:
        config = tmp_path / "gomodel.yaml"
        config.write_text(
            "providers:\n  oracle:\n"
            f"    base_url: {chicago.base_url()}\n    api_key: {CHICAGO_KEY}\n"
            f"    models: [xai.grok-4]\n    discovery: oci\n    compartment_id: {COMPARTMENT}\n"
            f"    oci_config_file: {impostor.config_file}\n    control_plane_url: {plane.url}\n"
        )
        bundle = tmp_path / "bundle.pem"
        bundle.write_text(chicago.ca.read_text() + plane.ca.cert_pem.bytes().decode())
        gateway = start_gateway(tmp_path / "gw", {}, "--set", f"gomodel_config={config}", ca=bundle)
        try:
            deadline = time.monotonic() + 15
            while "model discovery unavailable" not in gateway.log():
                assert time.monotonic() < deadline, gateway.log()
                time.sleep(0.2)
            ids = [m.id for m in openai_client(gateway).models.list().data]
        finally:
            gateway.stop()
    assert ids == ["xai.grok-4"]
    assert "401 NotAuthenticated" in gateway.log()


# -- reasoning budgets, parameter maps, projects --------------------------------------------------


@pytest.mark.parametrize(
    ("model", "body", "expected", "changes"),
    [
        (
            "openai.gpt-oss-120b",
            {"max_tokens": 10},
            {"max_tokens": 1024},
            ["max_tokens 10 -> 1024"],
        ),
        ("openai.gpt-oss-120b", {"max_tokens": 4000}, {"max_tokens": 4000}, []),
        (
            "openai.gpt-oss-20b",
            {"max_output_tokens": 5},
            {"max_output_tokens": 1024},
            ["max_output_tokens 5 -> 1024"],
        ),
        (
            "xai.grok-4-fast-reasoning",
            {"max_completion_tokens": 100},
            {"max_completion_tokens": 1024},
            ["max_completion_tokens 100 -> 1024"],
        ),
        ("xai.grok-4", {"max_tokens": 10}, {"max_tokens": 10}, []),
        ("openai.gpt-oss-120b", {"max_tokens": "10"}, {"max_tokens": "10"}, []),
        ("openai.gpt-oss-120b", {}, {}, []),
    ],
)
def test_small_budgets_of_reasoning_models_are_raised(model, body, expected, changes) -> None:
    document = dict(body)
    assert adapt(document, model, ModelRules()) == changes
    assert document == expected


def test_parameter_maps_rename_before_budgets_apply() -> None:
    rules = ModelRules(parameter_map=(("openai.*", (("max_tokens", "max_completion_tokens"),)),))
    document = {"max_tokens": 10}
    assert adapt(document, "openai.gpt-oss-120b", rules) == [
        "max_tokens -> max_completion_tokens",
        "max_completion_tokens 10 -> 1024",
    ]
    assert document == {"max_completion_tokens": 1024}
    both = {"max_tokens": 5, "max_completion_tokens": 2000}  # never overwrites the client's
    adapt(both, "openai.gpt-oss-120b", rules)
    assert both == {"max_tokens": 1024, "max_completion_tokens": 2000}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"choices": [{"message": {"content": ""}, "finish_reason": "length"}]}, True),
        ({"choices": [{"message": {"content": None}, "finish_reason": "length"}]}, True),
        ({"choices": [{"message": {"content": "partial"}, "finish_reason": "length"}]}, False),
        ({"choices": [{"message": {"content": ""}, "finish_reason": "stop"}]}, False),
        (
            {
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
                "output": [{"content": [{"text": ""}]}],
            },
            True,
        ),
        (
            {
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
                "output": [{"content": [{"text": "some"}]}],
            },
            False,
        ),
        ({"status": "completed", "output": []}, False),
        ([], False),
        (  # a tool call is an answer, even cut short
            {
                "choices": [
                    {
                        "message": {"content": None, "tool_calls": [{"id": "call_1"}]},
                        "finish_reason": "length",
                    }
                ]
            },
            False,
        ),
        (
            {
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
                "output": [{"type": "function_call", "arguments": "{"}],
            },
            False,
        ),
    ],
)
def test_starved_answers_are_recognised(answer, expected: bool) -> None:
    assert starved(answer) is expected


@pytest.fixture
def rules_gateway(tmp_path: Path, chicago: Simulator):
    config = tmp_path / "gomodel.yaml"
    config.write_text(
        "min_output_tokens: {'openai.gpt-oss-20b': 1}\n"  # no floor for 20b: it will starve
        "parameter_map: {'xai.grok-3': {max_tokens: max_completion_tokens}}\n"
        "providers:\n  oracle:\n"
        f"    base_url: {chicago.base_url()}\n    api_key: {CHICAGO_KEY}\n"
        "    models: [openai.gpt-oss-120b, openai.gpt-oss-20b, xai.grok-3]\n"
        "    models_mode: allowlist\n"
        "    project: ocid1.generativeaiproject.oc1.us-chicago-1.demo\n"
    )
    gateway = start_gateway(tmp_path / "gw", {}, "--set", f"gomodel_config={config}", ca=chicago.ca)
    yield gateway
    gateway.stop()


def test_a_small_budget_is_raised_so_the_reasoning_model_answers(
    rules_gateway: Gateway, chicago: Simulator
) -> None:
    reply = openai_client(rules_gateway).chat.completions.create(
        model="openai.gpt-oss-120b", messages=HELLO, max_tokens=10
    )
    assert reply.choices[0].message.content  # the simulator thinks for 200 tokens first
    assert chicago.posts()[0]["body"]["max_tokens"] == 1024
    assert "adjusted: max_tokens 10 -> 1024" in rules_gateway.log()


def test_a_starved_answer_carries_a_warning_header_and_a_log_line(
    rules_gateway: Gateway, chicago: Simulator
) -> None:
    raw = openai_client(rules_gateway).chat.completions.with_raw_response.create(
        model="openai.gpt-oss-20b", messages=HELLO, max_tokens=10
    )
    assert raw.parse().choices[0].finish_reason == "length"
    assert "raise max_tokens" in raw.headers["x-gomodel-warning"]
    assert "spent the whole output budget" in rules_gateway.log()


def test_a_starved_stream_is_logged(rules_gateway: Gateway) -> None:
    list(
        openai_client(rules_gateway).chat.completions.create(
            model="openai.gpt-oss-20b", messages=HELLO, max_tokens=10, stream=True
        )
    )
    deadline = time.monotonic() + 5
    while "spent the whole output budget" not in rules_gateway.log():
        assert time.monotonic() < deadline, rules_gateway.log()
        time.sleep(0.1)


def test_parameter_map_renames_for_its_model(rules_gateway: Gateway, chicago: Simulator) -> None:
    openai_client(rules_gateway).chat.completions.create(
        model="xai.grok-3", messages=HELLO, max_tokens=50
    )
    body = chicago.posts()[0]["body"]
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body


def test_the_provider_project_is_sent_unless_the_client_names_one(
    rules_gateway: Gateway, chicago: Simulator
) -> None:
    api = openai_client(rules_gateway)
    api.responses.create(model="openai.gpt-oss-120b", input="hi")
    api.responses.create(
        model="openai.gpt-oss-120b",
        input="hi",
        extra_headers={"OpenAI-Project": "ocid1.generativeaiproject.oc1..mine"},
    )
    sent = [r["headers"].get("openai-project") for r in chicago.posts()]
    assert sent == [
        "ocid1.generativeaiproject.oc1.us-chicago-1.demo",
        "ocid1.generativeaiproject.oc1..mine",
    ]


# -- the doctor -----------------------------------------------------------------------------------


def run_doctor(chicago: Simulator, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "doctor.py"), "--oracle-ca", str(chicago.ca)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(ORACLE_BASE_URL=chicago.base_url(), ORACLE_MODELS="xai.grok-4", **env),
    )


def test_the_doctor_passes_a_working_setup(chicago: Simulator) -> None:
    result = run_doctor(chicago, ORACLE_API_KEY=CHICAGO_KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("configuration", "DNS", "TLS", "API key", "3 verification calls"):
        assert any(
            line.startswith(step) and " PASS " in line for line in result.stdout.splitlines()
        ), (step, result.stdout)
    assert CHICAGO_KEY not in result.stdout


def test_the_doctor_explains_a_key_oracle_refuses(chicago: Simulator) -> None:
    result = run_doctor(chicago, ORACLE_API_KEY="sk-key-from-another-region")
    assert result.returncode == 1
    key_line = next(line for line in result.stdout.splitlines() if line.startswith("API key"))
    assert " FAIL " in key_line and "IAM policy" in key_line and "region" in key_line
    assert "sk-key-from-another-region" not in result.stdout


def test_the_doctor_refuses_redirects_and_the_key_goes_nowhere(
    chicago: Simulator, capture: CaptureServer
) -> None:
    steal = capture_url(capture, "/s?t=x")
    chicago.configure(
        list_models=True,
        redirects={"models": steal, "chat/completions": steal, "responses": steal},
    )
    result = run_doctor(chicago, ORACLE_API_KEY=CHICAGO_KEY)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for step in ("API key", "/models"):
        line = next(line for line in lines if line.startswith(step))
        assert " FAIL " in line, line
        assert "answered 302, a redirect to 127.0.0.1: redirect refused" in line, line
    gateway_line = next(line for line in lines if line.startswith("3 verification calls"))
    assert " FAIL " in gateway_line and "HTTP 502" in gateway_line, gateway_line
    assert capture.seen() == []
    assert CHICAGO_KEY not in result.stdout and "/s?t=x" not in result.stdout


def test_the_doctor_names_an_unresolved_variable(chicago: Simulator, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "providers:\n  oracle-eu:\n    region: eu-frankfurt-1\n    api_key: ${EU_KEY}\n"
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "doctor.py"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode == 1
    assert "api_key is empty (EU_KEY not set)" in result.stdout
