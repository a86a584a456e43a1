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

The gateway forwards the client's bytes, so what another parser could read as one of these
fields counts as it: a key that differs only in case, `_`, or characters that are neither
letters nor digits (`previousResponseId`, `file_id\u0000`) is a 400; an item's `type` is
compared the same way (`INPUT_FILE`); any `file_id` or `file_ids` in the input, whatever item
holds it, and anywhere in the body but where it is free-form data (`metadata`, JSON schemas,
an answer's `annotations` given back), is checked. Input items given by reference
(`item_reference`, or an item with only an `id`) name stored items whose owner the gateway
cannot tell: they are collected, and client keys refused them (resource_routing).
Stored-resource bodies that attach files (conversation items, a container's `file_ids`) are
read the same way (`content_ids`).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import ErrorCode, GatewayError, clip_for_message
from .resources import ID, MAX_ID_LENGTH

# The top-level fields that decide where a call goes and which stored ids it names.
ROUTED_FIELDS = (
    "model",
    "previous_response_id",
    "conversation",
    "conversation_id",  # no OpenAI field, but a parser's alias for `conversation` is plausible
    "input",
    "messages",
    "tools",
)
FILE_ITEMS = frozenset({"inputfile", "inputimage"})  # item types, squashed
REFERENCE_ITEM = "itemreference"
# Answers' annotations, given back in a conversation's history, cite files they do not attach.
ANNOTATIONS = frozenset({"filecitation", "containerfilecitation", "filepath", "urlcitation"})
# Top-level fields of free-form data or JSON schemas, where a `file_id` is no file.
FREE_FORM = frozenset({"metadata", "text", "response_format", "tools"})
FILE_FIELDS = ("file_id", "file_ids")
# Fields of input items that hold free-form data or JSON schemas (a hosted tool list's
# `input_schema`, a shell call's `env`, the SDK's `parsed_arguments` of a function call given
# back), where a `file_id` is no file.
FREE_FORM_ITEMS = frozenset(
    {"metadata", "parameters", "input_schema", "schema", "json_schema", "env", "parsed_arguments"}
)
# Keys of input items that read as no guarded field: their items need no closer look.
PLAIN_KEYS = frozenset(
    {"role", "content", "type", "text", "id", "status", "call_id", "output", "name", "arguments"}
)


@dataclass(frozen=True)
class StoredIds:
    followups: tuple[tuple[str, str], ...] = ()  # (param, id): the state a response continues
    files: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    vector_stores: tuple[str, ...] = ()  # never created through the gateway: master keys only
    references: tuple[str, ...] = ()  # input items given by id: whose, the gateway cannot tell

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


@lru_cache(maxsize=4096)  # bounded: the keys are a stranger's; most repeat (role, type...)
def squashed(name: str) -> str:
    """A name as a lenient parser might compare it: case folded (upper case first, so that the
    long s U+017F and the Kelvin sign U+212A fold as Java's equalsIgnoreCase folds them), and
    only letters and digits kept (`previousResponseId`, `file_id\u0000`)."""
    return "".join(character for character in name.upper().lower() if character.isalnum())


def check_case_variants(document: dict[str, Any], names: Iterable[str], where: str = "") -> None:
    """A 400 for a key that is not one of `names` but reads as one to a lenient parser
    ("Model", "previousResponseId" or "file_id\u0000" for the fields so spelled)."""
    wanted = {squashed(name): name for name in names}
    for key in document:
        name = wanted.get(squashed(key))
        if name is not None and key != name:
            raise GatewayError(
                400,
                f"Request body has {clip_for_message(key)}{where}; the field is {name!r}, "
                "spelled so.",
                param=name,
                code=ErrorCode.INVALID_JSON,
            )


def invalid_id(param: str, value: Any) -> GatewayError:
    shown = clip_for_message(value) if isinstance(value, str) else type(value).__name__
    return GatewayError(
        400,
        f"'{param}' must be an id (letters, digits and . _ -, starting with a letter or digit, at "
        f"most {MAX_ID_LENGTH} characters), not {shown}.",
        param=param,
        code=ErrorCode.INVALID_ID,
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


def joined(param: str, name: str) -> str:
    return f"{param}.{name}" if param else name


def attached_files(value: Any, param: str) -> tuple[list[str], list[str]]:
    """(file ids, referenced item ids) anywhere in `value` (input, messages, conversation
    items): a `file_id` or `file_ids` in any item but an answer's annotations (so an item of an
    unknown type, or none, is read too), and the items given by reference. Walked without
    recursion, since a parsed body may be nested as deep as the parser allows (50,000 input
    messages, 6 MB: 60-75 ms here, less than their parse)."""
    files: list[str] = []
    references: list[str] = []
    pending = [(value, type(value) is list)] if isinstance(value, list | dict) else []
    while pending:
        item, listed = pending.pop()  # listed: an element of an items list
        if type(item) is dict:
            kind = item.get("type")
            kind = squashed(kind) if isinstance(kind, str) else None
            if kind in ANNOTATIONS:
                continue
            if kind == REFERENCE_ITEM or (listed and kind is None and is_bare_reference(item)):
                references.append(an_id(joined(param, "id"), item.get("id")))
                continue
            plain, objects = True, False
            for name, inner in item.items():
                if type(inner) is dict:
                    objects = True
                    if name not in FREE_FORM_ITEMS:
                        pending.append((inner, False))
                elif type(inner) is list and name not in FREE_FORM_ITEMS:
                    pending.append((inner, True))
                plain = plain and name in PLAIN_KEYS  # most items: role, content, type, text
            if plain:
                continue
            # An object under a file field of an item that is no file (a schema's property, a
            # tool's arguments) names no file; a file item's must be an id.
            fields = without_objects(item) if objects and kind not in FILE_ITEMS else item
            check_case_variants(fields, FILE_FIELDS, f" in '{param}'")
            if fields.get("file_id") is not None:
                files.append(an_id(joined(param, "file_id"), fields["file_id"]))
            if fields.get("file_ids") is not None:
                files += ids(joined(param, "file_ids"), fields["file_ids"])
        else:
            pending += [(v, True) for v in item if type(v) is dict or type(v) is list]
    return files, references


def without_objects(item: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in item.items() if type(value) is not dict}


def is_bare_reference(item: dict[str, Any]) -> bool:
    """An input item with an id and neither role nor content: OpenAI reads it as a reference
    (an item_reference's `type` may be left out)."""
    return "id" in item and "role" not in item and "content" not in item


def tool_ids(tools: Any) -> tuple[list[str], list[str], list[str]]:
    """(files, containers, vector stores) the Responses tools use (a function's parameters are
    a JSON schema: nothing in them is a stored id)."""
    files: list[str] = []
    containers: list[str] = []
    vector_stores: list[str] = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        check_case_variants(
            tool, ("type", "vector_store_ids", "container", "input_image_mask"), " in 'tools'"
        )
        kind = tool.get("type")
        kind = squashed(kind) if isinstance(kind, str) else None
        if kind == "function":
            continue
        if kind == "filesearch" or "vector_store_ids" in tool:
            vector_stores += ids("tools.vector_store_ids", tool.get("vector_store_ids"))
        container = tool.get("container")
        if isinstance(container, dict):
            check_case_variants(container, FILE_FIELDS, " in a container")
            if (file_ids := container.get("file_ids")) is not None:
                files += ids("tools.container.file_ids", file_ids)
        elif container is not None:
            containers.append(an_id("tools.container", container))
        if isinstance(mask := tool.get("input_image_mask"), dict):
            check_case_variants(mask, FILE_FIELDS, " in 'tools'")
            if (file_id := mask.get("file_id")) is not None:
                files.append(an_id("tools.input_image_mask.file_id", file_id))
    return files, containers, vector_stores


def stored_ids(document: dict[str, Any], responses: bool) -> StoredIds:
    """What a model call's body names (a Responses call when `responses`, else a chat one):
    files and references anywhere but in free-form data (input, messages, instructions given as
    items, a prompt's variables...), a Responses call's follow-ups and tools."""
    check_case_variants(document, ROUTED_FIELDS)
    files: list[str] = []
    references: list[str] = []
    for name, value in document.items():
        if name not in FREE_FORM:
            found, referenced = attached_files(value, name)
            files += found
            references += referenced
    if not responses:
        return StoredIds(files=tuple(files), references=tuple(references))
    tool_files, containers, vector_stores = tool_ids(document.get("tools"))
    return StoredIds(
        tuple(followups(document)),
        (*files, *tool_files),
        tuple(containers),
        tuple(vector_stores),
        tuple(references),
    )


def content_ids(document: dict[str, Any]) -> StoredIds:
    """What a stored resource's JSON body attaches: the files and references of conversation
    items (`items`), a container's `file_ids`; its `metadata` is free-form."""
    files, references = attached_files(
        {name: value for name, value in document.items() if name != "metadata"}, ""
    )
    return StoredIds(files=tuple(files), references=tuple(references))
