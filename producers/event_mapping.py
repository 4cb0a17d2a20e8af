"""A bus message to the row of an item, by a pipeline's mapping (schemas/pipelines.py), or the
reason it cannot be one (the message then goes to the dead-letter destination, with it)."""

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from producers.buses.base import BusMessage
from schemas.pipelines import MESSAGE_ID, Pipeline
from schemas.storable import key_problem

MISSING = object()
PREFIX_KEPT = 1024  # bytes of an over-cap message its dead letter shows


@dataclass(frozen=True)
class EventRow:
    key: str
    body: dict[str, Any]  # as POST /v1/events takes it: text, media or record


@dataclass(frozen=True)
class Rejected:
    reason: str


def field_at(document: Any, path: str) -> Any:
    """The value at a dotted path (`ticket.body`, `lines.0.text`), or MISSING."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part, MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def default_key(message: BusMessage) -> str:
    """The bus's id of the message, or (MQTT; a publisher that sets none) the SHA-256 of its
    body: a redelivery has the same body, so it is still recognised."""
    return message.message_id or "sha256:" + hashlib.sha256(message.body).hexdigest()


def map_event(pipeline: Pipeline, message: BusMessage) -> EventRow | Rejected:
    cap = pipeline.batching.max_message_bytes
    if len(message.body) > cap:
        return Rejected(f"the message is {len(message.body)} bytes, over the cap of {cap}")
    try:
        document = orjson.loads(message.body)
    except orjson.JSONDecodeError as exc:
        return Rejected(f"the message is not JSON: {exc}")
    mapping = pipeline.map
    if mapping.key == MESSAGE_ID:
        key = default_key(message)
    else:
        found = field_at(document, mapping.key)
        if found is MISSING or found is None or found == "":
            return Rejected(f"the message has no key at `{mapping.key}`")
        if isinstance(found, bool) or not isinstance(found, str | int):
            return Rejected(f"the key at `{mapping.key}` is a {type(found).__name__}, not text")
        key = str(found)
    if problem := key_problem(key):
        return Rejected(f"the key {problem}")
    path = getattr(mapping, mapping.field)
    value = field_at(document, path)
    if value is MISSING:
        return Rejected(f"the message has no {mapping.field} at `{path}`")
    if mapping.field == "record" and not isinstance(value, dict):
        return Rejected(f"the record at `{path}` is a {type(value).__name__}, not an object")
    if mapping.field in ("text", "media") and not isinstance(value, str):
        return Rejected(f"the {mapping.field} at `{path}` is a {type(value).__name__}, not text")
    return EventRow(key, {mapping.field: value})


def dead_letter_body(pipeline: Pipeline, message: BusMessage, reason: str) -> bytes:
    """What the dead-letter destination receives: the reason and the message as it came; one
    over the size cap only by its first KiB, size and digest (a dead letter as large as the
    message a bus refused would be refused by the dead-letter bus in turn)."""
    body = message.body
    kept: dict[str, Any] = {}
    if len(body) > pipeline.batching.max_message_bytes:
        kept = {"body_bytes": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
        body = body[:PREFIX_KEPT]
    try:
        original: Any = body.decode("utf-8", errors="strict" if not kept else "replace")
    except UnicodeDecodeError:
        original = {"base64": base64.b64encode(body).decode("ascii")}
    return orjson.dumps(
        {
            "pipeline": pipeline.name,
            "reason": reason,
            "message_id": message.message_id,
            "body": original,
            **kept,
        }
    )
