"""The pure parts of stored resources: the endpoint table and its checks, Oracle's base paths,
the affinity store, and routing by owner."""

import json

import pytest
from gomodel_gateway.affinity import AffinityStore
from gomodel_gateway.basepaths import openai_base_url, resource_provider
from gomodel_gateway.errors import GatewayError
from gomodel_gateway.inventory import build_inventory
from gomodel_gateway.providers import Provider
from gomodel_gateway.request_checks import parse_json_object
from gomodel_gateway.resource_routing import (
    check_body,
    created,
    deleted,
    follow_owner,
    ids_named,
    route_resource,
)
from gomodel_gateway.resources import OPERATIONS, parse
from gomodel_gateway.routing import Endpoint, Request, Route, classify, route
from gomodel_gateway.stored_ids import stored_ids

HOST = "https://inference.generativeai.us-chicago-1.oci.oraclecloud.com"
US = Provider("oracle", f"{HOST}/20231130/actions/v1", "sk-us", ("xai.grok-4", "shared.model"))
EU = Provider(
    "oracle-eu",
    "https://inference.generativeai.eu-frankfurt-1.oci.oraclecloud.com/openai/v1",
    "sk-eu",
    ("shared.model",),
)
ELSEWHERE = Provider("other", "https://llm.example.com/v1", "sk-x", ("xai.grok-4",))
INVENTORY = build_inventory((US, EU), {}, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("method", "path", "upstream", "owner", "query"),
    [
        ("GET", "/v1/responses/resp_1", "responses/resp_1", "resp_1", ""),
        ("DELETE", "/v1/responses/resp_1", "responses/resp_1", "resp_1", ""),
        ("POST", "/v1/responses/resp_1/cancel", "responses/resp_1/cancel", "resp_1", ""),
        (
            "GET",
            "/v1/responses/resp_1/input_items?limit=5&order=asc",
            "responses/resp_1/input_items",
            "resp_1",
            "limit=5&order=asc",
        ),
        ("GET", "/v1/responses/r?include[]=a%20b", "responses/r", "r", "include%5B%5D=a+b"),
        ("POST", "/v1/conversations", "conversations", None, ""),
        ("POST", "/v1/conversations/conv_1/items", "conversations/conv_1/items", "conv_1", ""),
        ("DELETE", "/v1/conversations/c/items/msg_2", "conversations/c/items/msg_2", "c", ""),
        ("POST", "/v1/files", "files", None, ""),
        (
            "GET",
            "/v1/files/file-fra-d5dd80c5/content",
            "files/file-fra-d5dd80c5/content",
            "file-fra-d5dd80c5",
            "",
        ),
        ("GET", "/v1/containers/cntr_1", "containers/cntr_1", "cntr_1", ""),
        ("POST", "/v1/vector_stores/vs_1/search", "vector_stores/vs_1/search", "vs_1", ""),
        ("GET", "/v1/files/ocid1.file.oc1.x", "files/ocid1.file.oc1.x", "ocid1.file.oc1.x", ""),
    ],
)
def test_a_resource_path_maps_to_its_upstream_path_and_owner(
    method: str, path: str, upstream: str, owner: str | None, query: str
) -> None:
    request = classify(method, path)

    assert request.resource is not None
    assert request.resource.path == upstream
    assert request.resource.owner_id == owner
    assert request.resource.query == query == request.query


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/files/..", 400, "invalid_id"),
        ("GET", "/v1/files/../models", 400, "invalid_id"),
        ("GET", "/v1/files/a%2Fb", 400, "invalid_id"),
        ("GET", "/v1/files/.hidden", 400, "invalid_id"),
        ("GET", "/v1/files/a b", 400, "invalid_id"),
        ("GET", "/v1/files//content", 400, "invalid_id"),
        ("GET", "/v1/files/" + "f" * 257, 400, "invalid_id"),
        ("GET", "/v1/files?limit=1&evil=2", 400, "invalid_query"),
        ("GET", "/v1/files?limit", 400, "invalid_query"),
        ("GET", "/v1/files?purpose=%00", 400, "invalid_query"),
        ("GET", "/v1/files?purpose=" + "p" * 300, 400, "invalid_query"),
        ("GET", "/v1/responses/r?starting_after=-1", 400, "invalid_query"),
        ("GET", "/v1/files/f/other", 404, "not_offered_by_oracle"),
        ("GET", "/v1/vector_stores/vs_1", 404, "not_offered_by_oracle"),
        ("POST", "/v1/batches", 404, "not_offered_by_oracle"),
        ("GET", "/v1/assistants/asst_1", 404, "not_offered_by_oracle"),
        ("PUT", "/v1/files/f", 405, "method_not_allowed"),
        ("DELETE", "/v1/files", 405, "method_not_allowed"),
    ],
)
def test_a_hostile_or_unserved_resource_request_is_refused(
    method: str, path: str, status: int, code: str
) -> None:
    with pytest.raises(GatewayError) as refused:
        classify(method, path)

    assert (refused.value.status, refused.value.code) == (status, code)


def test_a_path_outside_the_resource_families_is_not_a_resource() -> None:
    assert parse("GET", "/v1/unknown/x", "") is None


def test_only_a_stored_responses_stream_query_resumes_a_stream() -> None:
    resumed = classify("GET", "/v1/responses/r?stream=true&starting_after=3").resource
    plain = classify("GET", "/v1/responses/r?stream=false").resource

    assert resumed is not None and resumed.stream
    assert plain is not None and not plain.stream


def test_every_operation_family_is_an_endpoint() -> None:
    assert {Endpoint(op.family) for op in OPERATIONS}


@pytest.mark.parametrize(
    ("base_url", "served"),
    [
        (f"{HOST}/20231130/actions/v1", f"{HOST}/openai/v1"),
        (f"{HOST}/openai/v1", f"{HOST}/openai/v1"),
        ("https://proxy.corp/oci/20231130/actions/v1", "https://proxy.corp/oci/openai/v1"),
        ("https://llm.example.com/v1", None),
    ],
)
def test_the_openai_base_is_derived_from_either_oracle_base(
    base_url: str, served: str | None
) -> None:
    assert openai_base_url(base_url) == served


def test_a_resource_provider_keeps_its_key_and_project() -> None:
    served = resource_provider(US)

    assert served is not None
    assert (served.name, served.api_key, served.base_url) == (
        "oracle",
        "sk-us",
        f"{HOST}/openai/v1",
    )
    assert resource_provider(ELSEWHERE) is None


def test_the_affinity_store_forgets_the_least_recently_used_first() -> None:
    store = AffinityStore(Clock(), capacity=2)
    store.remember("a", "oracle", "file", "ci")
    store.remember("b", "oracle", "file", "ci")

    store.owner("a")  # used: b is now the oldest
    store.remember("c", "oracle-eu", "response", "ci")

    assert store.owner("b") is None
    assert [store.owner(i).provider for i in ("a", "c")] == ["oracle", "oracle-eu"]


def test_the_affinity_store_forgets_an_id_idle_too_long() -> None:
    clock = Clock()
    store = AffinityStore(clock, max_idle=10)
    store.remember("a", "oracle", "file", "ci")

    clock.now = 9
    kept = store.owner("a")
    clock.now = 20
    still = store.owner("a")  # used at 9: idle 11 s

    assert kept is not None and still is None and len(store) == 0


def test_the_affinity_store_reports_new_owners_not_seeded_or_known_ones() -> None:
    reported = []
    store = AffinityStore(Clock(), on_remember=lambda *entry: reported.append(entry))
    store.seed([("old", "oracle", "conversation", "ci")])

    store.remember("old", "oracle", "conversation", "ci")
    store.remember("new", "oracle-eu", "file", "ci")
    store.remember("new", "oracle-eu", "file", "ci")
    store.forget("old")

    assert reported == [("new", "oracle-eu", "file", "ci")]
    assert store.owner("old") is None and store.owner("new").kind == "file"


def test_a_known_id_is_routed_to_its_owner_only() -> None:
    store = AffinityStore(Clock())
    store.remember("file-1", "oracle-eu", "file", "ci")
    resource = classify("GET", "/v1/files/file-1/content").resource
    assert resource is not None

    planned = route_resource(INVENTORY, store, "GET", resource, b"")

    assert [t.provider.name for t in planned.candidates] == ["oracle-eu"]
    assert planned.upstream_path == "files/file-1/content" and planned.method == "GET"


def test_an_unknown_id_goes_to_the_first_provider_serving_the_resources() -> None:
    inventory = build_inventory((ELSEWHERE, US, EU), {}, 0)
    resource = classify("GET", "/v1/files/file-x").resource
    assert resource is not None

    planned = route_resource(inventory, AffinityStore(Clock()), "GET", resource, b"")

    assert planned.target.provider.name == "oracle"
    assert planned.target.provider.base_url == f"{HOST}/openai/v1"


def test_a_resumed_response_stream_is_a_responses_stream() -> None:
    resource = classify("GET", "/v1/responses/r?stream=true").resource
    assert resource is not None

    planned = route_resource(INVENTORY, AffinityStore(Clock()), "GET", resource, b"")

    assert planned.stream and planned.endpoint is Endpoint.RESPONSES


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (b'{"previous_response_id": "resp_1"}', [("previous_response_id", "resp_1")]),
        (b'{"conversation": "conv_1"}', [("conversation", "conv_1")]),
        (b'{"conversation": {"id": "conv_1"}}', [("conversation", "conv_1")]),
        (b'{"input": "no state"}', []),
        (b'{"previous_response_id": null, "conversation": null}', []),
        # read as Oracle reads them: an escape is the same key
        (b'{"previous_respons\\u0065_id": "resp_1"}', [("previous_response_id", "resp_1")]),
        (b'{"conv\\u0065rsation": "conv_1"}', [("conversation", "conv_1")]),
        (b'{"conversation": {"\\u0069d": "conv_1"}}', [("conversation", "conv_1")]),
    ],
)
def test_a_responses_body_names_the_state_it_continues(body: bytes, found: list) -> None:
    assert list(stored_ids(parse_json_object(body), responses=True).followups) == found


def responses_route(model: str, extra: str) -> Route:
    body = f'{{"model": "{model}", "input": "hi", {extra}}}'.encode()
    return route(INVENTORY, Request(Endpoint.RESPONSES), body)


@pytest.mark.parametrize(
    ("every", "named"),
    [
        (True, ["resp_1", "file-1", "cntr_1", "vs_1"]),  # a client key's: all of them checked
        (False, ["resp_1"]),  # a master key's: only what routes it (no lookups for the rest)
    ],
)
def test_the_ids_a_model_call_names(every: bool, named: list[str]) -> None:
    body = {
        "model": "shared.model",
        "previous_response_id": "resp_1",
        "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}],
        "tools": [
            {"type": "code_interpreter", "container": "cntr_1"},
            {"type": "file_search", "vector_store_ids": ["vs_1"]},
        ],
    }
    planned = route(INVENTORY, Request(Endpoint.RESPONSES), json.dumps(body).encode())
    assert ids_named(Request(Endpoint.RESPONSES), planned, every) == named


def test_a_follow_up_goes_to_its_owner_whatever_the_model_prefers() -> None:
    store = AffinityStore(Clock())
    store.remember("resp_eu", "oracle-eu", "response", "ci")
    planned = responses_route("shared.model", '"previous_response_id": "resp_eu"')

    followed = follow_owner(planned, store)

    assert [t.provider.name for t in planned.candidates] == ["oracle", "oracle-eu"]
    assert [t.provider.name for t in followed.candidates] == ["oracle-eu"]


def test_a_follow_up_with_a_model_its_owner_lacks_is_a_400() -> None:
    store = AffinityStore(Clock())
    store.remember("resp_eu", "oracle-eu", "response", "ci")
    planned = responses_route("xai.grok-4", '"previous_response_id": "resp_eu"')

    with pytest.raises(GatewayError) as refused:
        follow_owner(planned, store)

    assert refused.value.code == "model_not_at_owner" and refused.value.param == "model"


def test_state_held_by_two_providers_cannot_be_combined() -> None:
    store = AffinityStore(Clock())
    store.remember("resp_eu", "oracle-eu", "response", "ci")
    store.remember("conv_us", "oracle", "conversation", "ci")
    planned = responses_route(
        "shared.model", '"previous_response_id": "resp_eu", "conversation": "conv_us"'
    )

    with pytest.raises(GatewayError) as refused:
        follow_owner(planned, store)

    assert refused.value.code == "conflicting_owners"


def test_an_unknown_follow_up_id_keeps_the_models_route() -> None:
    planned = responses_route("shared.model", '"previous_response_id": "resp_x"')

    assert follow_owner(planned, AffinityStore(Clock())) is planned


@pytest.mark.parametrize(
    ("method", "path", "document", "streamed", "made"),
    [
        ("POST", "/v1/responses", {"id": "resp_1"}, None, ("resp_1", "response")),
        ("POST", "/v1/responses", None, "resp_2", ("resp_2", "response")),
        ("POST", "/v1/files", {"id": "file-1"}, None, ("file-1", "file")),
        ("POST", "/v1/conversations", {"id": "conv_1"}, None, ("conv_1", "conversation")),
        ("POST", "/v1/containers", {"id": "cntr_1"}, None, ("cntr_1", "container")),
        ("POST", "/v1/files", {"id": "../etc"}, None, None),
        ("POST", "/v1/chat/completions", {"id": "chatcmpl-1"}, None, None),
        ("GET", "/v1/files/file-1", {"id": "file-1"}, None, None),
    ],
)
def test_what_a_successful_call_created(
    method: str, path: str, document: dict | None, streamed: str | None, made: tuple | None
) -> None:
    assert created(classify(method, path), document, streamed) == made


def test_what_a_successful_call_deleted() -> None:
    assert deleted(classify("DELETE", "/v1/files/file-1")) == "file-1"
    assert deleted(classify("DELETE", "/v1/conversations/c/items/i")) is None
    assert deleted(classify("GET", "/v1/files/file-1")) is None


@pytest.mark.parametrize(
    ("method", "path", "content_type", "body", "status"),
    [
        ("POST", "/v1/files", "multipart/form-data; boundary=x", b"--x--", None),
        ("POST", "/v1/files", "application/json", b"{}", 415),
        ("POST", "/v1/files", "", b"", 415),
        ("POST", "/v1/conversations", "application/json", b'{"items": []}', None),
        ("POST", "/v1/conversations", "application/json", b"[]", 400),
        ("POST", "/v1/conversations", "text/plain", b"{not json", 400),
        ("POST", "/v1/responses/resp_1/cancel", "", b"", None),  # no body to check
        ("GET", "/v1/files", "text/plain", b"", None),
    ],
)
def test_resource_bodies_are_checked_before_they_go(method, path, content_type, body, status):
    resource = classify(method, path).resource
    assert resource is not None
    if status is None:
        check_body(resource.operation, content_type, body)
        return
    with pytest.raises(GatewayError) as refused:
        check_body(resource.operation, content_type, body)
    assert refused.value.status == status
