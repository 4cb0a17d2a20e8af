"""Event pipelines on real buses (issue 24): 5,000 events published to RabbitMQ, and to NATS
JetStream, consumed by `sluice listen`, which is SIGKILLed twice on the way and restarted;
every event ends with exactly one result in the ledger, the output holds one result per event
(duplicates counted), and the messages that cannot be mapped are on the dead-letter
destination with their reasons. A real Celery worker and Ray actor run the task."""

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from producers import Client
from storage import tables as t
from storage.standing_jobs import pipeline_counts
from tests.bus_clients import (
    NATS_URL,
    RABBIT_URL,
    nats_count,
    nats_delete,
    nats_publish,
    nats_read,
    needs_nats,
    needs_rabbitmq,
    rabbit_count,
    rabbit_delete,
    rabbit_drain,
    rabbit_publish,
)
from tests.conftest import kill_group
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration
EVENTS = 5000
WORDS = ["refund", "charged", "twice", "love", "great", "invoice", "broken", "thanks"]


def events(n: int) -> list[tuple[str | None, bytes]]:
    return [
        (f"m-{i}", orjson.dumps({"ticket": {"id": f"t-{i}", "body": f"{WORDS[i % 8]} {i}"}}))
        for i in range(n)
    ]


BAD = [  # (message id, body, the reason's words)
    ("bad-json", b"{not json", "not JSON"),
    ("bad-key", orjson.dumps({"ticket": {"body": "no id"}}), "no key at `ticket.id`"),
    ("bad-text", orjson.dumps({"ticket": {"id": "x-1", "body": 42}}), "is a int, not text"),
    ("too-big", orjson.dumps({"ticket": {"id": "x-2", "body": "a" * 5000}}), "over the cap"),
]


def pipeline_toml(name: str, model: Path, source: str, sink: str, dead: str) -> str:
    return f"""
[[pipelines]]
name = "{name}"
task = "classify-text"
model = "{model}"
map = {{ key = "ticket.id", text = "ticket.body" }}
batching = {{ max_events = 200, max_wait_ms = 50, max_in_flight = 1000, max_message_bytes = 4096 }}
rollover = {{ max_items = 2000 }}
source = {source}
sinks = [{sink}]
dead_letter = {dead}
"""


def figures(client: Client, name: str) -> dict[str, Any]:
    found = [c for c in pipeline_counts(client.ledger.engine) if c.pipeline == name]
    return found[0].as_dict() if found else {"recorded": 0, "published": 0, "dead_lettered": 0}


def run_with_two_kills(
    client: Client, name: str, pipelines: Path, start_worker: Any, listener: Any
) -> None:
    """Run the pipeline to the end with the listener SIGKILLed twice: once while events are
    being recorded, once while results are being published."""
    start_worker()
    first = listener(pipelines)
    wait_until(lambda: figures(client, name)["recorded"] >= 1200, 180, "1,200 events recorded")
    kill_group(first)
    second = listener(pipelines)
    wait_until(lambda: figures(client, name)["published"] >= 3000, 180, "3,000 published")
    kill_group(second)
    listener(pipelines)
    wait_until(lambda: figures(client, name)["published"] >= EVENTS, 240, "every result published")


def assert_one_result_per_event(client: Client, name: str) -> None:
    with client.ledger.engine.connect() as conn:
        per_key = dict(
            conn.execute(
                select(t.Result.item_key, func.count())
                .join(t.Job, t.Job.id == t.Result.job_id)
                .where(t.Job.source == f"pipeline:{name}")
                .group_by(t.Result.item_key)
            ).all()
        )
        jobs = conn.execute(select(func.count()).where(t.Job.source == f"pipeline:{name}"))
        assert jobs.scalar_one() >= EVENTS // 2000  # rolled over at 2,000 items
    assert set(per_key) == {f"t-{i}" for i in range(EVENTS)}
    assert set(per_key.values()) == {1}


def assert_output(results: list[tuple[str | None, dict[str, Any]]]) -> None:
    ids = Counter(message_id for message_id, _ in results)
    duplicates = sum(n - 1 for n in ids.values())
    print(f"output: {len(results)} messages, {len(ids)} distinct ids, {duplicates} duplicates")
    assert len(ids) == EVENTS
    keys = {body["key"] for _, body in results}
    assert keys == {f"t-{i}" for i in range(EVENTS)}
    assert all(body["status"] == "ok" and body["output"]["label"] for _, body in results)
    assert all(body["message_id"] == mid for mid, body in results)  # the id is in the body too


def assert_dead_letters(dead: list[tuple[str | None, dict[str, Any]]]) -> None:
    by_id = {body["message_id"]: body for _, body in dead}
    assert set(by_id) == {mid for mid, _, _ in BAD}
    for mid, _, words in BAD:
        assert words in by_id[mid]["reason"], by_id[mid]


@needs_rabbitmq
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rabbitmq_every_event_one_result_through_two_listener_kills(
    client: Client, tiny_classifier: Path, tmp_path: Path, start_worker: Any, listener: Any
) -> None:
    name = f"rmq-{uuid.uuid4().hex[:8]}"
    inq, outq, deadq = f"{name}.in", f"{name}.out", f"{name}.dead"
    pipelines = tmp_path / "pipelines.toml"
    pipelines.write_text(
        pipeline_toml(
            name,
            tiny_classifier,
            f'{{ kind = "rabbitmq", url = "{RABBIT_URL}", queue = "{inq}" }}',
            f'{{ kind = "rabbitmq", url = "{RABBIT_URL}", routing_key = "{outq}" }}',
            f'{{ kind = "rabbitmq", url = "{RABBIT_URL}", routing_key = "{deadq}" }}',
        )
    )
    try:
        sent = events(EVENTS)
        rabbit_publish(inq, sent[:2500] + [(mid, body) for mid, body, _ in BAD] + sent[2500:])
        run_with_two_kills(client, name, pipelines, start_worker, listener)
        assert_one_result_per_event(client, name)
        assert_output(rabbit_drain(outq))
        assert_dead_letters(rabbit_drain(deadq))
        assert rabbit_count(inq) == 0  # everything consumed was acknowledged
        assert figures(client, name)["dead_lettered"] == len(BAD)
    finally:
        rabbit_delete([inq, outq, deadq])


@needs_nats
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_nats_every_event_one_result_exactly_once_on_the_stream(
    client: Client, tiny_classifier: Path, tmp_path: Path, start_worker: Any, listener: Any
) -> None:
    name = f"nats-{uuid.uuid4().hex[:8]}"
    streams = [f"IN_{name[5:]}", f"OUT_{name[5:]}", f"DEAD_{name[5:]}"]
    subjects = [f"{name}.in", f"{name}.out", f"{name}.dead"]
    pipelines = tmp_path / "pipelines.toml"
    pipelines.write_text(
        pipeline_toml(
            name,
            tiny_classifier,
            f'{{ kind = "nats", url = "{NATS_URL}", stream = "{streams[0]}", '
            f'subject = "{subjects[0]}", durable = "sluice" }}',
            f'{{ kind = "nats", url = "{NATS_URL}", subject = "{subjects[1]}", '
            f'stream = "{streams[1]}" }}',
            f'{{ kind = "nats", url = "{NATS_URL}", subject = "{subjects[2]}", '
            f'stream = "{streams[2]}" }}',
        )
    )
    try:
        sent = events(EVENTS)
        nats_publish(
            streams[0], subjects[0], sent[:2500] + [(m, b) for m, b, _ in BAD] + sent[2500:]
        )
        run_with_two_kills(client, name, pipelines, start_worker, listener)
        assert_one_result_per_event(client, name)
        assert nats_count(streams[1]) == EVENTS  # the stream dropped every repeated publish
        assert_output(nats_read(streams[1], subjects[1]))
        assert_dead_letters(nats_read(streams[2], subjects[2]))
    finally:
        nats_delete(streams)
