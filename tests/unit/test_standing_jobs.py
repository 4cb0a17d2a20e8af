"""A pipeline's standing job and its inbox (storage/standing_jobs.py), on SQLite and (when
configured) PostgreSQL: events join the open job as chunks, a redelivered event is recorded
once, the job runs until its pipeline closes it, results come out oldest first until they
are marked published, and the figures `sluice listen --status` shows add up."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from schemas.errors import PurgeRefusedError, SluiceError
from schemas.jobs import Item, JobSpec, Outcome
from schemas.states import ItemStatus
from storage import tables as t
from storage.erasure import Erasure
from storage.ledger import Ledger
from storage.standing_jobs import (
    Appended,
    PipelineCounts,
    StandingJobs,
    count_dead_letters,
    pipeline_counts,
)

PIPE = "tickets"


def spec(retention_s: int | None = None) -> JobSpec:
    return JobSpec(
        task="classify-text",
        model="m",
        model_version="v1",
        params={"model_path": "/m"},
        source=f"pipeline:{PIPE}",
        retention_s=retention_s,
    )


def events(*keys: str) -> list[Item]:
    return [Item(key=key, text=f"event {key}") for key in keys]


def outcomes(items: list[Item]) -> list[Outcome]:
    return [
        Outcome(key=i.key, status=ItemStatus.INVALID, error=i.invalid)
        if i.invalid
        else Outcome(key=i.key, status=ItemStatus.OK, output={"label": f"for {i.key}"})
        for i in items
    ]


def run_chunk(ledger: Ledger, chunk_id: str | None) -> list[Item]:
    """A worker's turn at one chunk: claim it, complete it with every item ok."""
    assert chunk_id is not None
    claim = ledger.claim(chunk_id, "w", 30)
    assert claim.outcome == "claimed" and claim.items is not None
    assert ledger.complete(chunk_id, "w", outcomes(claim.items))
    return claim.items


def counts_of(ledger: Ledger, pipeline: str = PIPE) -> PipelineCounts:
    (found,) = [c for c in pipeline_counts(ledger.engine) if c.pipeline == pipeline]
    return found


@pytest.fixture
def jobs(ledger: Ledger) -> StandingJobs:
    return StandingJobs(ledger.engine, ledger.fair_share)


# -- open, current, close ----------------------------------------------------------------


def test_open_makes_a_queued_standing_job_with_no_items(ledger: Ledger, jobs: StandingJobs):
    assert jobs.current(PIPE, "default") is None
    opened = jobs.open(PIPE, spec())
    assert opened.total == 0
    view = ledger.job(opened.job_id)
    assert (view.status, view.counts.total, view.chunks_total) == ("queued", 0, 0)
    assert view.task == "classify-text" and view.finished_at is None
    assert ledger.chunk_ids(opened.job_id) == []
    current = jobs.current(PIPE, "default")
    assert current is not None and current.job_id == opened.job_id
    assert current.total == 0 and current.lane == opened.lane
    assert abs((current.opened_at - opened.opened_at).total_seconds()) < 1e-3
    assert jobs.current("another-pipeline", "default") is None  # each pipeline has its own


def test_a_second_open_ends_an_empty_first_job_at_once(ledger: Ledger, jobs: StandingJobs):
    first = jobs.open(PIPE, spec())
    second = jobs.open(PIPE, spec())
    assert second.job_id != first.job_id
    ended = ledger.job(first.job_id)
    assert (ended.status, ended.counts.total) == ("succeeded", 0)
    assert ended.finished_at is not None and ended.started_at is not None
    current = jobs.current(PIPE, "default")
    assert current is not None and current.job_id == second.job_id
    assert ledger.job(second.job_id).status == "queued"


def test_a_second_open_ends_a_first_job_whose_chunks_are_done_with_its_counts(
    ledger: Ledger, jobs: StandingJobs
):
    first = jobs.open(PIPE, spec())
    batch = [*events("a", "b"), Item(key="c", invalid="empty text")]
    run_chunk(ledger, jobs.append(PIPE, first.job_id, batch).chunk_id)
    assert ledger.job(first.job_id).status == "running"
    jobs.open(PIPE, spec())
    ended = ledger.job(first.job_id)
    assert (ended.status, ended.counts.total, ended.counts.ok, ended.counts.invalid) == (
        "partially_failed", 3, 2, 1)  # fmt: skip
    assert ended.finished_at is not None


def test_a_job_rolled_over_with_a_chunk_pending_ends_when_the_chunk_completes(
    ledger: Ledger, jobs: StandingJobs
):
    first = jobs.open(PIPE, spec())
    pending = jobs.append(PIPE, first.job_id, events("a", "b")).chunk_id
    second = jobs.open(PIPE, spec())
    view = ledger.job(first.job_id)
    assert view.status == "queued" and view.finished_at is None  # its chunk is still to run
    current = jobs.current(PIPE, "default")
    assert current is not None and current.job_id == second.job_id
    run_chunk(ledger, pending)
    view = ledger.job(first.job_id)
    assert (view.status, view.counts.ok) == ("succeeded", 2) and view.finished_at is not None


# -- append ---------------------------------------------------------------------------------


def test_append_writes_the_events_as_one_chunk_and_records_their_keys(
    ledger: Ledger, jobs: StandingJobs
):
    job = jobs.open(PIPE, spec())
    appended = jobs.append(PIPE, job.job_id, events("a", "b", "c"))
    assert appended.chunk_id is not None and not appended.closed
    assert (appended.recorded, appended.repeated) == (["a", "b", "c"], [])
    assert ledger.chunk_ids(job.job_id) == [appended.chunk_id]
    view = ledger.job(job.job_id)
    assert (view.counts.total, view.chunks_total, view.chunks_done) == (3, 1, 0)
    current = jobs.current(PIPE, "default")
    assert current is not None and current.total == 3
    assert [i.key for i in ledger.iter_items(job.job_id)] == ["a", "b", "c"]
    assert [i.text for i in run_chunk(ledger, appended.chunk_id)] == [
        "event a", "event b", "event c"]  # fmt: skip
    assert jobs.unpublished(PIPE) == 3


def test_a_redelivered_event_is_recorded_once(ledger: Ledger, jobs: StandingJobs):
    job = jobs.open(PIPE, spec())
    first = jobs.append(PIPE, job.job_id, events("a", "b", "c"))
    again = jobs.append(PIPE, job.job_id, events("b", "d", "c"))
    assert (again.recorded, again.repeated, again.closed) == (["d"], ["b", "c"], False)
    assert again.chunk_id is not None and again.chunk_id != first.chunk_id
    assert [i.key for i in run_chunk(ledger, again.chunk_id)] == ["d"]  # a chunk of 1
    view = ledger.job(job.job_id)
    assert (view.counts.total, view.chunks_total) == (4, 2)

    known = jobs.append(PIPE, job.job_id, events("a", "d"))
    assert known == Appended(chunk_id=None, recorded=[], repeated=["a", "d"], closed=False)
    view = ledger.job(job.job_id)
    assert (view.counts.total, view.chunks_total) == (4, 2)  # no chunk, nothing counted
    assert len(ledger.chunk_ids(job.job_id)) == 2
    assert jobs.unpublished(PIPE) == 4


def test_an_event_recorded_before_a_rollover_is_still_known_after_it(
    ledger: Ledger, jobs: StandingJobs
):
    old = jobs.open(PIPE, spec())
    jobs.append(PIPE, old.job_id, events("a"))
    new = jobs.open(PIPE, spec())
    appended = jobs.append(PIPE, new.job_id, events("a", "b"))
    assert (appended.recorded, appended.repeated) == (["b"], ["a"])
    assert ledger.job(new.job_id).counts.total == 1


def test_keys_are_per_pipeline(ledger: Ledger, jobs: StandingJobs):
    mine = jobs.open(PIPE, spec())
    theirs = jobs.open("sensors", spec())
    jobs.append(PIPE, mine.job_id, events("a"))
    appended = jobs.append("sensors", theirs.job_id, events("a"))
    assert (appended.recorded, appended.repeated) == (["a"], [])
    assert (jobs.unpublished(PIPE), jobs.unpublished("sensors")) == (1, 1)


def test_append_to_a_closed_job_writes_nothing(ledger: Ledger, jobs: StandingJobs):
    job = jobs.open(PIPE, spec())
    jobs.append(PIPE, job.job_id, events("a"))
    jobs.close(job.job_id)
    refused = jobs.append(PIPE, job.job_id, events("b", "c"))
    assert refused == Appended(closed=True)
    view = ledger.job(job.job_id)
    assert (view.counts.total, view.chunks_total) == (1, 1)
    assert jobs.unpublished(PIPE) == 1
    new = jobs.open(PIPE, spec())  # what the listener does next: the events were not recorded
    appended = jobs.append(PIPE, new.job_id, events("b", "c"))
    assert (appended.recorded, appended.repeated) == (["b", "c"], [])


def test_append_to_a_cancelled_job_writes_nothing(ledger: Ledger, jobs: StandingJobs):
    job = jobs.open(PIPE, spec())
    jobs.append(PIPE, job.job_id, events("a"))
    assert ledger.cancel(job.job_id).status == "cancelled"
    assert jobs.append(PIPE, job.job_id, events("b")) == Appended(closed=True)
    view = ledger.job(job.job_id)
    assert (view.status, view.counts.total, view.chunks_total) == ("cancelled", 1, 1)
    assert jobs.unpublished(PIPE) == 1


def test_append_to_a_job_that_is_gone_writes_nothing(jobs: StandingJobs):
    assert jobs.append(PIPE, "0" * 32, events("a")) == Appended(closed=True)
    assert jobs.unpublished(PIPE) == 0


def test_a_new_job_replaces_a_cancelled_one_and_leaves_it_cancelled(
    ledger: Ledger, jobs: StandingJobs
):
    job = jobs.open(PIPE, spec())
    jobs.append(PIPE, job.job_id, events("a"))
    cancelled = ledger.cancel(job.job_id)
    assert jobs.append(PIPE, job.job_id, events("b")).closed  # what the listener sees...
    new = jobs.open(PIPE, spec())  # ...and so it opens a new job, and appends there
    assert jobs.append(PIPE, new.job_id, events("b")).recorded == ["b"]
    current = jobs.current(PIPE, "default")
    assert current is not None and current.job_id == new.job_id
    view = ledger.job(job.job_id)
    assert (view.status, view.finished_at) == ("cancelled", cancelled.finished_at)


def test_events_of_a_cancelled_job_come_out_as_errors_not_stuck_in_flight(
    ledger: Ledger, jobs: StandingJobs
):
    job = jobs.open(PIPE, spec())
    jobs.append(PIPE, job.job_id, events("a", "b"))
    ledger.cancel(job.job_id)
    ready = jobs.ready(PIPE)
    assert {r["key"] for r in ready} == {"a", "b"}
    assert all(r["status"] == "error" and "cancelled" in r["error"] for r in ready)
    assert all(r["model_version"] == "v1" for r in ready)
    jobs.mark_published(PIPE, ["a", "b"])
    assert jobs.unpublished(PIPE) == 0 and jobs.ready(PIPE) == []


def test_a_pipeline_name_belongs_to_one_tenant(jobs: StandingJobs):
    jobs.open(PIPE, spec())
    other = spec().model_copy(update={"tenant": "acme"})
    with pytest.raises(SluiceError, match="tenant 'default'"):
        jobs.open(PIPE, other)
    with pytest.raises(SluiceError, match="give this one another name"):
        jobs.current(PIPE, "acme")


def test_the_open_job_says_what_it_runs_with(jobs: StandingJobs):
    opened = jobs.open(PIPE, spec())
    current = jobs.current(PIPE, "default")
    assert current is not None and current.made_as == opened.made_as
    changed = spec().model_copy(update={"params": {"model_path": "/other"}})
    assert jobs.open(PIPE, changed).made_as != current.made_as


# -- a standing job's life ------------------------------------------------------------------


def test_a_standing_job_runs_on_when_every_chunk_is_done_and_ends_when_closed(
    ledger: Ledger, jobs: StandingJobs
):
    job = jobs.open(PIPE, spec(retention_s=3600))
    run_chunk(ledger, jobs.append(PIPE, job.job_id, events("a", "b")).chunk_id)
    run_chunk(ledger, jobs.append(PIPE, job.job_id, events("c")).chunk_id)
    view = ledger.job(job.job_id)
    assert (view.status, view.counts.ok, view.chunks_done, view.chunks_total) == (
        "running", 3, 2, 2)  # fmt: skip
    assert view.finished_at is None and view.expires_at is None
    jobs.close(job.job_id)
    view = ledger.job(job.job_id)
    assert (view.status, view.counts.total, view.counts.ok) == ("succeeded", 3, 3)
    assert view.finished_at is not None and view.started_at is not None
    assert view.expires_at == view.finished_at + timedelta(seconds=3600)
    assert jobs.current(PIPE, "default") is None
    jobs.close(job.job_id)  # closing again changes nothing
    assert ledger.job(job.job_id).finished_at == view.finished_at


def test_a_job_closed_with_a_chunk_pending_ends_when_that_chunk_completes(
    ledger: Ledger, jobs: StandingJobs
):
    job = jobs.open(PIPE, spec())
    run_chunk(ledger, jobs.append(PIPE, job.job_id, events("a")).chunk_id)
    pending = jobs.append(PIPE, job.job_id, events("b", "c")).chunk_id
    assert pending is not None
    claim = ledger.claim(pending, "w", 30)  # a worker is on it when the pipeline closes
    assert claim.items is not None
    jobs.close(job.job_id)
    view = ledger.job(job.job_id)
    assert view.status == "running" and view.finished_at is None
    assert jobs.current(PIPE, "default") is None
    assert ledger.complete(pending, "w", outcomes(claim.items))
    view = ledger.job(job.job_id)
    assert (view.status, view.counts.ok, view.chunks_done) == ("succeeded", 3, 2)
    assert view.finished_at is not None


# -- results to publish ---------------------------------------------------------------------


def test_ready_gives_results_not_yet_published_oldest_event_first(
    ledger: Ledger, jobs: StandingJobs
):
    job = jobs.open(PIPE, spec())
    chunks = {key: jobs.append(PIPE, job.job_id, events(key)).chunk_id for key in "abc"}
    assert jobs.ready(PIPE) == []  # recorded, no result yet
    run_chunk(ledger, chunks["c"])
    run_chunk(ledger, chunks["a"])
    assert [r["key"] for r in jobs.ready(PIPE)] == ["a", "c"]  # b has no result yet
    run_chunk(ledger, chunks["b"])
    ready = jobs.ready(PIPE)
    assert [r["key"] for r in ready] == ["a", "b", "c"]
    assert ready[0] == {
        "key": "a",
        "status": "ok",
        "output": {"label": "for a"},
        "error": None,
        "job_id": job.job_id,
        "model_version": "v1",  # the SQL sink writes it
    }
    assert [r["key"] for r in jobs.ready(PIPE, limit=2)] == ["a", "b"]
    assert jobs.ready("another-pipeline") == []


def test_ready_spans_a_rollover_and_shows_failed_items(ledger: Ledger, jobs: StandingJobs):
    old = jobs.open(PIPE, spec())
    pending = jobs.append(PIPE, old.job_id, [Item(key="x", invalid="empty text")]).chunk_id
    new = jobs.open(PIPE, spec())
    run_chunk(ledger, jobs.append(PIPE, new.job_id, events("y")).chunk_id)
    run_chunk(ledger, pending)
    ready = jobs.ready(PIPE)
    assert [(r["key"], r["status"], r["job_id"]) for r in ready] == [
        ("x", "invalid", old.job_id), ("y", "ok", new.job_id)]  # fmt: skip
    assert ready[0]["error"] == "empty text" and ready[0]["output"] is None


def test_published_results_leave_ready_and_unpublished(ledger: Ledger, jobs: StandingJobs):
    job = jobs.open(PIPE, spec())
    run_chunk(ledger, jobs.append(PIPE, job.job_id, events("a", "b", "c")).chunk_id)
    assert jobs.unpublished(PIPE) == 3
    jobs.mark_published(PIPE, ["a", "c"])
    assert [r["key"] for r in jobs.ready(PIPE)] == ["b"]
    assert jobs.unpublished(PIPE) == 1
    jobs.mark_published(PIPE, ["a", "c"])  # published again (a crash before it was marked)
    jobs.mark_published(PIPE, ["never-seen"])
    jobs.mark_published(PIPE, [])
    assert [r["key"] for r in jobs.ready(PIPE)] == ["b"]
    assert jobs.unpublished(PIPE) == 1
    figures = counts_of(ledger)
    assert (figures.recorded, figures.published, figures.in_flight) == (3, 2, 1)
    jobs.mark_published(PIPE, ["b"])
    assert jobs.ready(PIPE) == [] and jobs.unpublished(PIPE) == 0


def test_marking_published_touches_only_its_pipeline(ledger: Ledger, jobs: StandingJobs):
    for pipeline in (PIPE, "sensors"):
        job = jobs.open(pipeline, spec())
        run_chunk(ledger, jobs.append(pipeline, job.job_id, events("a")).chunk_id)
    jobs.mark_published(PIPE, ["a"])
    assert jobs.ready(PIPE) == []
    assert [r["key"] for r in jobs.ready("sensors")] == ["a"]


def test_a_redelivery_of_a_published_event_is_not_run_again(ledger: Ledger, jobs: StandingJobs):
    job = jobs.open(PIPE, spec())
    run_chunk(ledger, jobs.append(PIPE, job.job_id, events("a")).chunk_id)
    jobs.mark_published(PIPE, ["a"])
    again = jobs.append(PIPE, job.job_id, events("a"))
    assert (again.chunk_id, again.recorded, again.repeated) == (None, [], ["a"])
    assert jobs.ready(PIPE) == [] and jobs.unpublished(PIPE) == 0


# -- figures --------------------------------------------------------------------------------


def test_pipeline_counts(ledger: Ledger, jobs: StandingJobs):
    assert pipeline_counts(ledger.engine) == []
    job = jobs.open(PIPE, spec())
    assert counts_of(ledger) == PipelineCounts(
        pipeline=PIPE, job_id=job.job_id, recorded=0, in_flight=0, published=0,
        dead_lettered=0, oldest_unpublished_s=None,
    )  # fmt: skip
    chunk = jobs.append(PIPE, job.job_id, events("a", "b", "c")).chunk_id
    count_dead_letters(ledger.engine, PIPE, 2)
    count_dead_letters(ledger.engine, PIPE, 1)
    figures = counts_of(ledger)
    assert (figures.recorded, figures.published, figures.in_flight, figures.dead_lettered) == (
        3, 0, 3, 3)  # fmt: skip
    assert figures.oldest_unpublished_s is not None and 0 <= figures.oldest_unpublished_s < 60

    run_chunk(ledger, chunk)
    jobs.mark_published(PIPE, ["a", "b"])
    figures = counts_of(ledger)
    assert (figures.recorded, figures.published, figures.in_flight) == (3, 2, 1)
    assert figures.oldest_unpublished_s is not None

    jobs.mark_published(PIPE, ["c"])
    figures = counts_of(ledger)
    assert (figures.recorded, figures.published, figures.in_flight) == (3, 3, 0)
    assert figures.oldest_unpublished_s is None
    assert figures.as_dict()["dead_lettered"] == 3


def test_pipeline_counts_are_per_pipeline(ledger: Ledger, jobs: StandingJobs):
    for pipeline, keys in ((PIPE, "ab"), ("sensors", "xyz")):
        job = jobs.open(pipeline, spec())
        jobs.append(pipeline, job.job_id, events(*keys))
    count_dead_letters(ledger.engine, "sensors", 5)
    count_dead_letters(ledger.engine, "not-a-pipeline", 5)  # nothing to count it on
    found = {c.pipeline: c for c in pipeline_counts(ledger.engine)}
    assert sorted(found) == ["sensors", PIPE]
    assert (found[PIPE].recorded, found[PIPE].dead_lettered) == (2, 0)
    assert (found["sensors"].recorded, found["sensors"].dead_lettered) == (3, 5)


# -- erasure --------------------------------------------------------------------------------


def inbox_rows(ledger: Ledger, job_id: str) -> int:
    with ledger.engine.connect() as conn:
        query = select(func.count()).where(t.PipelineEvent.job_id == job_id)
        return conn.scalar(query) or 0


def pipeline_job_id(ledger: Ledger, pipeline: str = PIPE) -> str | None:
    with ledger.engine.connect() as conn:
        query = select(t.PipelineJob.job_id).where(t.PipelineJob.pipeline == pipeline)
        return conn.scalar(query)


def erasure(ledger: Ledger) -> Erasure:
    return Erasure(ledger.engine, lambda uri: None, lambda uri: None)  # no exports stored


def test_purging_a_finished_pipeline_job_removes_its_inbox(ledger: Ledger, jobs: StandingJobs):
    job = jobs.open(PIPE, spec())
    run_chunk(ledger, jobs.append(PIPE, job.job_id, events("a", "b")).chunk_id)
    jobs.mark_published(PIPE, ["a"])
    with pytest.raises(PurgeRefusedError):  # still open: it takes events
        erasure(ledger).purge(job.job_id)
    assert inbox_rows(ledger, job.job_id) == 2
    jobs.close(job.job_id)
    erased = erasure(ledger).purge(job.job_id)
    assert (erased.jobs, erased.rows) == ([job.job_id], 2)
    assert inbox_rows(ledger, job.job_id) == 0
    assert pipeline_job_id(ledger) is None
    assert (
        jobs.current(PIPE, "default") is None
        and jobs.ready(PIPE) == []
        and jobs.unpublished(PIPE) == 0
    )
    assert counts_of(ledger) == PipelineCounts(
        pipeline=PIPE, job_id=None, recorded=0, in_flight=0, published=0,
        dead_lettered=0, oldest_unpublished_s=None,
    )  # fmt: skip
    new = jobs.open(PIPE, spec())  # the pipeline goes on
    assert pipeline_job_id(ledger) == new.job_id


def test_purging_a_rolled_over_job_leaves_the_open_one(ledger: Ledger, jobs: StandingJobs):
    old = jobs.open(PIPE, spec())
    run_chunk(ledger, jobs.append(PIPE, old.job_id, events("a")).chunk_id)
    new = jobs.open(PIPE, spec())
    jobs.append(PIPE, new.job_id, events("b"))
    assert ledger.job(old.job_id).status == "succeeded"
    erasure(ledger).purge(old.job_id)
    assert (inbox_rows(ledger, old.job_id), inbox_rows(ledger, new.job_id)) == (0, 1)
    assert pipeline_job_id(ledger) == new.job_id
    current = jobs.current(PIPE, "default")
    assert current is not None and current.job_id == new.job_id
    assert counts_of(ledger).recorded == 1
