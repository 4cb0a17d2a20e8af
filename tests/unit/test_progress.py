"""A job's rate and ETA (issue 23, storage/progress.py): what the CLI bar, the SDK's JobView
and the API's `rows_per_s` / `eta_seconds` show. The estimator on known timelines, then the
ledger's reading of real chunk ends (SQLite, and PostgreSQL when configured)."""

import math
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from ops.progress import pace
from producers import Client, RecordingDispatcher
from producers.api import create_app
from schemas.jobs import Item
from schemas.settings import Settings
from storage import tables as t
from storage.apikeys import ApiKeys
from storage.clock import db_now
from storage.ledger import Ledger
from storage.progress import estimate
from tests.unit.test_ledger import items, ok, spec


def steady(rows_per_chunk: int, every_s: float, chunks: int, now: float) -> list[tuple[float, int]]:
    """Chunks of `rows_per_chunk` ending every `every_s` seconds, the last one at `now`."""
    return [(now - every_s * (chunks - 1 - i), rows_per_chunk) for i in range(chunks)]


def test_a_steady_job_gets_the_eta_of_its_pace():
    now = 1000.0
    progress = estimate(steady(20, 2.0, 10, now), done=500, total=1000, now=now, running=True)
    assert progress.rows_per_s == pytest.approx(10.0)
    assert progress.eta_seconds == pytest.approx(50.0)


def test_no_eta_until_one_percent_is_done_and_two_chunks_have_ended():
    now = 1000.0
    one_sample = estimate([(now, 20)], done=20, total=100, now=now, running=True)
    assert one_sample.eta_seconds is None and one_sample.rows_per_s is None
    too_little = estimate(steady(5, 1.0, 3, now), done=15, total=10_000, now=now, running=True)
    assert too_little.eta_seconds is None and too_little.rows_per_s == pytest.approx(5.0)
    enough = estimate(steady(5, 1.0, 3, now), done=100, total=10_000, now=now, running=True)
    assert enough.eta_seconds == pytest.approx(9900 / 5.0)
    ended = estimate(steady(5, 1.0, 3, now), done=100, total=100, now=now, running=False)
    assert ended.eta_seconds is None


def test_recent_chunks_weigh_more_than_older_ones():
    """A job that went from 5 to 20 rows/s half a minute ago: the rate is near the new pace."""
    now = 1000.0
    slow = steady(10, 2.0, 15, now - 30)  # 5 rows/s until 30 s ago
    fast = [(now - 30 + 0.5 * (i + 1), 10) for i in range(60)]  # then 20 rows/s
    rate = estimate(slow + fast, done=500, total=1000, now=now, running=True).rows_per_s
    assert rate is not None and 16.0 < rate < 20.0


def test_chunks_ending_together_count_over_the_time_they_took():
    """Eight workers end eight chunks of 100 rows within 70 ms, 30 s after the job began:
    about 26.7 rows/s, not thousands; and no rate from milliseconds of work alone."""
    began, now = 1000.0, 1030.1
    burst = [(1030.0 + 0.01 * i, 100) for i in range(8)]
    rate = estimate(burst, 800, 10_000, now, running=True, anchor=began).rows_per_s
    assert rate == pytest.approx(800 / 30.07, rel=0.02)
    assert estimate(burst, 800, 10_000, now, running=True).rows_per_s is None  # 70 ms of work


def test_an_anchor_before_the_window_counts_from_the_windows_start():
    """The end before the window anchors the first one inside it; only the part of that
    interval inside the window counts, with the rows in proportion."""
    now = 1000.0
    ends = [(now - 30.0, 30), (now, 30)]  # 30 rows per 30 s... after a 90 s gap before
    full = estimate(ends, 500, 1000, now, True, anchor=now - 120.0).rows_per_s
    clipped = estimate(ends, 500, 1000, now, True, anchor=now - 120.0, since=now - 60.0)
    assert clipped.rows_per_s == pytest.approx(
        (30 * 30 / 90 * math.exp(-30 / 20) + 30) / (30 * math.exp(-30 / 20) + 30), rel=1e-6
    )
    assert full is not None and full < clipped.rows_per_s  # type: ignore[operator]


def test_a_stalled_job_shows_a_growing_eta():
    """Nothing has ended for longer than any gap seen: the rate falls, the ETA grows, it never
    points at a moment already past."""
    samples = steady(20, 2.0, 10, 1000.0)
    etas = [
        estimate(samples, done=500, total=1000, now=now, running=True).eta_seconds
        for now in (1000.0, 1001.0, 1010.0, 1030.0)
    ]
    assert etas[0] == etas[1] == pytest.approx(50.0)  # within the usual gap: no change
    assert etas[0] < etas[2] < etas[3]  # type: ignore[operator]


def settle(ledger: Ledger, job_id: str, chunks: int, every_s: float) -> None:
    """End the job's first `chunks` chunks as a worker does, then date their ends every
    `every_s` seconds up to now (database time), the job's first claim `every_s` before
    the first end: a steady pace."""
    with ledger.engine.begin() as c:
        ids = c.scalars(
            select(t.Chunk.id).where(t.Chunk.job_id == job_id).order_by(t.Chunk.seq)
        ).all()[:chunks]
    for chunk in ids:
        claim = ledger.claim(chunk, "w1", 30)
        assert claim.items is not None and ledger.complete(chunk, "w1", ok(claim.items))
    with ledger.engine.begin() as c:
        now = db_now(c)
        for i, chunk in enumerate(ids):
            at = now - timedelta(seconds=every_s * (len(ids) - 1 - i))
            c.execute(update(t.Chunk).where(t.Chunk.id == chunk).values(finished_at=at))
        began = now - timedelta(seconds=every_s * len(ids))
        c.execute(update(t.Job).where(t.Job.id == job_id).values(started_at=began))


def test_the_ledger_reads_the_last_minute_of_chunk_ends(ledger: Ledger):
    job_id, _ = ledger.create_job(spec(), items(40), chunk_size=2)  # 20 chunks of 2
    settle(ledger, job_id, chunks=10, every_s=2.0)
    view = ledger.job(job_id)
    assert view.status == "running" and view.counts.processed == 20
    assert view.rows_per_s == pytest.approx(1.0, rel=0.05)  # 2 rows every 2 s
    assert view.eta_seconds == pytest.approx(20.0, rel=0.05)  # 20 rows left
    shown = view.as_dict()
    assert shown["eta_seconds"] == pytest.approx(20.0, rel=0.05)
    assert "1.0 rows/s, ETA 2" in pace(view)  # the CLI bar's words: `ETA 20s` or so
    assert ledger.jobs()[0].eta_seconds == view.eta_seconds


def test_the_api_shows_the_eta_of_a_tenants_job(database_url: str, tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, broker_url="redis://127.0.0.1:1/0"
    )
    client = Client(settings, RecordingDispatcher())
    client.settings.chunk_size = 2
    key = ApiKeys(client.ledger.engine).create("acme").key
    rows = [Item(key=f"k{i}", text=f"t{i}") for i in range(40)]
    job_id = client.submit_items(rows, task="embed", tenant="acme")
    api = TestClient(create_app(client=client))
    auth = {"Authorization": f"Bearer {key}"}
    body = api.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert body["eta_seconds"] is None and body["rows_per_s"] is None  # nothing done yet
    settle(client.ledger, job_id, chunks=10, every_s=2.0)
    body = api.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert body["eta_seconds"] == pytest.approx(20.0, rel=0.05)
    listed = api.get("/v1/jobs", headers=auth).json()["jobs"][0]
    assert listed["rows_per_s"] == pytest.approx(1.0, rel=0.05)
    schema = api.get("/openapi.json").json()["components"]["schemas"]["JobOut"]
    assert {"eta_seconds", "rows_per_s"} <= set(schema["properties"])
