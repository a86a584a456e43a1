"""The stored ids a model call's body names (stored_ids.py), read from the parsed body: what is
found, and what is refused before any owner is looked up."""

import json
from typing import Any

import pytest
from gomodel_gateway.errors import GatewayError
from gomodel_gateway.stored_ids import StoredIds, content_ids, stored_ids

FILE = {"type": "input_file", "file_id": "file-a"}


def message(*content: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(content)}


@pytest.mark.parametrize(
    ("document", "found"),
    [
        ({"model": "m", "input": "hi"}, StoredIds()),
        ({"input": [message(FILE)]}, StoredIds(files=("file-a",))),
        (
            {"input": [message({"type": "input_image", "file_id": "file-i"})]},
            StoredIds(files=("file-i",)),
        ),
        (
            {"input": [message({"type": "input_image", "image_url": "https://x/y.png"})]},
            StoredIds(),
        ),
        ({"input": [message({"type": "input_file", "file_url": "https://x/y.pdf"})]}, StoredIds()),
        (
            {"input": [message({"type": "input_file", "file_id": None, "file_data": "..."})]},
            StoredIds(),
        ),
        # a tool's output holds content items too, at any depth
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": [FILE]}]},
            StoredIds(files=("file-a",)),
        ),
        ({"input": [[[[[[FILE]]]]]]}, StoredIds(files=("file-a",))),
        (
            {"tools": [{"type": "file_search", "vector_store_ids": ["vs_1", "vs_2"]}]},
            StoredIds(vector_stores=("vs_1", "vs_2")),
        ),
        (
            {"tools": [{"type": "code_interpreter", "container": "cntr_1"}]},
            StoredIds(containers=("cntr_1",)),
        ),
        (
            {"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]},
            StoredIds(),
        ),
        (
            {
                "tools": [
                    {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["f1"]}}
                ]
            },
            StoredIds(files=("f1",)),
        ),
        (
            {"tools": [{"type": "image_generation", "input_image_mask": {"file_id": "mask-1"}}]},
            StoredIds(files=("mask-1",)),
        ),
        # a function's schema may well have a property called file_id: it is no file
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "name": "f",
                        "parameters": {"properties": {"file_id": {"type": "string"}}},
                    }
                ]
            },
            StoredIds(),
        ),
        (
            {
                "previous_response_id": "resp_1",
                "input": [message(FILE)],
                "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}],
            },
            StoredIds((("previous_response_id", "resp_1"),), ("file-a",), (), ("vs_1",)),
        ),
        # wherever Oracle may read a file from, whatever item holds it
        ({"prompt": {"id": "pmpt_1", "variables": {"doc": FILE}}}, StoredIds(files=("file-a",))),
        ({"instructions": [message(FILE)]}, StoredIds(files=("file-a",))),
        ({"input": [message({"file_id": "file-u"})]}, StoredIds(files=("file-u",))),
        ({"input": [message({**FILE, "type": "INPUT_FILE"})]}, StoredIds(files=("file-a",))),
        ({"input": [message({"type": "input_x", "file_id": "f"})]}, StoredIds(files=("f",))),
        (
            {"tools": [{"type": "FILE_SEARCH", "vector_store_ids": ["vs_1"]}]},
            StoredIds(vector_stores=("vs_1",)),
        ),
        (
            {"tools": [{"type": "Code_Interpreter", "container": "cntr_1"}]},
            StoredIds(containers=("cntr_1",)),
        ),
        # free-form data and an answer's citations given back attach no file
        ({"metadata": {"file_id": "notes.txt"}}, StoredIds()),
        (
            {
                "input": [
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [
                            {
                                "type": "output_text",
                                "text": "see",
                                "annotations": [{"type": "file_citation", "file_id": "f"}],
                            }
                        ],
                    }
                ]
            },
            StoredIds(),
        ),
        # items given back whose free-form fields hold such names: no file
        (
            {
                "input": [
                    {
                        "type": "mcp_list_tools",
                        "id": "mcpl_1",
                        "server_label": "docs",
                        "tools": [
                            {
                                "name": "read",
                                "input_schema": {
                                    "type": "object",
                                    "properties": {"file_id": {"type": "string"}, "fileId": {}},
                                },
                            }
                        ],
                    }
                ]
            },
            StoredIds(),
        ),
        (
            {"input": [{"type": "local_shell_call", "action": {"env": {"fileId": "1"}}}]},
            StoredIds(),
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call",
                        "id": "fc_1",
                        "call_id": "c",
                        "arguments": '{"file_id": "x"}',
                        "parsed_arguments": {"file_id": "example", "fileId": "example"},
                    }
                ]
            },
            StoredIds(),
        ),
        ({"input": [message({"properties": {"file_id": {"type": "string"}}})]}, StoredIds()),
        # items given by reference: their owner is not recorded
        (
            {"input": [{"type": "item_reference", "id": "msg_1"}]},
            StoredIds(references=("msg_1",)),
        ),
        ({"input": [{"id": "msg_2"}]}, StoredIds(references=("msg_2",))),
        ({"input": [{"type": "Item_Reference", "id": "msg_3"}]}, StoredIds(references=("msg_3",))),
        ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, StoredIds()),
    ],
)
def test_what_a_responses_body_names(document: dict[str, Any], found: StoredIds) -> None:
    assert stored_ids(document, responses=True) == found


@pytest.mark.parametrize(
    ("document", "found"),
    [
        (
            {"messages": [message({"type": "file", "file": {"file_id": "file-c"}})]},
            StoredIds(files=("file-c",)),
        ),
        ({"messages": [message({"type": "file", "file": {"file_data": "..."}})]}, StoredIds()),
        ({"messages": [{"role": "user", "content": "hi"}]}, StoredIds()),
        # chat continues no stored state: Oracle's chat completions ignore these
        ({"messages": [], "previous_response_id": "resp_1"}, StoredIds()),
    ],
)
def test_what_a_chat_body_names(document: dict[str, Any], found: StoredIds) -> None:
    assert stored_ids(document, responses=False) == found


@pytest.mark.parametrize(
    ("document", "param"),
    [
        # a case-insensitive parser would read these
        ({"Previous_Response_Id": "resp_1"}, "previous_response_id"),
        ({"PREVIOUS_RESPONSE_ID": "resp_1"}, "previous_response_id"),
        ({"previou\u017f_response_id": "resp_1"}, "previous_response_id"),  # long s
        ({"Conversation": "conv_1"}, "conversation"),
        ({"conversation": {"ID": "conv_1"}}, "id"),
        ({"Model": "m"}, "model"),
        ({"Input": [message(FILE)]}, "input"),
        ({"Tools": []}, "tools"),
        ({"input": [message({"type": "input_file", "File_Id": "file-a"})]}, "file_id"),
        ({"tools": [{"type": "file_search", "Vector_Store_Ids": ["vs_1"]}]}, "vector_store_ids"),
        ({"tools": [{"type": "code_interpreter", "Container": "cntr_1"}]}, "container"),
        # what a lenient parser would read as one of them
        ({"previous_response_id\u0000": "resp_1"}, "previous_response_id"),
        ({"previousResponseId": "resp_1"}, "previous_response_id"),
        ({"previous-response-id": "resp_1"}, "previous_response_id"),
        ({"conversationId": "conv_1"}, "conversation_id"),
        ({"input": [message({"type": "input_file", "fileId": "file-a"})]}, "file_id"),
        ({"input": [message({"file_id\u200b": "file-a"})]}, "file_id"),
        ({"input": [message({"FileIds": ["file-a"]})]}, "file_ids"),
        ({"input": [{"type": "item_reference", "id": 5}]}, "input.id"),
        # values that are no ids are refused, not passed on unchecked
        ({"previous_response_id": "../x"}, "previous_response_id"),
        ({"previous_response_id": 5}, "previous_response_id"),
        ({"previous_response_id": ["resp_1"]}, "previous_response_id"),
        ({"previous_response_id": ""}, "previous_response_id"),
        ({"previous_response_id": "r" * 257}, "previous_response_id"),
        ({"conversation": "conv 1"}, "conversation"),
        ({"conversation": {"id": 5}}, "conversation"),
        ({"conversation": {}}, "conversation"),
        ({"conversation": 7}, "conversation"),
        ({"input": [message({"type": "input_file", "file_id": "../f"})]}, "input.file_id"),
        ({"input": [message({"type": "input_file", "file_id": {"id": "f"}})]}, "input.file_id"),
        (
            {"tools": [{"type": "file_search", "vector_store_ids": "vs_1"}]},
            "tools.vector_store_ids",
        ),
        ({"tools": [{"type": "file_search"}]}, "tools.vector_store_ids"),
        ({"tools": [{"type": "code_interpreter", "container": 5}]}, "tools.container"),
        (
            {"tools": [{"type": "code_interpreter", "container": {"file_ids": ["a b"]}}]},
            "tools.container.file_ids",
        ),
    ],
)
def test_a_responses_body_the_owner_check_cannot_read_is_a_400(
    document: dict[str, Any], param: str
) -> None:
    with pytest.raises(GatewayError) as refused:
        stored_ids(document, responses=True)
    assert (refused.value.status, refused.value.param) == (400, param)
    assert refused.value.body()  # OpenAI's shape, echoing the key clipped
    assert json.loads(refused.value.body())["error"]["type"] == "invalid_request_error"


def test_a_chat_file_part_with_no_id_for_a_file_id_is_a_400() -> None:
    document = {"messages": [message({"type": "file", "file": {"file_id": 5}})]}
    with pytest.raises(GatewayError) as refused:
        stored_ids(document, responses=False)
    assert (refused.value.status, refused.value.param) == (400, "messages.file_id")


def test_a_body_nested_as_deep_as_the_parser_allows_is_walked() -> None:
    deep: Any = [FILE]
    for _ in range(5000):
        deep = [deep]
    assert stored_ids({"input": deep}, responses=True).files == ("file-a",)


@pytest.mark.parametrize(
    ("document", "found"),
    [
        ({"items": [message(FILE)]}, StoredIds(files=("file-a",))),
        ({"items": [message({"type": "input_text", "text": "hi"})]}, StoredIds()),
        ({"items": [{"type": "item_reference", "id": "msg_1"}]}, StoredIds(references=("msg_1",))),
        ({"name": "box", "file_ids": ["file-a", "file-b"]}, StoredIds(files=("file-a", "file-b"))),
        ({"metadata": {"file_id": "notes.txt"}}, StoredIds()),
    ],
)
def test_what_a_stored_resources_body_attaches(document: dict[str, Any], found: StoredIds) -> None:
    assert content_ids(document) == found
