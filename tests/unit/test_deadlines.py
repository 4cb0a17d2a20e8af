"""A job's deadline (Ledger.overdue / Ledger.expire, run by the sweeper), on SQLite and
(when configured) PostgreSQL: finished rows stay, unfinished ones end `error` with the
reason `expired`, invalid ones stay invalid, and a worker still on a chunk writes nothing."""

from typing import Any

import pytest
from sqlalchemy import update

from schemas.jobs import Item, JobSpec, Outcome
from schemas.states import ItemStatus, JobStatus
from storage import tables as t
from storage.clock import host_now
from storage.ledger import Ledger
from workers.sweeper import expire_overdue


def spec(deadline_s: int | None) -> JobSpec:
    return JobSpec(task="embed", model="m", model_version="v1", deadline_s=deadline_s)


def test_past_its_deadline_a_job_keeps_what_finished_and_ends_expired(ledger: Ledger):
    items = [Item(key=f"k{n}", text=f"text {n}") for n in range(5)]
    items[4] = Item(key="k4", invalid="empty text")
    job_id, chunks = ledger.create_job(spec(3600), items, chunk_size=2)
    assert ledger.job(job_id).deadline_at is not None and ledger.overdue() == []
    done = ledger.claim(chunks[0], "w1", 30)
    ok = [Outcome(key=i.key, status=ItemStatus.OK, output={"v": 1}) for i in done.items]
    assert ledger.complete(chunks[0], "w1", ok)
    held = ledger.claim(chunks[1], "w2", 30)  # a worker is on it at the deadline
    assert ledger.expire(job_id) is False  # not yet due
    with ledger.engine.begin() as conn:
        conn.execute(update(t.Job).where(t.Job.id == job_id).values(deadline_at=host_now()))

    assert expire_overdue(ledger) == 1
    view = ledger.job(job_id)
    assert view.status is JobStatus.EXPIRED and view.finished_at is not None
    assert (view.counts.ok, view.counts.error, view.counts.invalid) == (2, 2, 1)
    rows = {r["key"]: r for r in ledger.iter_results(job_id)}
    assert [rows[k]["status"] for k in ("k0", "k1")] == ["ok", "ok"]
    assert rows["k2"]["status"] == "error" and rows["k2"]["error"].startswith("expired: ")
    assert rows["k4"]["status"] == "invalid" and rows["k4"]["error"] == "empty text"
    late = [Outcome(key=i.key, status=ItemStatus.OK, output={"v": 2}) for i in held.items]
    assert not ledger.complete(chunks[1], "w2", late)  # its lease went with the deadline
    assert rows["k2"]["output"] is None
    assert expire_overdue(ledger) == 0  # ended once


def test_a_job_without_a_deadline_or_finished_in_time_is_left_alone(ledger: Ledger):
    free, _ = ledger.create_job(spec(None), [Item(key="a", text="x")], chunk_size=1)
    quick, (chunk,) = ledger.create_job(spec(60), [Item(key="a", text="x")], chunk_size=1)
    claim = ledger.claim(chunk, "w", 30)
    ledger.complete(chunk, "w", [Outcome(key="a", status=ItemStatus.OK, output={})])
    with ledger.engine.begin() as conn:
        conn.execute(update(t.Job).values(deadline_at=host_now()).where(t.Job.id == quick))
    assert claim.items and expire_overdue(ledger) == 0
    assert ledger.job(quick).status is JobStatus.SUCCEEDED
    assert ledger.job(free).status is JobStatus.QUEUED


def cut_short_after(ledger: Ledger, monkeypatch: pytest.MonkeyPatch, chunks: int) -> None:
    """The sweep stops (its host dies) after settling `chunks` chunks."""
    settle, done = ledger._settle, []

    def settling(*args: Any, **kwargs: Any) -> bool:
        if len(done) == chunks:
            raise RuntimeError("the sweeper's host went away")
        done.append(1)
        return settle(*args, **kwargs)

    monkeypatch.setattr(ledger, "_settle", settling)


def test_a_large_expiry_settles_a_few_chunks_at_a_time_and_the_next_sweep_resumes_it(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
):
    items = [Item(key=f"k{n}", text="t") for n in range(7)]
    job_id, chunks = ledger.create_job(spec(60), items, chunk_size=1)
    with ledger.engine.begin() as conn:
        conn.execute(update(t.Job).where(t.Job.id == job_id).values(deadline_at=host_now()))
    cut_short_after(ledger, monkeypatch, 3)
    with pytest.raises(RuntimeError):
        ledger.expire(job_id, chunks_per_transaction=2)
    view = ledger.job(job_id)  # two transactions took: 2 chunks, not the third's
    assert view.status is JobStatus.QUEUED and view.counts.error == 2
    monkeypatch.undo()
    assert ledger.overdue() == [job_id] and expire_overdue(ledger) == 1
    view = ledger.job(job_id)
    assert view.status is JobStatus.EXPIRED and view.counts.error == 7
    assert view.chunks_done == len(chunks) and ledger.overdue() == []


def test_a_worker_finishing_the_last_chunk_of_an_expiring_job_ends_it_expired(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
):
    items = [Item(key=f"k{n}", text="t") for n in range(4)]
    job_id, chunks = ledger.create_job(spec(60), items, chunk_size=2)
    claim = ledger.claim(chunks[1], "w", 30)
    with ledger.engine.begin() as conn:
        conn.execute(update(t.Job).where(t.Job.id == job_id).values(deadline_at=host_now()))
    cut_short_after(ledger, monkeypatch, 1)  # the first chunk expired, then the sweep stopped
    with pytest.raises(RuntimeError):
        ledger.expire(job_id, chunks_per_transaction=1)
    monkeypatch.undo()
    assert claim.items is not None
    ok = [Outcome(key=i.key, status=ItemStatus.OK, output={}) for i in claim.items]
    assert ledger.complete(chunks[1], "w", ok)
    view = ledger.job(job_id)
    assert view.status is JobStatus.EXPIRED and (view.counts.ok, view.counts.error) == (2, 2)
