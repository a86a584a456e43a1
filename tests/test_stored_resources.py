"""Oracle's stored resources end to end with the openai SDK: responses kept, listed and deleted,
background responses polled and their streams resumed, conversations, files, and two regions
whose ids stay where they were created. Real mitmdump, real simulators (one per region);
assertions look at what each simulator received."""

import http.client
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import CHICAGO_MODELS, CLIENT_KEY, FRANKFURT_MODELS, openai_client, two_region_env
from openai import OpenAI
from processes import Gateway, Simulator, run_mitmdump_until_exit, start_gateway

PROJECT = "ocid1.generativeaiproject.oc1.us-chicago-1.amaaaaaastoredresources"
RESOURCES_YAML = f"""
providers:
  oracle:
    base_url: ${{CHICAGO_URL}}
    api_key: ${{CHICAGO_KEY}}
    project: {PROJECT}
    models: {CHICAGO_MODELS}
    models_mode: allowlist
  oracle-eu:
    base_url: ${{FRANKFURT_URL}}
    api_key: ${{FRANKFURT_KEY}}
    project: {PROJECT}
    models: {FRANKFURT_MODELS}
    models_mode: allowlist
"""
MODEL = "xai.grok-4"  # Chicago only
SHARED_MODEL = "openai.gpt-oss-120b"  # both regions; Chicago preferred
POLL_SECONDS = 10.0


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    simulators: tuple[Simulator, Simulator],
    shared_ca: Path,
) -> Iterator[Gateway]:
    """Chicago (configured on /20231130/actions/v1) first, Frankfurt (on /openai/v1), both with
    a project, as Oracle's stored resources need one."""
    workdir = tmp_path_factory.mktemp("resources")
    config = workdir / "gomodel.yaml"
    config.write_text(RESOURCES_YAML)
    gateway = start_gateway(
        workdir, two_region_env(simulators), "--set", f"gomodel_config={config}", ca=shared_ca
    )
    yield gateway
    gateway.stop()


@pytest.fixture
def client(gateway: Gateway, chicago: Simulator, frankfurt: Simulator) -> OpenAI:
    return openai_client(gateway)


def received(simulator: Simulator) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in simulator.requests()]


def test_a_stored_response_is_retrieved_listed_and_deleted(
    client: OpenAI, chicago: Simulator, frankfurt: Simulator
) -> None:
    created = client.responses.create(model=MODEL, input="remember me")

    fetched = client.responses.retrieve(created.id)
    items = client.responses.input_items.list(created.id)
    deleted = client.delete(f"/responses/{created.id}", cast_to=dict)

    assert fetched.id == created.id and fetched.output_text == created.output_text
    assert [item.content[0].text for item in items.data] == ["remember me"]
    assert deleted == {"id": created.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    resource = f"/openai/v1/responses/{created.id}"  # derived from Chicago's actions/v1 base
    assert received(chicago) == [
        ("POST", "/20231130/actions/v1/responses"),
        ("GET", resource),
        ("GET", f"{resource}/input_items"),
        ("DELETE", resource),
        ("GET", resource),
    ]
    assert all(r["headers"]["openai-project"] == PROJECT for r in chicago.requests())
    assert frankfurt.requests() == []


def test_a_background_response_is_polled_to_completed(client: OpenAI) -> None:
    created = client.responses.create(model=MODEL, input="take your time", background=True)

    seen = [created.status]
    deadline = time.monotonic() + POLL_SECONDS
    while seen[-1] in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.05)
        seen.append(client.responses.retrieve(created.id).status)

    assert seen[0] == "queued" and seen[-1] == "completed", seen
    assert "take your time" in client.responses.retrieve(created.id).output_text


def test_a_cancelled_background_response_stays_cancelled(
    client: OpenAI, chicago: Simulator
) -> None:
    chicago.configure(background_seconds=30)
    created = client.responses.create(model=MODEL, input="never mind", background=True)

    cancelled = client.responses.cancel(created.id)

    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(created.id).status == "cancelled"


def test_a_background_stream_resumes_after_its_third_event(
    client: OpenAI, gateway: Gateway, chicago: Simulator
) -> None:
    first: list = []
    with client.responses.create(
        model=MODEL, input="stream and resume", background=True, stream=True
    ) as stream:
        for event in stream:
            first.append(event)
            if len(first) == 3:
                break
    response_id = first[0].response.id

    resumed = list(client.responses.retrieve(response_id, stream=True, starting_after=2))

    numbers = [e.sequence_number for e in first + resumed]
    assert numbers == list(range(len(numbers)))
    assert resumed[-1].type == "response.completed"
    assert "stream and resume" in resumed[-1].response.output_text
    assert ("GET", f"/openai/v1/responses/{response_id}?starting_after=2&stream=true") in (
        received(chicago)
    )
    # The resumed stream went the streams' way: its usage is in the access log line.
    line = next(
        line for line in gateway.log().splitlines() if f"GET /v1/responses/{response_id}" in line
    )
    assert " in=" in line and " in=-" not in line and "stream" in line


def test_a_conversation_carries_two_responses(client: OpenAI, chicago: Simulator) -> None:
    conversation = client.conversations.create(metadata={"topic": "gateway"})

    first = client.responses.create(model=MODEL, input="first turn", conversation=conversation.id)
    second = client.responses.create(model=MODEL, input="second turn", conversation=conversation.id)
    items = client.conversations.items.list(conversation.id, order="asc")

    assert "continuing" not in first.output_text
    assert "(continuing 2 earlier items)" in second.output_text
    assert [item.role for item in items.data] == ["user", "assistant", "user", "assistant"]
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "gateway"}
    assert client.conversations.delete(conversation.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)


def test_a_file_is_uploaded_listed_fetched_and_deleted(
    client: OpenAI, chicago: Simulator, frankfurt: Simulator
) -> None:
    data = os.urandom(1024 * 1024)

    uploaded = client.files.create(file=("data.bin", data), purpose="user_data")
    listed = client.files.list(purpose="user_data")
    fetched = client.files.retrieve(uploaded.id)
    content = client.files.content(uploaded.id).read()
    deleted = client.files.delete(uploaded.id)

    assert uploaded.bytes == len(data) and uploaded.filename == "data.bin"
    assert [f.id for f in listed.data] == [uploaded.id]
    assert fetched.id == uploaded.id
    assert content == data
    assert deleted.deleted
    upload = chicago.requests()[0]
    assert upload["path"] == "/openai/v1/files"
    assert upload["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert upload["raw_body_size"] > len(data)
    assert frankfurt.requests() == []


def test_an_upload_over_the_body_limit_is_refused_before_oracle(
    gateway: Gateway, client: OpenAI, chicago: Simulator
) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.bin", b"x" * (11 * 1024 * 1024)), purpose="user_data")

    assert refused.value.status_code == 413
    assert chicago.requests() == []


def test_a_pinned_eu_response_is_followed_up_in_the_eu(
    client: OpenAI, chicago: Simulator, frankfurt: Simulator
) -> None:
    created = client.responses.create(model=f"oracle-eu/{SHARED_MODEL}", input="bonjour")

    fetched = client.responses.retrieve(created.id)
    follow_up = client.responses.create(
        model=SHARED_MODEL, input="and then?", previous_response_id=created.id
    )

    assert fetched.id == created.id
    assert "(continuing 2 earlier items)" in follow_up.output_text
    assert received(frankfurt) == [
        ("POST", "/openai/v1/responses"),
        ("GET", f"/openai/v1/responses/{created.id}"),
        ("POST", "/openai/v1/responses"),
    ]
    assert chicago.requests() == []


def test_a_follow_up_naming_a_model_its_owner_lacks_is_refused(
    client: OpenAI, chicago: Simulator, frankfurt: Simulator
) -> None:
    created = client.responses.create(model=f"oracle-eu/{SHARED_MODEL}", input="bonjour")

    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input="next", previous_response_id=created.id)

    assert refused.value.code == "model_not_at_owner"
    assert "oracle-eu" in refused.value.message
    assert len(frankfurt.requests()) == 1 and chicago.requests() == []


def test_an_unknown_id_goes_to_the_first_provider_and_its_404_passes(
    client: OpenAI, chicago: Simulator, frankfurt: Simulator
) -> None:
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-made-elsewhere")

    assert received(chicago) == [("GET", "/openai/v1/files/file-made-elsewhere")]
    assert frankfurt.requests() == []


def test_an_endpoint_oracle_does_not_offer_is_named_in_a_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        client.batches.list()

    assert refused.value.code == "not_offered_by_oracle"
    assert "/v1/batches" in refused.value.message


@pytest.mark.parametrize(
    "path",
    [
        "/v1/responses/../../models",
        "/v1/responses/..%2F..%2Fmodels",
        "/v1/files/file-1%2Fcontent",
        "/v1/files/file-1%3Fpurpose=x/content",
        "/v1/conversations/conv%23x/items",
        "/v1/responses/" + "r" * 10_000,
        "/v1/responses/resp_1?stream=true&starting_after=1%26limit%3D5",
        "/v1/files?purpose=x&injected=1",
    ],
    ids=["dotdot", "encoded-slash", "slash-in-id", "query-in-id", "fragment", "10kB", "&", "param"],
)
def test_hostile_ids_get_400_and_reach_no_simulator(
    gateway: Gateway, path: str, chicago: Simulator, frankfurt: Simulator
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        connection.request("GET", path, headers={"authorization": f"Bearer {CLIENT_KEY}"})
        answer = connection.getresponse()
        answer.read()
    finally:
        connection.close()

    assert answer.status == 400
    assert chicago.requests() == [] and frankfurt.requests() == []


def test_a_restart_keeps_which_region_owns_an_id(
    tmp_path: Path,
    simulators: tuple[Simulator, Simulator],
    chicago: Simulator,
    frankfurt: Simulator,
    shared_ca: Path,
) -> None:
    """The owners are kept in the usage ledger and read back when the gateway starts."""
    config = tmp_path / "gomodel.yaml"
    config.write_text(RESOURCES_YAML)
    options = ("--set", f"gomodel_config={config}", "--set", f"gomodel_usage_db={tmp_path}/u.db")
    first = start_gateway(tmp_path / "a", two_region_env(simulators), *options, ca=shared_ca)
    try:
        created = openai_client(first).responses.create(
            model=f"oracle-eu/{SHARED_MODEL}", input="bonjour"
        )
    finally:
        first.stop()
    before = len(frankfurt.requests())
    second = start_gateway(tmp_path / "b", two_region_env(simulators), *options, ca=shared_ca)
    try:
        fetched = openai_client(second).responses.retrieve(created.id)
    finally:
        second.stop()
    assert fetched.id == created.id
    after = [(r["method"], r["path"]) for r in frankfurt.requests()[before:]]
    assert after == [("GET", f"/openai/v1/responses/{created.id}")]
    assert chicago.requests() == []


# -- client keys: each reaches what it created -----------------------------------------------------

TEAMS = (
    "server:\n  master_keys: [gm-admin-51c]\n  keys:\n"
    "    alpha: {key: gm-alpha-7e2}\n    beta: {key: gm-beta-90d}\n"
)


def start_keyed(workdir: Path, simulators, shared_ca: Path, *options: str) -> Gateway:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "gomodel.yaml"
    config.write_text(TEAMS + RESOURCES_YAML)
    return start_gateway(
        workdir / "gw",
        two_region_env(simulators),
        "--set",
        f"gomodel_config={config}",
        *options,
        ca=shared_ca,
    )


def test_a_client_key_reaches_only_what_it_created(
    tmp_path: Path, simulators, chicago: Simulator, shared_ca: Path
) -> None:
    gateway = start_keyed(tmp_path, simulators, shared_ca)
    try:
        alpha, beta = openai_client(gateway, "gm-alpha-7e2"), openai_client(gateway, "gm-beta-90d")
        admin = openai_client(gateway, "gm-admin-51c")
        secret = alpha.files.create(file=("a.txt", b"ALPHA SECRET"), purpose="user_data")
        mine = beta.files.create(file=("b.txt", b"beta"), purpose="user_data")
        answer = alpha.responses.create(model=MODEL, input="hi")
        received_before = len(chicago.requests())

        for attempt in (
            lambda: beta.files.retrieve(secret.id),
            lambda: beta.files.content(secret.id),
            lambda: beta.files.delete(secret.id),
            lambda: beta.responses.retrieve(answer.id),
            lambda: beta.responses.create(model=MODEL, input="x", previous_response_id=answer.id),
        ):
            with pytest.raises(openai.NotFoundError) as refused:
                attempt()
            assert refused.value.code == "resource_not_found"
        assert len(chicago.requests()) == received_before  # none of it reached Oracle
        assert [f.id for f in beta.files.list().data] == [mine.id]
        assert {f.id for f in admin.files.list().data} == {secret.id, mine.id}
        assert alpha.files.content(secret.id).read() == b"ALPHA SECRET"
    finally:
        gateway.stop()


def test_a_client_key_named_like_the_gateways_own_callers_stops_the_gateway(
    tmp_path: Path, simulators
) -> None:
    """A key named `replay` was an admin (every key's files, /metrics): reserved names are
    refused at load, naming file and key."""
    config = tmp_path / "gomodel.yaml"
    config.write_text(TEAMS + "    replay: {key: gm-replay-3c8}\n" + RESOURCES_YAML)
    result = run_mitmdump_until_exit(
        tmp_path / "gw", two_region_env(simulators), "--set", f"gomodel_config={config}"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"{config}: server.keys.replay: a key's name" in output
    assert "Traceback" not in output and "gm-replay-3c8" not in output


def test_a_client_key_cannot_choose_the_oracle_project(
    tmp_path: Path, simulators, chicago: Simulator, shared_ca: Path
) -> None:
    other = "ocid1.generativeaiproject.oc1.us-chicago-1.amaaaaaaanotherteam"
    gateway = start_keyed(tmp_path, simulators, shared_ca)
    try:
        for key in ("gm-alpha-7e2", "gm-admin-51c"):
            client = openai_client(gateway, key).with_options(
                default_headers={"OpenAI-Project": other}
            )
            client.responses.create(model=MODEL, input="hi")
    finally:
        gateway.stop()
    sent = [r["headers"]["openai-project"] for r in chicago.requests()]
    assert sent == [PROJECT, other]  # the client key gets the configured one; a master key may


def test_gateways_sharing_a_ledger_find_each_others_ids(
    tmp_path: Path, simulators, frankfurt: Simulator, shared_ca: Path
) -> None:
    ledger = f"gomodel_usage_db={tmp_path / 'usage.db'}"
    first = start_keyed(tmp_path / "a", simulators, shared_ca, "--set", ledger)
    second = start_keyed(tmp_path / "b", simulators, shared_ca, "--set", ledger)
    try:
        created = openai_client(first, "gm-alpha-7e2").responses.create(
            model=f"oracle-eu/{SHARED_MODEL}", input="bonjour"
        )
        time.sleep(1.5)  # the ledger writes about once a second
        fetched = openai_client(second, "gm-alpha-7e2").responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            openai_client(second, "gm-beta-90d").responses.retrieve(created.id)
    finally:
        first.stop()
        second.stop()
    assert fetched.id == created.id
    assert received(frankfurt)[-1] == ("GET", f"/openai/v1/responses/{created.id}")


def test_a_client_keys_listing_pages_through_its_own_items_only(
    tmp_path: Path, simulators, shared_ca: Path
) -> None:
    gateway = start_keyed(tmp_path, simulators, shared_ca)
    try:
        alpha, beta = openai_client(gateway, "gm-alpha-7e2"), openai_client(gateway, "gm-beta-90d")
        mine = [alpha.files.create(file=(f"a{n}", b"a"), purpose="user_data").id for n in range(3)]
        theirs = [beta.files.create(file=(f"b{n}", b"b"), purpose="user_data").id for n in range(2)]

        paged = [f.id for f in alpha.files.list(limit=1)]  # the SDK's auto-pager, page by page
        page = alpha.files.list(limit=2)
        other = beta.files.list()
    finally:
        gateway.stop()
    assert sorted(paged) == sorted(mine)
    assert len(page.data) == 2 and page.has_more
    ids = {other.first_id, other.last_id, *(f.id for f in other.data)}  # type: ignore[attr-defined]
    assert ids <= set(theirs)  # never another key's id, not even as a page bound


def post_raw(gateway: Gateway, key: str, path: str, body: bytes) -> tuple[int, dict]:
    """A body as bytes (the SDK would spell every field plainly): its status and error."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    connection.request("POST", path, body, headers)
    reply = connection.getresponse()
    document = json.loads(reply.read() or b"{}")
    return reply.status, document.get("error") or {}


def test_a_client_key_reaches_no_other_keys_state_whatever_the_body_says(
    tmp_path: Path, simulators, chicago: Simulator, shared_ca: Path
) -> None:
    """Escaped or case-varied field names, and ids inside the input and the tools, are read as
    Oracle reads them: another key's id there is a 404 before anything is sent."""
    gateway = start_keyed(tmp_path, simulators, shared_ca)
    try:
        alpha = openai_client(gateway, "gm-alpha-7e2")
        answer = alpha.responses.create(model=MODEL, input="alpha's secret plan")
        talk = alpha.conversations.create()
        secret = alpha.files.create(file=("a.txt", b"ALPHA SECRET"), purpose="user_data")
        box = alpha.containers.create(name="alpha-box")
        received_before = len(chicago.requests())
        file_part = {"type": "input_file", "file_id": secret.id}
        refused = {
            "escaped previous_response_id": (
                f'{{"model": "{MODEL}", "input": "x", "previous_respons\\u0065_id": "{answer.id}"}}'
            ),
            "escaped conversation": (
                f'{{"model": "{MODEL}", "input": "x", "conv\\u0065rsation": "{talk.id}"}}'
            ),
            "conversation object": json.dumps(
                {"model": MODEL, "input": "x", "conversation": {"id": talk.id}}
            ),
            "input_file": json.dumps(
                {"model": MODEL, "input": [{"role": "user", "content": [file_part]}]}
            ),
            "vector store": json.dumps(
                {
                    "model": MODEL,
                    "input": "x",
                    "tools": [{"type": "file_search", "vector_store_ids": ["vs_someone"]}],
                }
            ),
            "container": json.dumps(
                {
                    "model": MODEL,
                    "input": "x",
                    "tools": [{"type": "code_interpreter", "container": box.id}],
                }
            ),
            "container's files": json.dumps(
                {
                    "model": MODEL,
                    "input": "x",
                    "tools": [
                        {
                            "type": "code_interpreter",
                            "container": {"type": "auto", "file_ids": [secret.id]},
                        }
                    ],
                }
            ),
        }
        answers = {
            name: post_raw(gateway, "gm-beta-90d", "/v1/responses", body.encode())
            for name, body in refused.items()
        }
        answers["chat file part"] = post_raw(
            gateway,
            "gm-beta-90d",
            "/v1/chat/completions",
            json.dumps(
                {
                    "model": MODEL,
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "file", "file": {"file_id": secret.id}}],
                        }
                    ],
                }
            ).encode(),
        )
        invalid = {
            "Previous_Response_Id": {"Previous_Response_Id": answer.id},
            "Conversation": {"Conversation": talk.id},
            "previous_response_id": {"previous_response_id": "../x"},
            "conversation": {"conversation": {"id": 5}},
        }
        invalid_answers = {
            name: post_raw(
                gateway,
                "gm-beta-90d",
                "/v1/responses",
                json.dumps({"model": MODEL, "input": "x", **fields}).encode(),
            )
            for name, fields in invalid.items()
        }
        received_after = len(chicago.requests())
        own = {  # the owner's own ids, spelled so, still go
            name: post_raw(gateway, "gm-alpha-7e2", "/v1/responses", refused[name].encode())[0]
            for name in ("escaped previous_response_id", "escaped conversation", "input_file")
        }
    finally:
        gateway.stop()
    assert {name: (status, error.get("code")) for name, (status, error) in answers.items()} == {
        name: (404, "resource_not_found") for name in answers
    }
    assert {
        name: (status, error.get("param")) for name, (status, error) in invalid_answers.items()
    } == {name: (400, name.lower()) for name in invalid}
    assert received_after == received_before  # none of it reached Oracle
    assert own == dict.fromkeys(own, 200)


def test_another_keys_files_reach_oracle_through_no_stored_resource_or_reference(
    tmp_path: Path, simulators, chicago: Simulator, shared_ca: Path
) -> None:
    """Files attached where a later call makes Oracle read them (conversation items, a
    container's files, a prompt's variables, an untyped part), fields only a lenient parser
    reads, and input items given by reference: refused before anything is sent."""
    gateway = start_keyed(tmp_path, simulators, shared_ca)
    try:
        alpha = openai_client(gateway, "gm-alpha-7e2")
        secret = alpha.files.create(file=("a.txt", b"ALPHA SECRET"), purpose="user_data")
        answer = alpha.responses.create(model=MODEL, input="alpha's secret plan")
        beta_talk = openai_client(gateway, "gm-beta-90d").conversations.create()
        received_before = len(chicago.requests())
        part = {"type": "input_file", "file_id": secret.id}
        items = [{"type": "message", "role": "user", "content": [part]}]
        model_call = {"model": MODEL, "input": "x"}
        not_found = {
            "conversation's items": ("/v1/conversations", {"items": items}),
            "items added": (f"/v1/conversations/{beta_talk.id}/items", {"items": items}),
            "container's files": ("/v1/containers", {"name": "b", "file_ids": [secret.id]}),
            "prompt variables": (
                "/v1/responses",
                {**model_call, "prompt": {"id": "pmpt_1", "variables": {"doc": part}}},
            ),
            "instructions as items": ("/v1/responses", {**model_call, "instructions": items}),
            "untyped part": (
                "/v1/responses",
                {"model": MODEL, "input": [{"role": "user", "content": [{"file_id": secret.id}]}]},
            ),
            "type in capitals": (
                "/v1/responses",
                {
                    "model": MODEL,
                    "input": [{"role": "user", "content": [{**part, "type": "INPUT_FILE"}]}],
                },
            ),
        }
        answers = {
            name: post_raw(gateway, "gm-beta-90d", path, json.dumps(body).encode())
            for name, (path, body) in not_found.items()
        }
        lenient = {  # what only a lenient parser reads as a guarded field
            "previous_response_id": f'{{"model": "{MODEL}", "input": "x", '
            f'"previous_response_id\\u0000": "{answer.id}"}}',
            "previous_response_id ": json.dumps({**model_call, "previousResponseId": answer.id}),
            "file_id": json.dumps(
                {"model": MODEL, "input": [{"role": "user", "content": [{"fileId": secret.id}]}]}
            ),
            "max_output_tokens": json.dumps({**model_call, "max_output_tokens": 5000.0}),
            "NaN": f'{{"model": "{MODEL}", "input": "x", "temperature": NaN}}',
        }
        lenient_answers = {
            name: post_raw(gateway, "gm-beta-90d", "/v1/responses", body.encode())
            for name, body in lenient.items()
        }
        reference = {"type": "item_reference", "id": "msg_someone"}
        referenced = {
            "item_reference": ("/v1/responses", {"model": MODEL, "input": [reference]}),
            "bare reference": ("/v1/responses", {"model": MODEL, "input": [{"id": "msg_x"}]}),
            "referenced item": (
                f"/v1/conversations/{beta_talk.id}/items",
                {"items": [reference]},
            ),
        }
        referenced_answers = {
            name: post_raw(gateway, "gm-beta-90d", path, json.dumps(body).encode())
            for name, (path, body) in referenced.items()
        }
        received_after = len(chicago.requests())
        own = post_raw(
            gateway, "gm-alpha-7e2", "/v1/conversations", json.dumps({"items": items}).encode()
        )
    finally:
        gateway.stop()
    assert {name: (status, error.get("code")) for name, (status, error) in answers.items()} == {
        name: (404, "resource_not_found") for name in answers
    }
    assert {name: status for name, (status, _) in lenient_answers.items()} == dict.fromkeys(
        lenient, 400
    )
    assert {name: error.get("param") for name, (_, error) in lenient_answers.items()} == {
        "previous_response_id": "previous_response_id",
        "previous_response_id ": "previous_response_id",
        "file_id": "file_id",
        "max_output_tokens": "max_output_tokens",
        "NaN": None,
    }
    assert {
        name: (status, error.get("code")) for name, (status, error) in referenced_answers.items()
    } == {name: (403, "item_reference_not_allowed") for name in referenced}
    assert received_after == received_before  # none of it reached Oracle
    assert own[0] == 200  # the owner attaches its own file
