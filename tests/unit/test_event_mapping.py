"""A bus message mapped to an item by its pipeline's `map` (producers/event_mapping.py): the
row a good message becomes, and the reason a bad one is dead-lettered with, as a user reads
it on the dead-letter destination."""

import base64
import hashlib
from typing import Any

import orjson
import pytest

from producers.buses.base import BusMessage
from producers.event_mapping import (
    MISSING,
    EventRow,
    Rejected,
    dead_letter_body,
    default_key,
    field_at,
    map_event,
)
from schemas.pipelines import Pipeline


def pipeline(max_message_bytes: int | None = None, **mapping: str) -> Pipeline:
    conf: dict[str, Any] = {
        "name": "tickets",
        "task": "classify-text",
        "source": {"kind": "rabbitmq", "queue": "tickets"},
        "map": mapping,
        "sinks": [{"kind": "rabbitmq", "routing_key": "tickets.results"}],
        "dead_letter": {"kind": "rabbitmq", "routing_key": "tickets.dead"},
    }
    if max_message_bytes is not None:
        conf["batching"] = {"max_message_bytes": max_message_bytes}
    return Pipeline.model_validate(conf)


TICKETS = pipeline(key="ticket.id", text="ticket.body")
BY_MESSAGE_ID = pipeline(text="body")
RECORDS = pipeline(key="id", record="reading")
MEDIA = pipeline(key="id", media="image.url")


async def _ack() -> None:
    return None


def message(body: Any, message_id: str | None = None) -> BusMessage:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return BusMessage(body=raw, ack=_ack, message_id=message_id)


def ticket(key: Any = "T-1", body: Any = "my card was charged twice") -> dict[str, Any]:
    return {"ticket": {"id": key, "body": body}}


def reason(pipeline_: Pipeline, body: Any, message_id: str | None = None) -> str:
    mapped = map_event(pipeline_, message(body, message_id))
    assert isinstance(mapped, Rejected), mapped
    return mapped.reason


# -- good messages --------------------------------------------------------------------------


def test_a_good_message_becomes_the_row_of_an_item():
    assert map_event(TICKETS, message(ticket())) == EventRow(
        "T-1", {"text": "my card was charged twice"}
    )


def test_a_numeric_key_is_read_as_text():
    assert map_event(TICKETS, message(ticket(key=42))) == EventRow(
        "42", {"text": "my card was charged twice"}
    )


def test_the_default_key_is_the_bus_message_id():
    assert BY_MESSAGE_ID.map.key == "message_id"
    mapped = map_event(BY_MESSAGE_ID, message({"body": "hello"}, message_id="m-17"))
    assert mapped == EventRow("m-17", {"text": "hello"})


def test_without_a_message_id_the_key_is_the_sha256_of_the_body():
    body = orjson.dumps({"body": "hello"})
    mapped = map_event(BY_MESSAGE_ID, message(body))
    assert mapped == EventRow("sha256:" + hashlib.sha256(body).hexdigest(), {"text": "hello"})
    again = map_event(BY_MESSAGE_ID, message(body))  # a redelivery: the same body
    assert isinstance(again, EventRow) and again.key == mapped.key
    other = map_event(BY_MESSAGE_ID, message({"body": "hello!"}))
    assert isinstance(other, EventRow) and other.key != mapped.key
    assert default_key(message(body, message_id="")) == mapped.key  # an empty id is none


def test_a_record_is_mapped_as_an_object():
    reading = {"temp": 21.5, "site": "north", "tags": ["a", "b"]}
    mapped = map_event(RECORDS, message({"id": "r1", "reading": reading}))
    assert mapped == EventRow("r1", {"record": reading})


def test_media_is_mapped_as_text():
    mapped = map_event(MEDIA, message({"id": "p1", "image": {"url": "s3://bucket/p1.png"}}))
    assert mapped == EventRow("p1", {"media": "s3://bucket/p1.png"})


def test_a_path_through_a_list_reaches_its_item():
    lines = pipeline(key="id", text="lines.1.text")
    body = {"id": 7, "lines": [{"text": "first"}, {"text": "second"}]}
    assert map_event(lines, message(body)) == EventRow("7", {"text": "second"})


def test_an_empty_text_is_still_text():
    assert map_event(TICKETS, message(ticket(body=""))) == EventRow("T-1", {"text": ""})


# -- rejections -----------------------------------------------------------------------------


def test_a_message_that_is_not_json_is_rejected():
    assert reason(TICKETS, b"not json at all").startswith("the message is not JSON: ")
    assert reason(TICKETS, b"").startswith("the message is not JSON: ")
    assert reason(TICKETS, b'{"ticket": ').startswith("the message is not JSON: ")


def test_a_message_over_the_size_cap_is_rejected_before_it_is_read():
    small = pipeline(max_message_bytes=64, key="ticket.id", text="ticket.body")
    body = orjson.dumps(ticket(body="x" * 100))
    assert reason(small, body) == f"the message is {len(body)} bytes, over the cap of 64"
    assert reason(small, b"x" * 65) == "the message is 65 bytes, over the cap of 64"  # not JSON
    fits = orjson.dumps(ticket(body="ok"))
    assert len(fits) <= 64 and isinstance(map_event(small, message(fits)), EventRow)


def test_the_size_cap_counts_bytes_not_characters():
    body = orjson.dumps({"ticket": {"id": "T", "body": "é" * 20}})  # 2 bytes each
    exact = pipeline(max_message_bytes=len(body), key="ticket.id", text="ticket.body")
    assert isinstance(map_event(exact, message(body)), EventRow)
    under = pipeline(max_message_bytes=len(body) - 1, key="ticket.id", text="ticket.body")
    assert (
        reason(under, body) == f"the message is {len(body)} bytes, over the cap of {len(body) - 1}"
    )


@pytest.mark.parametrize(
    "body",
    [ticket(key=None), {"ticket": {"body": "text"}}, {"other": 1}, {"ticket": "T-1"}, [1, 2]],
    ids=["null", "absent", "no-parent", "parent-not-object", "not-an-object"],
)
def test_a_message_without_a_key_is_rejected(body: Any):
    assert reason(TICKETS, body) == "the message has no key at `ticket.id`"


def test_an_empty_key_is_no_key():
    """An empty key names no event. Let through, the listener's reader (producers/readers.py
    `_keyed`) turns it into an invalid item keyed `row:1`, "missing key column 'key' in row 1";
    every later message with an empty key is then taken for a redelivery of that one and
    acknowledged without a result or a dead letter."""
    assert reason(TICKETS, ticket(key="")) == "the message has no key at `ticket.id`"


@pytest.mark.parametrize(
    ("key", "kind"),
    [(["T-1"], "list"), (True, "bool"), (False, "bool"), ({"id": 1}, "dict"), (1.5, "float")],
)
def test_a_key_that_is_not_text_or_a_whole_number_is_rejected(key: Any, kind: str):
    assert reason(TICKETS, ticket(key=key)) == f"the key at `ticket.id` is a {kind}, not text"


def test_a_key_too_long_to_store_is_rejected():
    assert isinstance(map_event(TICKETS, message(ticket(key="k" * 512))), EventRow)
    assert (
        reason(TICKETS, ticket(key="k" * 513))
        == "the key is 513 characters long; keys are limited to 512"
    )


def test_a_key_with_a_nul_character_is_rejected():
    assert reason(TICKETS, ticket(key="T\x001")) == (
        "the key holds a NUL character (\\x00), which databases cannot store"
    )


def test_a_message_id_that_cannot_be_stored_is_rejected():
    assert reason(BY_MESSAGE_ID, {"body": "hi"}, message_id="m" * 513) == (
        "the key is 513 characters long; keys are limited to 512"
    )


def test_a_message_without_its_text_is_rejected():
    body = {"ticket": {"id": "T-1"}}
    assert reason(TICKETS, body) == "the message has no text at `ticket.body`"


@pytest.mark.parametrize(
    ("text", "kind"), [(17, "int"), (["a"], "list"), ({"a": 1}, "dict"), (True, "bool")]
)
def test_a_text_that_is_not_a_string_is_rejected(text: Any, kind: str):
    assert reason(TICKETS, ticket(body=text)) == f"the text at `ticket.body` is a {kind}, not text"


def test_media_that_is_not_a_string_is_rejected():
    assert reason(MEDIA, {"id": "p1", "image": {"url": 3}}) == (
        "the media at `image.url` is a int, not text"
    )
    assert reason(MEDIA, {"id": "p1"}) == "the message has no media at `image.url`"


@pytest.mark.parametrize(
    ("record", "kind"), [([1, 2], "list"), ("temp=21", "str"), (21.5, "float")]
)
def test_a_record_that_is_not_an_object_is_rejected(record: Any, kind: str):
    assert reason(RECORDS, {"id": "r1", "reading": record}) == (
        f"the record at `reading` is a {kind}, not an object"
    )


def test_a_message_without_its_record_is_rejected():
    assert reason(RECORDS, {"id": "r1"}) == "the message has no record at `reading`"


# -- field paths ----------------------------------------------------------------------------


def test_field_at_follows_dotted_paths_through_objects_and_lists():
    doc = {"ticket": {"body": "b"}, "lines": [{"text": "zero"}, {"text": "one"}], "0": "key"}
    assert field_at(doc, "ticket.body") == "b"
    assert field_at(doc, "ticket") == {"body": "b"}
    assert field_at(doc, "lines.1.text") == "one"
    assert field_at(doc, "lines.0") == {"text": "zero"}
    assert field_at(doc, "0") == "key"  # a digit names an object's key too
    assert field_at([["a", "b"], ["c"]], "1.0") == "c"
    assert field_at({"a": None}, "a") is None  # present, and null


@pytest.mark.parametrize(
    "path",
    ["missing", "ticket.missing", "ticket.body.deeper", "lines.2", "lines.2.text", "lines.-1",
     "lines.x", "a.b"],
)  # fmt: skip
def test_field_at_says_missing_for_a_path_that_is_not_there(path: str):
    doc = {"ticket": {"body": "b"}, "lines": [{"text": "zero"}, {"text": "one"}], "a": None}
    assert field_at(doc, path) is MISSING


# -- dead letters ---------------------------------------------------------------------------


def test_a_dead_letter_carries_the_reason_and_the_message_as_text():
    body = b"not json \xc3\xa9"  # valid UTF-8
    sent = orjson.loads(dead_letter_body(TICKETS, message(body, "m-3"), "the message is bad"))
    assert sent == {
        "pipeline": "tickets",
        "reason": "the message is bad",
        "message_id": "m-3",
        "body": "not json é",
    }


def test_a_dead_letter_carries_bytes_that_are_not_utf8_as_base64():
    body = b"\xff\xfe\x00binary"
    sent = orjson.loads(dead_letter_body(TICKETS, message(body), "why"))
    assert sent == {
        "pipeline": "tickets",
        "reason": "why",
        "message_id": None,
        "body": {"base64": base64.b64encode(body).decode("ascii")},
    }
    assert base64.b64decode(sent["body"]["base64"]) == body


def test_a_rejected_message_dead_letters_with_its_reason():
    msg = message(ticket(key=["T-1"]), "m-9")
    mapped = map_event(TICKETS, msg)
    assert isinstance(mapped, Rejected)
    sent = orjson.loads(dead_letter_body(TICKETS, msg, mapped.reason))
    assert sent["reason"] == "the key at `ticket.id` is a list, not text"
    assert orjson.loads(sent["body"]) == ticket(key=["T-1"])
