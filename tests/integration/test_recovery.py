"""Nothing lost, nothing twice: a killed worker, a wiped broker, a chunk that always fails."""

import shutil
import signal
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from producers import Client
from schemas.settings import Settings
from storage import tables as t
from tests.conftest import kill_group
from tests.integration.conftest import wait_until
from tests.integration.test_pipeline import sample_rows, write_jsonl

pytestmark = pytest.mark.integration


def assert_every_item_once(client: Client, job_id: str, total: int) -> None:
    view = client.status(job_id)
    assert view.status == "succeeded", view
    assert (view.counts.total, view.counts.ok, view.counts.processed) == (total, total, total)
    keys = [r["key"] for r in client.results(job_id)]
    assert len(keys) == len(set(keys)) == total
    with client.ledger.engine.connect() as conn:
        rows = conn.scalar(
            select(func.count()).select_from(t.Result).where(t.Result.job_id == job_id)
        )
        states = set(conn.scalars(select(t.Chunk.state).where(t.Chunk.job_id == job_id)))
    assert rows == total and states == {"done"}


def test_sigkilled_worker_mid_job_loses_and_duplicates_nothing(
    client: Client, start_worker, tmp_path: Path
):
    client.settings.chunk_size = 100
    job_id = client.submit_file(
        write_jsonl(tmp_path / "in.jsonl", sample_rows(1200)), "embed", key_column="id"
    )
    first = start_worker()
    wait_until(lambda: client.status(job_id).counts.processed >= 100, 180, "a first chunk")
    kill_group(first, signal.SIGKILL)  # no chance to ack, release or clean up
    killed_at = client.status(job_id)
    assert killed_at.counts.processed < 1200, "the job must still be mid-way"
    start_worker()
    client.wait(job_id, timeout=240)
    assert_every_item_once(client, job_id, 1200)


def test_broker_wiped_mid_job_still_completes(
    client: Client, settings: Settings, start_worker, tmp_path: Path
):
    client.settings.chunk_size = 100
    job_id = client.submit_file(
        write_jsonl(tmp_path / "in.jsonl", sample_rows(1000)), "embed", key_column="id"
    )
    start_worker()
    wait_until(lambda: client.status(job_id).counts.processed >= 100, 180, "a first chunk")
    redis.Redis.from_url(settings.broker_url or "").flushdb()  # every queued message is gone
    assert client.status(job_id).counts.processed < 1000
    client.wait(job_id, timeout=240)
    assert_every_item_once(client, job_id, 1000)


def test_a_chunk_that_always_fails_is_dead_lettered_and_the_job_ends(
    client: Client, start_worker, tiny_classifier: Path, tmp_path: Path
):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_classifier, broken)
    job_id = client.submit_texts(["hello", "thanks"], "classify-text", model=str(broken))
    # The weights vanish after submit: every attempt to load the model fails.
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    job = client.ledger.job(job_id)
    with client.ledger.engine.begin() as conn:  # a version no actor has loaded yet
        conn.execute(
            t.Job.__table__.update()
            .where(t.Job.id == job_id)
            .values(model_version=f"broken-{job_id[:8]}")
        )
    assert job.params["model_path"] == str(broken.resolve())
    start_worker(SLUICE_MAX_ATTEMPTS="2")
    view = client.wait(job_id, timeout=240)
    assert view.status == "failed" and view.counts.error == 2
    errors = [r["error"] for r in client.results(job_id)]
    assert all(e.startswith("dead-lettered after repeated failures") for e in errors)


def test_sweeper_resends_lost_messages_but_not_a_waiting_backlog(
    client: Client, settings: Settings
):
    from workers.sweeper import BrokerProbe, sweep_once

    client.settings.chunk_size = 10
    job_id = client.submit_texts([f"text {i}" for i in range(30)], "embed")  # no worker runs
    sent: list[str] = []

    def send(chunk_id: str, queue: str, priority: int) -> None:
        sent.append(chunk_id)
        client.dispatcher.send_chunks([chunk_id], queue, priority)

    broker = settings.broker_url or ""
    BrokerProbe(broker).mark()
    settings.requeue_after = 0.001  # every queued chunk is "old"...
    report = sweep_once(client.ledger, settings, broker, send, client.catalog)
    assert (report.resent, report.broker_reset) == (0, False)  # ...but its message still waits
    redis.Redis.from_url(broker).flushdb()  # now the messages are gone
    report = sweep_once(client.ledger, settings, broker, send, client.catalog)
    assert (report.resent, report.broker_reset) == (3, True)
    assert sorted(sent) == sorted(client.ledger.chunk_ids(job_id))
    assert BrokerProbe(broker).is_empty("sluice.text") is False


def test_a_wipe_during_a_sweep_is_seen_by_the_next_sweep(client: Client, settings: Settings):
    """A sweep that began before the broker was wiped must not re-mark it as seen: the next
    sweep re-sends at once rather than after SLUICE_REQUEUE_AFTER."""
    from workers.sweeper import BrokerProbe, sweep_once

    client.settings.chunk_size = 10
    job_id = client.submit_texts([f"text {i}" for i in range(20)], "embed")  # no worker runs
    broker = settings.broker_url or ""
    server = redis.Redis.from_url(broker)
    BrokerProbe(broker).mark()
    server.delete(*[k for k in server.keys("sluice.text*")])  # two messages lost, unnoticed
    settings.requeue_after = 0.001
    wiped: list[str] = []

    def send_while_wiped(chunk_id: str, queue: str, priority: int) -> None:
        if not wiped:
            server.flushdb()  # the broker restarts while this sweep is re-sending
        wiped.append(chunk_id)

    first = sweep_once(client.ledger, settings, broker, send_while_wiped, client.catalog)
    assert (first.resent, first.broker_reset) == (2, False)
    settings.requeue_after = 3600  # from now on only a seen wipe re-sends
    resent: list[str] = []
    second = sweep_once(
        client.ledger, settings, broker, lambda c, q, p: resent.append(c), client.catalog
    )
    assert (second.resent, second.broker_reset) == (2, True)
    assert sorted(resent) == sorted(client.ledger.chunk_ids(job_id))


def test_a_lost_message_behind_a_busy_queue_is_resent_but_not_the_backlog(
    client: Client, settings: Settings
):
    """A chunk queued for over 5 x SLUICE_REQUEUE_AFTER is re-sent even though its queue is
    busy, when the broker holds no message for it; the overdue backlog that does wait in
    the queue is not sent twice."""
    from datetime import timedelta

    from sqlalchemy import update

    from storage.clock import host_now
    from workers.sweeper import BrokerProbe, sweep_once

    client.settings.chunk_size = 10
    lost_job = client.submit_texts([f"lost {i}" for i in range(10)], "embed")  # no worker runs
    backlog_job = client.submit_texts([f"waiting {i}" for i in range(30)], "embed")
    broker = settings.broker_url or ""
    server = redis.Redis.from_url(broker)
    BrokerProbe(broker).mark()
    (lost,) = client.ledger.chunk_ids(lost_job)
    for name in server.keys("sluice.text*"):  # that one message vanishes from the queue
        for raw in server.lrange(name, 0, -1):
            if lost.encode() in raw:
                server.lrem(name, 0, raw)
    with client.ledger.engine.begin() as conn:  # everything was sent 11 minutes ago
        conn.execute(
            update(t.Chunk)
            .where(t.Chunk.job_id.in_([lost_job, backlog_job]))
            .values(enqueued_at=host_now() - timedelta(minutes=11))
        )
    settings.requeue_after = 120  # overdue after 10 minutes
    sent: list[str] = []
    report = sweep_once(
        client.ledger, settings, broker, lambda c, q, p: sent.append(c), client.catalog
    )
    assert sent == [lost] and report.resent == 1
    # The re-send is recorded: the next sweep sends nothing again.
    report = sweep_once(
        client.ledger, settings, broker, lambda c, q, p: sent.append(c), client.catalog
    )
    assert sent == [lost] and report.resent == 0
