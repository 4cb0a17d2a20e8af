"""A large input is written in batches while its job is `receiving` (issue 16): no worker
starts it, its chunks are sent only after the last batch commits, a key repeated deep in it
fails the submit naming the key and leaves nothing, and the submitting process's memory does
not grow with the number of rows. On SQLite and (when configured) PostgreSQL."""

import json
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select, text

import producers.enrich as enrich_module
from producers import Client, RecordingDispatcher, readers
from producers.enrich import EnrichSpec, SourceSpec, enrich
from producers.submit_batches import prepared_batches
from schemas.catalog import load_catalog
from schemas.errors import (
    DuplicateKeysError,
    InputFileError,
    QuotaExceededError,
    SluiceError,
    TooManyItemsError,
)
from schemas.jobs import Item
from schemas.settings import Settings
from schemas.states import ClaimOutcome, JobStatus
from storage import tables as t
from storage.engine import make_engine
from tests.unit.test_enrich_reruns import InlineWorker

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"  # text-stats: chunks of 4, no model
TASK = "text-stats"
BATCH = 10  # items per transaction in these tests (Client.receive_batch)


@pytest.fixture
def client(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Client:
    return make_client(database_url, tmp_path, monkeypatch)


def make_client(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: object
) -> Client:
    monkeypatch.syspath_prepend(str(PLUGINS))
    made = Client(
        Settings(
            data_dir=tmp_path / "data",
            database_url=database_url,
            broker_url="redis://127.0.0.1:1/0",  # never reached: the dispatcher records
            task_modules="sluice_text_stats",
            **settings,  # type: ignore[arg-type]
        ),
        RecordingDispatcher(),
    )
    made.receive_batch = BATCH
    # rows become items a block at a time, as many as a batch here (RECEIVE_BATCH holds
    # whole blocks): a reader reads no further ahead of what is written than it does for real
    monkeypatch.setattr(readers, "ITEM_BLOCK", BATCH)
    with made.ledger.engine.begin() as conn:  # the shared PostgreSQL test database's
        conn.execute(delete(t.JobKey))  # (not truncated with jobs: no foreign key)
    return made


def sent(client: Client) -> RecordingDispatcher:
    assert isinstance(client.dispatcher, RecordingDispatcher)
    return client.dispatcher


def left_behind(client: Client) -> dict[str, int]:
    """Rows of any job in the ledger: a failed submit leaves none."""
    with client.ledger.engine.connect() as conn:
        return {
            table.__tablename__: conn.scalar(select(func.count()).select_from(table)) or 0
            for table in (t.Job, t.Chunk, t.JobKey)
        }


NOTHING = {"jobs": 0, "chunks": 0, "job_keys": 0}


def items(n: int, repeat: tuple[int, str] | None = None) -> Iterator[Item]:
    for k in range(1, n + 1):
        key = repeat[1] if repeat and k == repeat[0] else f"k{k}"
        yield Item(key=key, text=f"text number {k}")


def test_a_large_input_is_received_in_batches_and_queued_after_the_last(client: Client):
    seen_while_reading: list[tuple[JobStatus, int, ClaimOutcome]] = []

    def watched() -> Iterator[Item]:
        for n, item in enumerate(items(95), 1):
            if n == 60:  # batches written, the input not read to its end
                (job,) = client.ledger.jobs(5)
                first_chunk = client.ledger.chunk_ids(job.id)[0]
                outcome = client.ledger.claim(first_chunk, "worker", 30).outcome
                seen_while_reading.append((job.status, len(sent(client).sends), outcome))
            yield item

    job_id = client.submit_items(watched(), TASK)
    assert seen_while_reading == [(JobStatus.RECEIVING, 0, ClaimOutcome.RECEIVING)]
    view = client.status(job_id)
    assert (view.status, view.counts.total, view.chunks_total) == (JobStatus.QUEUED, 95, 24)
    chunk_ids = client.ledger.chunk_ids(job_id)
    assert sent(client).chunk_ids == sorted(chunk_ids)  # every chunk, once, in order
    assert [i.key for i in client.ledger.iter_items(job_id)] == [f"k{k}" for k in range(1, 96)]
    assert client.ledger.claim(chunk_ids[0], "worker", 30).outcome == ClaimOutcome.CLAIMED
    assert left_behind(client)["job_keys"] == 95  # until the sweeper clears them
    assert client.ledger.receiver.clear_keys() == 95
    assert left_behind(client) == {"jobs": 1, "chunks": 24, "job_keys": 0}


@pytest.mark.parametrize("where", [93, 17])  # a later batch than the first; the same batch
def test_a_key_repeated_deep_in_the_input_fails_naming_it_and_leaves_nothing(
    client: Client, where: int
):
    with pytest.raises(DuplicateKeysError, match="duplicate keys in the input: 'k12'"):
        client.submit_items(items(120, repeat=(where, "k12")), TASK)
    assert left_behind(client) == NOTHING
    assert sent(client).sends == []


def test_an_input_that_fails_midway_leaves_nothing(client: Client):
    def breaks() -> Iterator[Item]:
        yield from items(55)
        raise InputFileError("input.jsonl: line 56 is not valid UTF-8")

    with pytest.raises(InputFileError, match="line 56"):
        client.submit_items(breaks(), TASK)
    assert left_behind(client) == NOTHING
    assert sent(client).sends == []


def test_the_tenant_limit_counts_the_whole_input(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    client = make_client(database_url, tmp_path, monkeypatch, tenant_max_in_flight=50)
    with pytest.raises(TooManyItemsError, match="over the cap of 50"):
        client.submit_items(items(95), TASK)  # refused once past 50, not at the end
    assert left_behind(client) == NOTHING
    first = client.submit_items(items(30), TASK)
    with pytest.raises(QuotaExceededError, match="30 items in flight; 25 more"):
        client.submit_items((Item(key=f"b{n}", text="x") for n in range(25)), TASK)
    assert [j.id for j in client.ledger.jobs(5)] == [first]
    assert sent(client).chunk_ids == sorted(client.ledger.chunk_ids(first))


def test_a_job_its_submitter_abandoned_is_found_and_removed(client: Client):
    from schemas.jobs import JobSpec
    from workers.sweeper import remove_abandoned

    receiving = client.ledger.receiver.open(JobSpec(task=TASK, model="none", model_version=""), 4)
    receiving.write(list(items(8)))
    receiving.flush()  # the batch committed (as a submitter that then died)
    receiver = client.ledger.receiver
    assert receiver.abandoned(idle_seconds=3600) == []  # written a moment ago: alive
    assert receiver.abandoned(idle_seconds=-1) == [receiving.job_id]
    assert remove_abandoned(client.ledger, idle_seconds=3600) == 0
    assert remove_abandoned(client.ledger, idle_seconds=-1) == 1  # the sweeper's
    assert left_behind(client) == NOTHING


def test_a_prompt_field_is_looked_for_in_every_batch_and_refused_only_when_none_has_it():
    spec = load_catalog().get("generate")
    params = spec.check_params({"prompt": "Title: {title}"})
    late = [Item(key=str(n), text="x") for n in range(15)]
    late += [Item(key="15", text="x", fields={"title": "found"})]
    batches = list(prepared_batches(spec, params, late, size=10))
    assert [len(b) for b in batches] == [10, 6]
    assert batches[1][-1].fields == {"title": "found"} and batches[0][0].invalid
    nowhere = [Item(key=str(n), text="x", fields={"body": "b"}) for n in range(15)]
    written = []
    with pytest.raises(SluiceError, match=r"reads \{title\}.*its fields: text, body"):
        for batch in prepared_batches(spec, params, nowhere, size=10):
            written.append(batch)  # a caller writes each batch; the refusal comes at the end
    assert [len(b) for b in written] == [10, 5]


def peak_bytes(client: Client, path: Path) -> int:
    tracemalloc.start()
    try:
        client.submit_file(path, TASK, key_column="id")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Five times the rows, about the same peak: a batch is held, never the input (a list of
    every item would take five times as much)."""
    client = make_client(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path, monkeypatch)
    client.receive_batch = 1000
    monkeypatch.setattr("storage.row_sources.JSONL_COLUMNS_FROM", 100)
    peaks = []
    for n in (6_000, 30_000):
        path = tmp_path / f"{n}.jsonl"
        path.write_text("".join(json.dumps({"id": k, "text": f"row {k} " * 8}) + "\n"
                                for k in range(n)))  # fmt: skip
        peaks.append(peak_bytes(client, path))
    small, large = peaks
    assert large < small * 1.5, f"peak {small} bytes for 6,000 rows, {large} for 30,000"


def test_a_job_cancelled_while_received_stays_cancelled_with_nothing_to_run(client: Client):
    def cancelled_midway() -> Iterator[Item]:
        for n, item in enumerate(items(60), 1):
            if n == 35:
                (job,) = client.ledger.jobs(5)
                client.cancel(job.id)
            yield item

    with pytest.raises(SluiceError, match="was cancelled while its input was written"):
        client.submit_items(cancelled_midway(), TASK)
    (job,) = client.ledger.jobs(5)
    assert job.status == JobStatus.CANCELLED
    assert left_behind(client) == {"jobs": 1, "chunks": 0, "job_keys": 0}
    assert sent(client).sends == []


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
        conn.execute(
            text("INSERT INTO notes VALUES (:id, :body)"),
            [{"id": k, "body": f"note {k} words"} for k in range(1, 46)],
        )
    yield engine
    engine.dispose()


def enrich_notes(client: Client, source: Engine) -> Any:
    url = source.url.render_as_string(hide_password=False)
    spec = EnrichSpec(SourceSpec(url, "notes", "id", "body"), dest_table="notes_out", task=TASK)
    return enrich(client, spec)


def test_enrich_streams_a_table_into_one_job_and_a_killed_receive_starts_over(
    client: Client, source: Engine, monkeypatch: pytest.MonkeyPatch
):
    """45 rows in batches of 10; the first run dies while its job is received (no cleanup,
    as under SIGKILL): the next run removes that job and enriches every row."""
    client.dispatcher = InlineWorker(client.ledger)
    real_rows = enrich_module.read_rows

    def dies_at_row_25(*args: Any, **kwargs: Any) -> Any:
        table, rows = real_rows(*args, **kwargs)
        return table, (row if n < 25 else sys.exit("killed") for n, row in enumerate(rows))

    monkeypatch.setattr(enrich_module, "read_rows", dies_at_row_25)
    monkeypatch.setattr(client.ledger.receiver, "abandon", lambda *a, **k: True)
    with pytest.raises(SystemExit):
        enrich_notes(client, source)
    (stranded,) = client.ledger.jobs(5)
    assert stranded.status == JobStatus.RECEIVING and stranded.counts.total == 20
    monkeypatch.undo()
    client.dispatcher = InlineWorker(client.ledger)
    report = enrich_notes(client, source)
    assert (report.rows_read, report.rows_written, report.status) == (45, 45, "succeeded")
    assert [j.id for j in client.ledger.jobs(5)] == [report.job_id]  # the stranded one: gone
    with source.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM notes_out")).scalar_one() == 45


def test_keys_with_tabs_backslashes_and_newlines_are_kept_and_compared_exactly(client: Client):
    odd = ["tab\there", "back\\slash", "new\nline", "cr\rkey", "plain"]
    ordinary = [Item(key=f"k{n}", text="x") for n in range(20)]
    job_id = client.submit_items(ordinary + [Item(key=k, text="x") for k in odd], TASK)
    assert [i.key for i in client.ledger.iter_items(job_id)][-5:] == odd
    again = [Item(key=k, text="x") for k in odd] + ordinary + [Item(key="new\nline", text="y")]
    with pytest.raises(DuplicateKeysError, match=r"'new\\nline'"):
        client.submit_items(iter(again), TASK)


def test_keys_repeated_across_batches_written_side_by_side_fail_naming_one(
    client: Client, monkeypatch: pytest.MonkeyPatch
):
    """On PostgreSQL two batches are in flight at once: keys repeated across them in crossing
    order ('a' first and 'b' last in one, the other way round in the next) fail the submit
    naming a repeated key (never a deadlock or a database error), and leave nothing; every
    time. Batches of 3,000, so that both are written at the same moment."""
    size = 3000
    client.receive_batch = size
    monkeypatch.setattr(readers, "ITEM_BLOCK", size)
    fill = [f"f{n}" for n in range(2 * size)]
    keys = ["a", *fill[: size - 2], "b", "b", *fill[size - 2 : 2 * size - 4], "a"]
    for _ in range(3):
        with pytest.raises(DuplicateKeysError, match="duplicate keys in the input: '[ab]'"):
            client.submit_items((Item(key=k, text="x") for k in keys + fill[-100:]), TASK)
        assert left_behind(client) == NOTHING
        assert sent(client).sends == []


def test_a_job_removed_while_received_fails_its_next_batch_saying_so(client: Client):
    """The sweeper removes a job whose submitter looked dead; the submitter, only slow, is
    told at its next batch, and nothing of the job is left."""
    from schemas.jobs import JobSpec

    receiver = client.ledger.receiver
    receiving = receiver.open(JobSpec(task=TASK, model="none", model_version=""), 4)
    receiving.write(list(items(8)))
    receiving.flush()
    assert receiver.abandon(receiving.job_id)  # as the sweeper would
    receiving.write([Item(key=f"late{n}", text="x") for n in range(8)])
    with pytest.raises(SluiceError, match="was removed while its input was written"):
        receiving.flush()
    assert left_behind(client) == NOTHING


def test_a_batch_the_database_lost_fails_the_submit_instead_of_queuing_a_gap(client: Client):
    """Batches commit asynchronously on PostgreSQL: a crash can lose one while the submitter
    goes on over a new connection. The job then holds fewer items than were written, and
    finishing it fails saying so; nothing of it is queued or left."""
    from schemas.jobs import JobSpec

    receiver = client.ledger.receiver
    receiving = receiver.open(JobSpec(task=TASK, model="none", model_version=""), 4)
    receiving.write(list(items(8)))
    receiving.flush()
    with client.ledger.engine.begin() as conn:  # the second chunk's batch, as if lost
        conn.execute(delete(t.Chunk).where(t.Chunk.job_id == receiving.job_id, t.Chunk.seq == 1))
        conn.execute(
            t.Job.__table__.update()
            .where(t.Job.id == receiving.job_id)
            .values(total=t.Job.total - 4, chunks_total=t.Job.chunks_total - 1)
        )
    receiving.write([Item(key=f"late{n}", text="x") for n in range(4)])
    with pytest.raises(SluiceError, match="holds 8 of the 12 items written"):
        receiving.finish()
    receiving.abandon()
    assert left_behind(client) == NOTHING
    assert sent(client).sends == []
