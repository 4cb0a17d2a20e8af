"""Fair share (issue 12), on SQLite and (when configured) PostgreSQL: each tenant's jobs get a
lane of their modality queue, a tenant's items in flight are capped (with an honest
Retry-After), and usage is counted in the transaction that settles a chunk."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from schemas.catalog import load_catalog
from schemas.errors import QuotaExceededError, TooManyItemsError
from schemas.jobs import JobSpec
from schemas.queues import lane_queue, lane_queues
from schemas.settings import Settings
from schemas.stack import broker_transport_options
from storage import tables as t
from storage.admission import FairShare
from storage.clock import host_now
from storage.ledger import Ledger
from storage.usage import ChunkUsage, Usage
from tests.unit.test_ledger import items, ok

QUEUES = {"embed": "sluice.text", "classify-text": "sluice.text", "classify-image": "sluice.image"}


def fair(ledger: Ledger, lanes: int = 4, limit: int | None = None) -> Ledger:
    return Ledger(ledger.engine, FairShare(lanes, limit, QUEUES))


def job(tenant: str, task: str = "embed", priority: int = 5) -> JobSpec:
    return JobSpec(task=task, model="m", model_version="v1", tenant=tenant, priority=priority)


def submit(ledger: Ledger, tenant: str, n: int = 4, task: str = "embed") -> tuple[str, int]:
    job_id, _ = ledger.create_job(job(tenant, task), items(n), chunk_size=2)
    return job_id, ledger.job(job_id).lane


def finish(ledger: Ledger, job_id: str) -> None:
    for chunk in ledger.chunk_ids(job_id):
        claim = ledger.claim(chunk, "w", 30)
        assert ledger.complete(chunk, "w", ok(claim.items or []))


# -- lanes --------------------------------------------------------------------------------------


def test_each_tenant_gets_its_own_lane_and_keeps_it_while_its_jobs_run(ledger: Ledger):
    ledger = fair(ledger, lanes=3)
    a1, lane_a = submit(ledger, "a", n=20)
    _, lane_b = submit(ledger, "b", n=2)
    _, lane_a2 = submit(ledger, "a", n=2)
    _, lane_c = submit(ledger, "c", n=2)
    assert len({lane_a, lane_b, lane_c}) == 3 and lane_a2 == lane_a
    # A fourth tenant shares the least loaded lane (b's and c's have 1 chunk, a's 11).
    _, lane_d = submit(ledger, "d", n=2)
    assert lane_d in (lane_b, lane_c)
    # Once a's jobs are done, its lane is free for a newcomer.
    for job_id in [a1, *(v.id for v in ledger.jobs(10) if v.tenant == "a")]:
        if not ledger.job(job_id).status.finished:
            finish(ledger, job_id)
    _, lane_e = submit(ledger, "e", n=2)
    assert lane_e == lane_a


def test_lanes_are_chosen_per_modality_queue(ledger: Ledger):
    ledger = fair(ledger, lanes=2)
    _, text_a = submit(ledger, "a", task="embed")
    _, image_b = submit(ledger, "b", task="classify-image")
    _, text_b = submit(ledger, "b", task="classify-text")
    assert text_a == image_b == 0  # different queues: both start on the first lane
    assert text_b == 1  # sluice.text's lane 0 is a's


def test_without_fair_share_every_job_is_on_the_base_queue(ledger: Ledger):
    _, lane_a = submit(ledger, "a")
    _, lane_b = submit(ledger, "b")
    assert lane_a == lane_b == 0
    assert lane_queue("sluice.text", 0, 8) == "sluice.text"


def test_lane_queue_names_keep_the_base_queue_for_lane_zero_and_wrap():
    assert lane_queues("sluice.text", 3) == ["sluice.text", "sluice.text.1", "sluice.text.2"]
    assert lane_queue("sluice.text", 5, 4) == "sluice.text.1"  # recorded with more lanes
    assert lane_queues("sluice.text", 1) == ["sluice.text"]


def test_workers_consume_every_lane_of_a_named_modality_queue():
    from workers.celery_app import consumed_queues, worker_queues

    catalog = load_catalog()
    queues = consumed_queues(worker_queues(catalog), catalog, 3)
    assert {"sluice.text", "sluice.text.1", "sluice.text.2", "sluice.image.2"} <= set(queues)
    assert "sluice.control.1" not in queues and "sluice.train" in queues
    assert consumed_queues(["sluice.text"], catalog, 2) == ["sluice.text", "sluice.text.1"]


def test_the_broker_takes_turns_between_queues():
    # kombu's `priority` strategy never rotates: the first lane with a message always wins.
    assert broker_transport_options(Settings())["queue_order_strategy"] == "round_robin"


def test_the_sweeper_resends_and_probes_the_lane_a_chunk_was_sent_to(ledger: Ledger, monkeypatch):
    from workers import sweeper

    asked: list[str] = []

    class Probe:
        def __init__(self, url: str) -> None:
            pass

        def was_reset(self) -> bool:
            return False

        def is_empty(self, queue: str) -> bool:
            asked.append(queue)
            return True

        def mark(self) -> None:
            pass

    monkeypatch.setattr(sweeper, "BrokerProbe", Probe)
    ledger = fair(ledger, lanes=4)
    submit(ledger, "a")
    b_job, lane_b = submit(ledger, "b")
    assert lane_b != 0
    with ledger.engine.begin() as conn:  # b's chunks were sent long ago: maybe lost
        conn.execute(
            update(t.Chunk)
            .where(t.Chunk.job_id == b_job)
            .values(enqueued_at=host_now() - timedelta(hours=1))
        )
    sent: list[tuple[str, str, int]] = []
    settings = Settings(fair_lanes=4, requeue_after=60)
    report = sweeper.sweep_once(
        ledger, settings, "redis://unused", lambda *a: sent.append(a), load_catalog()
    )
    lane = f"sluice.text.{lane_b}"
    assert report.resent == 2 and {q for _, q, _ in sent} == {lane}
    assert asked == [lane]


# -- the in-flight limit ------------------------------------------------------------------------


def test_a_submission_over_the_tenants_limit_is_refused_with_a_retry_after(ledger: Ledger):
    ledger = fair(ledger, limit=10)
    first, _ = submit(ledger, "a", n=6)
    with pytest.raises(QuotaExceededError, match="6 items in flight.*SLUICE_TENANT_MAX") as exc:
        submit(ledger, "a", n=5)
    assert 5 <= exc.value.retry_after_seconds <= 3600
    submit(ledger, "b", n=10)  # another tenant has its own limit
    submit(ledger, "a", n=4)  # up to the limit exactly
    # Items already settled are no longer in flight.
    chunk = ledger.chunk_ids(first)[0]
    claim = ledger.claim(chunk, "w", 30)
    ledger.complete(chunk, "w", ok(claim.items or []))
    submit(ledger, "a", n=2)


def test_a_job_larger_than_the_whole_limit_is_refused_for_good(ledger: Ledger):
    ledger = fair(ledger, limit=10)
    with pytest.raises(TooManyItemsError, match="over the cap of 10 .SLUICE_TENANT_MAX_IN_FLIGHT"):
        submit(ledger, "a", n=11)  # a 413, not a 429 a client would retry forever
    assert ledger.jobs(10) == []


def test_retry_after_follows_the_tenants_recent_pace(ledger: Ledger):
    ledger = fair(ledger, limit=100)
    job_id, _ = ledger.create_job(job("a"), items(100), chunk_size=10)
    for chunk in ledger.chunk_ids(job_id)[:5]:
        claim = ledger.claim(chunk, "w", 30)
        ledger.complete(chunk, "w", ok(claim.items or []))
    with ledger.engine.begin() as conn:  # 50 items done over the last 50 s: 1 item/s
        conn.execute(
            update(t.Chunk)
            .where(t.Chunk.job_id == job_id, t.Chunk.claimed_at.is_not(None))
            .values(claimed_at=host_now() - timedelta(seconds=50))
        )
    with pytest.raises(QuotaExceededError) as exc:
        ledger.create_job(job("a"), items(80), chunk_size=10)  # 30 over: about 30 s
    assert 25 <= exc.value.retry_after_seconds <= 40


def test_concurrent_submits_cannot_pass_the_limit_together(ledger: Ledger):
    ledger = fair(ledger, limit=100)
    start = threading.Barrier(8)
    admitted: list[str] = []
    refused: list[QuotaExceededError] = []

    def one() -> None:
        start.wait()
        try:
            admitted.append(ledger.create_job(job("a"), items(30), chunk_size=10)[0])
        except QuotaExceededError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert (len(admitted), len(refused)) == (3, 5)
    assert sum(ledger.job(j).counts.total for j in admitted) == 90


# -- usage --------------------------------------------------------------------------------------


def test_usage_counts_outcomes_and_model_seconds_once_per_chunk(ledger: Ledger):
    job_id, (chunk,) = ledger.create_job(job("a"), items(2, bad=1), chunk_size=10)
    claim = ledger.claim(chunk, "w", 30)
    assert ledger.complete(chunk, "w", ok(claim.items or []), ChunkUsage(model_seconds=1.5))
    # A redelivered chunk that is already done adds nothing.
    assert not ledger.complete(chunk, "w", ok(claim.items or []), ChunkUsage(model_seconds=9))
    other, (dead,) = ledger.create_job(job("a"), items(3), chunk_size=10)
    ledger.claim(dead, "w", 30)
    assert ledger.dead_letter(dead, "w", "boom")
    ledger.create_job(job("b"), items(1), chunk_size=10)  # queued: nothing used yet
    (row,) = Usage(ledger.engine).rows("a")
    today = host_now().date()
    assert (row.day, row.task, row.ok, row.invalid, row.error) == (today, "embed", 2, 1, 3)
    assert row.model_seconds == pytest.approx(1.5) and row.tokens is None
    assert Usage(ledger.engine).rows("b") == []
    assert Usage(ledger.engine).rows("a", start=today + timedelta(days=1)) == []


def test_tokens_are_summed_once_a_task_counts_them(ledger: Ledger):
    for n in (3, 4):
        _, (chunk,) = ledger.create_job(job("a"), items(1), chunk_size=10)
        claim = ledger.claim(chunk, "w", 30)
        ledger.complete(chunk, "w", ok(claim.items or []), ChunkUsage(0.1, tokens=n))
    (row,) = Usage(ledger.engine).totals()
    assert (row.tenant, row.ok, row.tokens) == ("a", 2, 7)
