"""The Oracle simulator's stored resources, in memory: responses (background ones included),
conversations, files and containers, as Oracle documents them under /openai/v1 (the shapes are
OpenAI's, which Oracle says it uses).

Every resource belongs to the project (OpenAI-Project) that created it and is invisible to other
projects, as Oracle's projects isolate their artifacts; an unknown id, or one of another project,
is Oracle's 404. A background response is `queued`, then `in_progress`, then `completed` as
`background_seconds` pass after its creation, unless cancelled first; its events are kept, so
that its stream can be resumed after a sequence number. Thread-safe (one lock).
"""

import threading
import time
import uuid
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from typing import Any

NOT_FOUND = (404, "Authorization failed or requested resource not found.")
TERMINAL = ("completed", "incomplete", "failed", "cancelled")


class OracleError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class StoredResponse:
    response: dict[str, Any]  # as it is once completed
    input_items: list[dict[str, Any]]
    events: list[bytes]  # its stream's events, for resumption
    background: bool
    created: float
    done_at: float
    cancelled: bool = False


@dataclass
class Record:
    kind: str
    project: str | None
    document: dict[str, Any]
    response: StoredResponse | None = None
    items: list[dict[str, Any]] = field(default_factory=list)  # a conversation's
    content: bytes = b""  # a file's


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def as_items(value: Any) -> list[dict[str, Any]]:
    """A Responses API input (a string, or a list of items) as stored items, each with an id."""
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    items = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        item = dict(item)
        if isinstance(item.get("content"), str):
            kind = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": kind, "text": item["content"]}]
        item.setdefault("type", "message")
        item.setdefault("id", new_id("msg_"))
        items.append(item)
    return items


def page(items: list[dict[str, Any]], query: dict[str, str], default_order: str) -> dict[str, Any]:
    """A list answer: `order`, `after` and `limit` applied."""
    ordered = list(items) if query.get("order", default_order) == "asc" else items[::-1]
    if after := query.get("after"):
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    limit = int(query.get("limit") or 100)
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }


def multipart_fields(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class Store:
    def __init__(self, clock: Any = time.monotonic) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, Record] = {}
        self.clock = clock

    def reset(self) -> None:
        with self.lock:
            self.records.clear()

    def get(self, resource_id: str, kind: str, project: str | None) -> Record:
        record = self.records.get(resource_id)
        if record is None or record.kind != kind or record.project != project:
            raise OracleError(*NOT_FOUND)
        return record

    # -- responses -----------------------------------------------------------------------------

    def context_of(self, document: dict[str, Any], project: str | None) -> list[dict[str, Any]]:
        """The stored items a new response continues: its previous response's input and output,
        or its conversation's items; a 404 when they are not there."""
        with self.lock:
            if previous := document.get("previous_response_id"):
                stored = self.get(str(previous), "response", project).response
                assert stored is not None
                return stored.input_items + stored.response["output"]
            if conversation := document.get("conversation"):
                if isinstance(conversation, dict):
                    conversation = conversation.get("id")
                return list(self.get(str(conversation), "conversation", project).items)
        return []

    def keep_response(
        self,
        document: dict[str, Any],
        response: dict[str, Any],
        events: list[bytes],
        project: str | None,
        background_seconds: float,
    ) -> None:
        """A created response: stored unless `store` is false (a background one always is,
        as Oracle keeps it temporarily); appended to its conversation."""
        background = bool(document.get("background"))
        items = as_items(document.get("input"))
        now = self.clock()
        # A streamed one has been sent whole: it is done; a background one takes its time.
        done_at = now + background_seconds if background and not document.get("stream") else now
        with self.lock:
            if conversation := document.get("conversation"):
                if isinstance(conversation, dict):
                    conversation = conversation.get("id")
                self.get(str(conversation), "conversation", project).items += (
                    items + response["output"]
                )
            if document.get("store", True) is not False or background:
                stored = StoredResponse(response, items, events, background, now, done_at)
                self.records[response["id"]] = Record("response", project, response, stored)

    def response_view(self, stored: StoredResponse) -> dict[str, Any]:
        """The response as it stands now: a background one moves on with time."""
        if stored.cancelled:
            return {**stored.response, "status": "cancelled", "output": [], "usage": None}
        now = self.clock()
        if now >= stored.done_at:
            return stored.response
        waited = (now - stored.created) / max(stored.done_at - stored.created, 1e-9)
        status = "queued" if waited < 0.3 else "in_progress"
        return {**stored.response, "status": status, "output": [], "usage": None}

    def retrieve_response(self, response_id: str, project: str | None) -> dict[str, Any]:
        with self.lock:
            stored = self.get(response_id, "response", project).response
            assert stored is not None
            return self.response_view(stored)

    def response_events(
        self, response_id: str, project: str | None, starting_after: int | None
    ) -> list[bytes]:
        """A background response's events after `starting_after` (a sequence number)."""
        with self.lock:
            stored = self.get(response_id, "response", project).response
            assert stored is not None
        if not stored.background:
            raise OracleError(400, "Only responses created with background=true can be streamed.")
        skip = -1 if starting_after is None else starting_after
        return stored.events[skip + 1 :]  # event i carries sequence_number i

    def cancel_response(self, response_id: str, project: str | None) -> dict[str, Any]:
        with self.lock:
            stored = self.get(response_id, "response", project).response
            assert stored is not None
            if not stored.background:
                raise OracleError(400, "Only background responses can be cancelled.")
            if self.response_view(stored)["status"] not in TERMINAL:
                stored.cancelled = True
            return self.response_view(stored)

    def delete(self, resource_id: str, kind: str, project: str | None) -> dict[str, Any]:
        with self.lock:
            self.get(resource_id, kind, project)
            del self.records[resource_id]
        obj = {"response": "response", "file": "file"}.get(kind, f"{kind}.deleted")
        return {"id": resource_id, "object": obj, "deleted": True}

    def input_items(
        self, response_id: str, project: str | None, query: dict[str, str]
    ) -> dict[str, Any]:
        with self.lock:
            stored = self.get(response_id, "response", project).response
            assert stored is not None
            return page(stored.input_items, query, "desc")

    # -- conversations -------------------------------------------------------------------------

    def create_conversation(self, document: dict[str, Any], project: str | None) -> dict[str, Any]:
        conversation = {
            "id": new_id("conv_"),
            "object": "conversation",
            "created_at": int(time.time()),
            "metadata": document.get("metadata") or {},
        }
        with self.lock:
            record = Record("conversation", project, conversation)
            record.items = as_items(document.get("items") or [])
            self.records[conversation["id"]] = record
        return conversation

    def conversation(
        self, conversation_id: str, project: str | None, update: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        with self.lock:
            record = self.get(conversation_id, "conversation", project)
            if update is not None and "metadata" in update:
                record.document["metadata"] = update["metadata"] or {}
            return record.document

    def conversation_items(
        self, conversation_id: str, project: str | None, query: dict[str, str]
    ) -> dict[str, Any]:
        with self.lock:
            return page(self.get(conversation_id, "conversation", project).items, query, "desc")

    def add_items(
        self, conversation_id: str, project: str | None, document: dict[str, Any]
    ) -> dict[str, Any]:
        items = as_items(document.get("items") or [])
        with self.lock:
            self.get(conversation_id, "conversation", project).items += items
        return page(items, {"order": "asc"}, "asc")

    def conversation_item(
        self, conversation_id: str, item_id: str, project: str | None, delete: bool = False
    ) -> dict[str, Any]:
        with self.lock:
            record = self.get(conversation_id, "conversation", project)
            item = next((i for i in record.items if i["id"] == item_id), None)
            if item is None:
                raise OracleError(*NOT_FOUND)
            if delete:
                record.items.remove(item)
                return record.document
            return item

    # -- files and containers ------------------------------------------------------------------

    def create_file(self, content_type: str, body: bytes, project: str | None) -> dict[str, Any]:
        fields = multipart_fields(content_type, body)
        if "file" not in fields or "purpose" not in fields:
            raise OracleError(400, "Invalid request: 'file' and 'purpose' are required.")
        filename, content = fields["file"]
        document = {
            "id": f"file-sim-{uuid.uuid4()}",
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename or "upload",
            "purpose": fields["purpose"][1].decode(),
            "status": "processed",
        }
        with self.lock:
            self.records[document["id"]] = Record("file", project, document, content=content)
        return document

    def create_container(self, document: dict[str, Any], project: str | None) -> dict[str, Any]:
        container = {
            "id": new_id("cntr_"),
            "object": "container",
            "name": document.get("name") or "container",
            "created_at": int(time.time()),
            "status": "running",
        }
        with self.lock:
            self.records[container["id"]] = Record("container", project, container)
        return container

    def listing(self, kind: str, project: str | None, query: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            documents = [
                r.document
                for r in self.records.values()
                if r.kind == kind
                and r.project == project
                and query.get("purpose") in (None, r.document.get("purpose"))
            ]
        return page(documents, query, "desc")

    def file(self, file_id: str, project: str | None) -> Record:
        with self.lock:
            return self.get(file_id, "file", project)
