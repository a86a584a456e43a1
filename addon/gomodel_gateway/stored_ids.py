"""The stored ids a model call's body names, read from its parsed JSON object as Oracle reads it.

A Responses call continues stored state (`previous_response_id`, `conversation`: an id or an
object with one); Responses input and chat messages attach files (`input_file` and
`input_image` items, chat's `{"type": "file", "file": {...}}` parts, at any depth, so tool
outputs are read too); Responses tools use vector stores (`file_search`) and containers
(`code_interpreter`: a container id, or `{"type": "auto", "file_ids": [...]}`), and
`image_generation` a mask file. Each must be the caller's own (resource_routing.check_owner),
so nothing is looked for in the raw bytes (`"previous_respons\\u0065_id"` is the same key once
parsed), a value that is no id is a 400 (never passed on unchecked), and a case variant of one
of these fields is a 400 (a parser that ignores case would read it). Pure: raises GatewayError.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import GatewayError, clip_for_message
from .resources import ID, MAX_ID_LENGTH

# The top-level fields that decide where a call goes and which stored ids it names.
ROUTED_FIELDS = ("model", "previous_response_id", "conversation", "input", "messages", "tools")
FILE_ITEMS = frozenset({"input_file", "input_image"})


@dataclass(frozen=True)
class StoredIds:
    followups: tuple[tuple[str, str], ...] = ()  # (param, id): the state a response continues
    files: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    vector_stores: tuple[str, ...] = ()  # never created through the gateway: master keys only

    @property
    def conversation(self) -> str | None:
        return next((value for param, value in self.followups if param == "conversation"), None)

    @property
    def all(self) -> list[str]:
        followed = [value for _, value in self.followups]
        return [*followed, *self.files, *self.containers, *self.vector_stores]


NO_IDS = StoredIds()  # a frozen default, shared


def is_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and bool(ID.fullmatch(value))


def folded(name: str) -> str:
    """A field name as a case-insensitive parser compares it: upper case first, so that the
    long s (U+017F) and the Kelvin sign (U+212A) fold as Java's equalsIgnoreCase folds them."""
    return name.upper().lower()


def check_case_variants(document: dict[str, Any], names: Iterable[str], where: str = "") -> None:
    """A 400 for a key that differs from one of `names` only in case ("Model" for "model")."""
    wanted = {folded(name): name for name in names}
    for key in document:
        name = wanted.get(folded(key))
        if name is not None and key != name:
            raise GatewayError(
                400,
                f"Request body has {clip_for_message(key)}{where}; the field is {name!r}, "
                "spelled so.",
                param=name,
                code="invalid_json",
            )


def invalid_id(param: str, value: Any) -> GatewayError:
    shown = clip_for_message(value) if isinstance(value, str) else type(value).__name__
    return GatewayError(
        400,
        f"'{param}' must be an id (letters, digits and . _ -, starting with a letter or digit, at "
        f"most {MAX_ID_LENGTH} characters), not {shown}.",
        param=param,
        code="invalid_id",
    )


def an_id(param: str, value: Any) -> str:
    if not is_id(value):
        raise invalid_id(param, value)
    return value


def ids(param: str, value: Any) -> list[str]:
    """A list of ids (vector_store_ids, file_ids)."""
    if not isinstance(value, list):
        raise invalid_id(param, value)
    return [an_id(param, item) for item in value]


def followups(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(param, id) of the state a Responses call continues; null is no state."""
    found = []
    previous = document.get("previous_response_id")
    if previous is not None:
        found.append(("previous_response_id", an_id("previous_response_id", previous)))
    conversation = document.get("conversation")
    if isinstance(conversation, dict):
        check_case_variants(conversation, ("id",), " in 'conversation'")
        conversation = conversation.get("id")
        if conversation is None:
            raise invalid_id("conversation", conversation)
    if conversation is not None:
        found.append(("conversation", an_id("conversation", conversation)))
    return found


def attached_files(value: Any, param: str) -> list[str]:
    """The file ids of the file items and parts anywhere in `value` (input, messages), in no
    particular order; walked without recursion, since a parsed body may be nested as deep as
    the parser allows (50,000 input messages, 6 MB: 60-75 ms here, less than their parse)."""
    found: list[str] = []
    pending = [value] if isinstance(value, list | dict) else []
    while pending:
        item = pending.pop()
        if type(item) is dict:
            kind = item.get("type")
            if kind in FILE_ITEMS:
                found += named_file(item, param)
            elif kind == "file" and isinstance(item.get("file"), dict):  # chat's file part
                found += named_file(item["file"], param)
            item = item.values()
        pending += [v for v in item if type(v) is dict or type(v) is list]
    return found


def named_file(item: dict[str, Any], param: str) -> list[str]:
    check_case_variants(item, ("file_id",), f" in '{param}'")
    file_id = item.get("file_id")
    return [] if file_id is None else [an_id(f"{param}.file_id", file_id)]


def tool_ids(tools: Any) -> tuple[list[str], list[str], list[str]]:
    """(files, containers, vector stores) the Responses tools use."""
    files: list[str] = []
    containers: list[str] = []
    vector_stores: list[str] = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        check_case_variants(tool, ("type", "vector_store_ids", "container"), " in 'tools'")
        kind = tool.get("type")
        if kind == "file_search":
            vector_stores += ids("tools.vector_store_ids", tool.get("vector_store_ids"))
        elif kind == "code_interpreter":
            container = tool.get("container")
            if isinstance(container, dict):
                check_case_variants(container, ("file_ids",), " in a container")
                if (file_ids := container.get("file_ids")) is not None:
                    files += ids("tools.container.file_ids", file_ids)
            elif container is not None:
                containers.append(an_id("tools.container", container))
        elif kind == "image_generation" and isinstance(mask := tool.get("input_image_mask"), dict):
            files += named_file(mask, "tools.input_image_mask")
    return files, containers, vector_stores


def stored_ids(document: dict[str, Any], responses: bool) -> StoredIds:
    """What a model call's body names (a Responses call when `responses`, else a chat one)."""
    check_case_variants(document, ROUTED_FIELDS)
    if not responses:
        return StoredIds(files=tuple(attached_files(document.get("messages"), "messages")))
    files, containers, vector_stores = tool_ids(document.get("tools"))
    files[:0] = attached_files(document.get("input"), "input")
    return StoredIds(
        tuple(followups(document)), tuple(files), tuple(containers), tuple(vector_stores)
    )
