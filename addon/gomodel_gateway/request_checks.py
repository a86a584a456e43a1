"""What a model call's request must be before it is routed: a body of bounded size, sent
uncompressed, that is one JSON object (each key once) with a valid model id, a boolean stream
flag, inputs and output limits of usable types; and no query string. Each check raises the
GatewayError (400, 413, 415) the client gets."""

from typing import Any
from urllib.parse import unquote

from . import safejson
from .errors import ErrorCode, GatewayError, clip_for_message
from .limits import OUTPUT_LIMITS, check_output_limit
from .model_ids import is_model_id

MAX_QUERY_NAME = 256


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GatewayError(
            400,
            f"Request body is not UTF-8 (invalid byte at position {e.start}).",
            code=ErrorCode.INVALID_BODY,
        ) from e
    if not text.strip():
        raise GatewayError(
            400, "Request body is empty; send a JSON object.", code=ErrorCode.INVALID_BODY
        )
    try:
        document = safejson.loads(text, unique_keys=True, standard=True)
    except safejson.DuplicateKeyError as e:
        # json keeps the last "model" while Oracle, sent these bytes, might read the first.
        raise GatewayError(
            400,
            f"Request body has the key {clip_for_message(e.key)} twice in one object; "
            "send each key once.",
            code=ErrorCode.INVALID_JSON,
        ) from e
    except ValueError as e:
        raise GatewayError(
            400, f"Request body is not valid JSON: {e}.", code=ErrorCode.INVALID_JSON
        ) from e
    if not isinstance(document, dict):
        raise GatewayError(
            400,
            f"Request body must be a JSON object, not {type(document).__name__}.",
            code=ErrorCode.INVALID_BODY,
        )
    return document


def requested_model(document: dict[str, Any]) -> str:
    model = document.get("model")
    if model is None:
        raise GatewayError(
            400, "You must provide a model parameter.", param="model", code=ErrorCode.MISSING_MODEL
        )
    if not isinstance(model, str):
        raise GatewayError(
            400,
            f"'model' must be a string, not {type(model).__name__}.",
            param="model",
            code=ErrorCode.INVALID_TYPE,
        )
    if not model.isprintable() or not is_model_id(model):  # a newline would reach the ledger
        raise GatewayError(
            400,
            f"{clip_for_message(model)} is not a valid model id: use letters, digits and "
            ". _ - : @ +, optionally prefixed by a provider name and '/'.",
            param="model",
            code=ErrorCode.INVALID_MODEL,
        )
    return model


def stream_flag(document: dict[str, Any]) -> bool:
    stream = document.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise GatewayError(
            400,
            f"'stream' must be a boolean, not {type(stream).__name__}.",
            param="stream",
            code=ErrorCode.INVALID_TYPE,
        )
    return stream


def check_body_size(size: int, limit: int) -> None:
    if size > limit:
        raise GatewayError(
            413,
            f"Request body is {size} bytes; this gateway accepts at most {limit} "
            "(option gomodel_max_body_size).",
            code=ErrorCode.REQUEST_TOO_LARGE,
        )


def check_declared_body(
    content_length: str | None, content_encoding: str | None, limit: int
) -> None:
    """Refuse, before reading it, a body that is too large or compressed (a decompression bomb
    would be expanded before any size check)."""
    if content_encoding and content_encoding.strip().lower() not in ("", "identity"):
        raise GatewayError(
            415,
            f"Compressed request bodies (content-encoding: {clip_for_message(content_encoding)}) "
            "are not accepted; send the JSON uncompressed.",
            code=ErrorCode.UNSUPPORTED_ENCODING,
        )
    if content_length is not None and content_length.strip().isdigit():
        check_body_size(int(content_length), limit)


def check_inputs(document: dict[str, Any], chat: bool) -> None:
    """The fields a chat (`chat`) or responses call must give in a usable type."""
    if chat:
        messages = document.get("messages")
        if not isinstance(messages, list):
            kind = "missing" if messages is None else f"a {type(messages).__name__}"
            raise GatewayError(
                400,
                f"'messages' must be a list of messages, not {kind}.",
                param="messages",
                code=ErrorCode.INVALID_TYPE,
            )
    elif "input" in document and not isinstance(document["input"], str | list):
        raise GatewayError(
            400,
            f"'input' must be a string or a list, not {type(document['input']).__name__}.",
            param="input",
            code=ErrorCode.INVALID_TYPE,
        )
    for name in OUTPUT_LIMITS:  # counted against budgets: whole numbers a store can hold
        check_output_limit(name, document.get(name))
    options = document.get("stream_options")
    if options is not None and not isinstance(options, dict):  # else no usage could be asked
        raise GatewayError(
            400,
            f"'stream_options' must be an object, not {type(options).__name__}.",
            param="stream_options",
            code=ErrorCode.INVALID_TYPE,
        )


def check_no_query(endpoint_path: str, query: str) -> None:
    """Model calls take no query parameters (OpenAI's API defines none for them: everything is
    in the JSON body), so none reaches Oracle unchecked: the first one is named in a 400."""
    if not query:
        return
    name = unquote(query.partition("&")[0].partition("=")[0])
    raise GatewayError(
        400,
        f"Query parameter {clip_for_message(name)} is not accepted on POST /v1/{endpoint_path}, "
        "which takes none: its parameters go in the JSON body.",
        param=name[:MAX_QUERY_NAME] or None,
        code=ErrorCode.INVALID_QUERY,
    )
