"""`sluice enrich` re-run: keys of every exact SQL type come back as the source's own values,
rows that ended `error` are retried by the next incremental runs (then given up, visibly),
and a run killed at any step is resumed, not started over. On SQLite, and on PostgreSQL when
SLUICE_TEST_DATABASE_URL is set.

The ledger, the source and the destination are real databases; Celery and Ray are beside the
point here and are stood in for by InlineWorker, which completes chunks through the real
ledger. tests/integration/test_enrich.py runs the same through `sluice enrich` and workers."""

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, Table, Uuid, select, text, type_coerce

import producers.enrich as enrich_module
from producers import ChunkSend, Client, RecordingDispatcher
from producers.enrich import EnrichReport, EnrichSpec, enrich
from producers.warehouse_tables import ENRICHED, SourceSpec
from schemas.errors import UnusableKeyError
from schemas.jobs import Item, Outcome
from schemas.settings import Settings
from schemas.states import ItemStatus
from storage.engine import make_engine
from storage.enrich_runs import EnrichRuns
from storage.ledger import Ledger

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"  # text-stats: a task with no model
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class InlineWorker(RecordingDispatcher):
    """Stands in for Celery + Ray: chunks are completed through the real ledger (claim, then
    complete) when sent, or at `drain()` while `hold` is set. A text holding a word of
    `failing` ends `error`, as the items of a dead-lettered chunk do."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger
        self.failing: set[str] = set()
        self.hold = False
        self.pending: list[str] = []

    def on_send(self, send: ChunkSend) -> None:
        self.pending += send.chunk_ids
        if not self.hold:
            self.drain()

    def drain(self) -> None:
        pending, self.pending = self.pending, []
        for chunk_id in pending:
            claim = self.ledger.claim(chunk_id, "inline", 30)
            if claim.outcome == "claimed":
                assert claim.items is not None
                self.ledger.complete(chunk_id, "inline", [self.outcome(i) for i in claim.items])

    def outcome(self, item: Item) -> Outcome:
        if item.invalid:
            return Outcome(key=item.key, status=ItemStatus.INVALID, error=item.invalid)
        if any(word in item.text for word in self.failing):
            return Outcome(key=item.key, status=ItemStatus.ERROR, error="RuntimeError: boom")
        if "VECTOR" in item.text:  # an embedding, with floats JSON must keep exactly
            vector = [0.1, -2.5e-8, 1e300, 3.0, len(item.text) / 7]
            return Outcome(key=item.key, status=ItemStatus.OK, output={"embedding": vector})
        return Outcome(key=item.key, status=ItemStatus.OK, output={"label": item.text.split()[0]})


@pytest.fixture
def client(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.syspath_prepend(str(PLUGINS))
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url="redis://127.0.0.1:1/0",  # never reached: InlineWorker sends nothing
        task_modules="sluice_text_stats",
    )
    made = Client(settings)
    made.dispatcher = InlineWorker(made.ledger)  # it needs the client's ledger
    return made


@pytest.fixture
def warehouse(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    """The source database (the test PostgreSQL database, or a SQLite file of its own); the
    wh_* tables a test made are dropped after it."""
    pg = database_url.startswith("postgresql")
    engine = make_engine(database_url if pg else f"sqlite:///{tmp_path / 'warehouse.db'}")
    yield engine
    meta = MetaData()
    meta.reflect(engine, only=lambda name, _: name.startswith("wh_"))
    meta.drop_all(engine)
    engine.dispose()


def worker(client: Client) -> InlineWorker:
    assert isinstance(client.dispatcher, InlineWorker)
    return client.dispatcher


def make_table(engine: Engine, name: str, key_type: str, keys: list[Any]) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {name} (id {key_type}, body TEXT, updated_at INTEGER)"))
        if keys:
            conn.execute(
                text(f"INSERT INTO {name} VALUES (:id, :body, :ts)"),
                [{"id": k, "body": f"row {n} text", "ts": n} for n, k in enumerate(keys)],
            )


def run(
    client: Client, engine: Engine, table: str, *, since: bool = False, **kw: Any
) -> EnrichReport:
    url = engine.url.render_as_string(hide_password=False)
    full = kw.pop("full", False)
    source = SourceSpec(url, table, "id", "body", since_column="updated_at" if since else None)
    spec = EnrichSpec(source=source, dest_table=f"{table}_out", task="text-stats", **kw)
    return enrich(client, spec, full=full)


def keys_in(engine: Engine, table: str) -> list[Any]:
    """The keys as the driver returns them, with their Python types."""
    with engine.connect() as conn:
        values = conn.execute(text(f"SELECT id FROM {table}")).scalars().all()
    return sorted(((type(v).__name__, v) for v in values), key=repr)


def matching(engine: Engine, table: str) -> int:
    """Destination rows whose key equals a source key by the database's own comparison."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(f"SELECT count(*) FROM {table} s JOIN {table}_out d ON s.id = d.id")
            ).scalar_one()
        )


U = [uuid.UUID(int=n * 0x1111_2222_3333_4444_5555_6666_7777_8888) for n in (1, 2, 3)]
PG_KEYS = {
    "uuid": U,
    "numeric(12,4)": [Decimal("1.1000"), Decimal("-3.0001"), Decimal("12345678.1234")],
    "date": [dt.date(2026, 1, 1), dt.date(1999, 12, 31), dt.date(2026, 2, 28)],
    "timestamptz": [T0, T0 + dt.timedelta(microseconds=1), T0 + dt.timedelta(days=400)],
    "timestamp": [dt.datetime(2026, 1, 1, 10, 0, 0, 5), dt.datetime(2026, 1, 1, 10, 0, 1)],
    "time": [dt.time(10, 0), dt.time(23, 59, 59, 999999)],
    "bytea": [b"\x00\xff", b"sluice", bytes(range(32))],
    "bigint": [2**40, -7, 0],
    "varchar(20)": ["a", "row:1", " spaced "],
}
SQLITE_KEYS = {
    "UUID": [str(u) for u in U],  # NUMERIC affinity: kept as the text it was given
    "NUMERIC(12,4)": [1.1, 7, 2.5],  # a REAL, an INTEGER: as SQLite stored them
    "DATE": ["2026-01-01", "1999-12-31"],
    "DATETIME": ["2026-01-01 10:00:00.000005", "2026-01-01 10:00:01"],
    "BLOB": [b"\x00\xff", b"sluice"],
    "INTEGER": [2**40, -7, 0],
    "TEXT": ["a", "row:1", "7"],
}


def test_keys_of_every_exact_type_come_back_as_the_source_holds_them(
    client: Client, warehouse: Engine
):
    cases = PG_KEYS if warehouse.dialect.name == "postgresql" else SQLITE_KEYS
    for n, (key_type, keys) in enumerate(cases.items()):
        table = f"wh_keys_{n}"
        make_table(warehouse, table, key_type, keys)
        first = run(client, warehouse, table)
        assert (first.rows_read, first.rows_written, first.status) == (
            len(keys),
            len(keys),
            "succeeded",
        ), key_type
        assert keys_in(warehouse, f"{table}_out") == keys_in(warehouse, table), key_type
        assert matching(warehouse, table) == len(keys), key_type
        run(client, warehouse, table)  # again: upserted onto the same rows, none added
        assert keys_in(warehouse, f"{table}_out") == keys_in(warehouse, table), key_type
    uuid_job = next(j for j in client.ledger.jobs(100) if j.source and "wh_keys_0" in j.source)
    shown = {r["key"] for r in client.results(uuid_job.id)}
    assert shown == {str(u) for u in U}  # results name each row by its key as text


@pytest.mark.parametrize(
    "key_type, named",
    [
        ("DOUBLE PRECISION", "approximate numbers"),
        ("REAL", "approximate numbers"),
        ("BOOLEAN", "true/false is no key"),
        ("JSON", "not a type whose values come back exactly"),
        ("", "has no declared type"),
    ],
)
def test_keys_that_cannot_come_back_are_refused_before_any_work(
    client: Client, warehouse: Engine, key_type: str, named: str
):
    if key_type == "" and warehouse.dialect.name != "sqlite":
        pytest.skip("only SQLite has columns without a type")
    make_table(warehouse, "wh_bad", key_type, [])
    with pytest.raises(UnusableKeyError, match=f"key column 'id' .*{named}"):
        run(client, warehouse, "wh_bad")
    assert client.ledger.jobs() == []  # nothing submitted, nothing written
    with warehouse.connect() as conn:
        assert not warehouse.dialect.has_table(conn, "wh_bad_out")


def test_a_row_whose_key_cannot_come_back_is_invalid_and_not_written_back(
    client: Client, warehouse: Engine
):
    if warehouse.dialect.name != "sqlite":
        pytest.skip("only SQLite stores values of another type than the column's")
    make_table(warehouse, "wh_loose", "INTEGER", [1, "x", None, 2.5])
    report = run(client, warehouse, "wh_loose")
    assert (report.rows_read, report.rows_written, report.status) == (4, 1, "partially_failed")
    assert keys_in(warehouse, "wh_loose_out") == [("int", 1)]
    errors = sorted(r["error"] for r in client.results(report.job_id or "") if r["error"])
    assert errors == [
        "key column 'id' (INTEGER) holds float 2.5, not an integer; nowhere to write its "
        "result back",
        "key column 'id' (INTEGER) holds str 'x', not an integer; nowhere to write its result back",
        "key column 'id' is NULL; nowhere to write its result back",
    ]


def test_a_destination_whose_key_column_holds_another_kind_of_key_is_refused(
    client: Client, warehouse: Engine
):
    pg = warehouse.dialect.name == "postgresql"
    make_table(warehouse, "wh_old", "uuid" if pg else "UUID", U if pg else [str(u) for u in U])
    with warehouse.begin() as conn:  # as an older Sluice made it: text keys ("row:1", ...)
        conn.execute(text("CREATE TABLE wh_old_out (id VARCHAR(512) PRIMARY KEY, label TEXT)"))
        for column in ENRICHED[1:]:
            conn.execute(text(f"ALTER TABLE wh_old_out ADD COLUMN {column} TEXT"))
    with pytest.raises(UnusableKeyError, match="'wh_old_out' has key column 'id' of type VARCHAR"):
        run(client, warehouse, "wh_old")
    assert client.ledger.jobs() == []


def test_writing_to_another_kind_of_database_converts_exactly_or_refuses(
    client: Client, warehouse: Engine, tmp_path: Path
):
    if warehouse.dialect.name != "postgresql":
        pytest.skip("needs PostgreSQL beside SQLite (SLUICE_TEST_DATABASE_URL)")
    dest_url = f"sqlite:///{tmp_path / 'dest.db'}"
    make_table(warehouse, "wh_cross", "uuid", U)
    url = warehouse.url.render_as_string(hide_password=False)
    spec = EnrichSpec(
        SourceSpec(url, "wh_cross", "id", "body"), "wh_cross_out", "text-stats", dest_url=dest_url
    )
    assert enrich(client, spec).rows_written == 3
    dest = make_engine(dest_url)
    out = Table("wh_cross_out", MetaData(), autoload_with=dest)
    with dest.connect() as conn:  # as SQLAlchemy's Uuid reads them: the same UUIDs
        assert set(conn.execute(select(type_coerce(out.c.id, Uuid()))).scalars()) == set(U)
    make_table(warehouse, "wh_cross_n", "numeric", [Decimal("1.5")])
    spec = EnrichSpec(
        SourceSpec(url, "wh_cross_n", "id", "body"), "n_out", "text-stats", dest_url=dest_url
    )
    with pytest.raises(UnusableKeyError, match="'id' \\(NUMERIC on postgresql\\) cannot be"):
        enrich(client, spec)
    dest.dispose()


def retry_counts(client: Client) -> dict[str, int]:
    with client.ledger.engine.connect() as conn:
        rows = conn.execute(text("SELECT item_key, attempts FROM enrich_retries")).all()
    return {key: attempts for key, attempts in rows}


def dest_rows(engine: Engine, table: str) -> dict[Any, Any]:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(text(f"SELECT * FROM {table}_out"))}


def set_body(engine: Engine, table: str, key: Any, body: str, ts: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE {table} SET body = :b, updated_at = :ts WHERE id = :id"),
            {"b": body, "ts": ts, "id": key},
        )


def test_rows_that_ended_error_are_retried_then_given_up_visibly(client: Client, warehouse: Engine):
    pg = warehouse.dialect.name == "postgresql"
    keys = U if pg else [str(u) for u in U]
    k1, k2, k3 = keys
    make_table(warehouse, "wh_retry", "uuid" if pg else "UUID", keys)
    set_body(warehouse, "wh_retry", k2, "FLAKY once", 1)
    set_body(warehouse, "wh_retry", k3, "BROKEN always", 2)
    with warehouse.begin() as conn:  # an empty text: invalid, never retried
        conn.execute(text("INSERT INTO wh_retry VALUES (:id, '', 3)"), {"id": _fourth(pg)})
    worker(client).failing = {"FLAKY", "BROKEN"}
    first = run(client, warehouse, "wh_retry", since=True, max_retries=2)
    assert (first.rows_read, first.rows_retried, first.status) == (4, 0, "partially_failed")
    assert first.watermark_after == 3  # past the failed rows: they are kept by key instead
    assert retry_counts(client) == {str(k2): 1, str(k3): 1}

    worker(client).failing = {"BROKEN"}
    with warehouse.begin() as conn:  # a new row arrives too
        conn.execute(text("INSERT INTO wh_retry VALUES (:id, 'new row', 4)"), {"id": _fifth(pg)})
    second = run(client, warehouse, "wh_retry", since=True, max_retries=2)
    assert (second.rows_read, second.rows_retried, second.rows_given_up) == (3, 2, 0)
    rows = dest_rows(warehouse, "wh_retry")
    assert rows[k2].status == "ok" and rows[k2].job_id == second.job_id  # retried, now ok
    assert rows[k3].status == "error" and "given up" not in rows[k3].error
    assert retry_counts(client) == {str(k3): 2}

    third = run(client, warehouse, "wh_retry", since=True, max_retries=2)
    assert (third.rows_read, third.rows_retried, third.rows_given_up) == (1, 1, 1)
    assert dest_rows(warehouse, "wh_retry")[k3].error == (
        "RuntimeError: boom [failed in 3 runs in a row: not retried again until the row "
        "changes, or with --full]"
    )
    fourth = run(client, warehouse, "wh_retry", since=True, max_retries=2)
    assert (fourth.status, fourth.rows_read, fourth.rows_given_up) == ("nothing-to-do", 0, 1)

    worker(client).failing = set()
    set_body(warehouse, "wh_retry", k3, "BROKEN but fixed", 9)  # changed: read, counted afresh
    fifth = run(client, warehouse, "wh_retry", since=True, max_retries=2)
    assert (fifth.rows_read, fifth.rows_retried, fifth.rows_given_up) == (1, 0, 0)
    assert dest_rows(warehouse, "wh_retry")[k3].status == "ok" and retry_counts(client) == {}
    assert len(dest_rows(warehouse, "wh_retry")) == 5  # one row per source row, always


def _fourth(pg: bool) -> Any:
    return uuid.UUID(int=4) if pg else str(uuid.UUID(int=4))


def _fifth(pg: bool) -> Any:
    return uuid.UUID(int=5) if pg else str(uuid.UUID(int=5))


def test_a_failed_row_deleted_from_the_source_is_no_longer_retried(
    client: Client, warehouse: Engine
):
    make_table(warehouse, "wh_gone", "INTEGER", [1, 2])
    set_body(warehouse, "wh_gone", 2, "BROKEN", 1)
    worker(client).failing = {"BROKEN"}
    assert run(client, warehouse, "wh_gone", since=True).status == "partially_failed"
    assert retry_counts(client) == {"2": 1}
    with warehouse.begin() as conn:
        conn.execute(text("DELETE FROM wh_gone WHERE id = 2"))
    report = run(client, warehouse, "wh_gone", since=True)
    assert (report.status, report.rows_given_up) == ("nothing-to-do", 0)
    assert retry_counts(client) == {}


class Killed(BaseException):
    """What a SIGKILL leaves: the process stops where it is; nothing after runs."""


def test_a_run_killed_while_writing_back_resumes_where_it_stopped(
    client: Client, warehouse: Engine, monkeypatch: pytest.MonkeyPatch
):
    make_table(warehouse, "wh_kill", "INTEGER", list(range(10)))
    set_body(warehouse, "wh_kill", 7, "BROKEN", 7)  # in the batch written twice
    worker(client).failing = {"BROKEN"}
    monkeypatch.setattr(enrich_module, "WRITE_BATCH", 3)
    real_upsert = enrich_module.upsert
    upserted: list[list[Any]] = []

    def killed_after_the_third(engine: Engine, table: Any, key: str, rows: list[Any]) -> None:
        real_upsert(engine, table, key, rows)
        upserted.append([r[key] for r in rows])
        if len(upserted) == 3:
            raise Killed  # the rows are in, the ledger has not noted it

    monkeypatch.setattr(enrich_module, "upsert", killed_after_the_third)
    with pytest.raises(Killed):
        run(client, warehouse, "wh_kill", since=True)
    assert len(dest_rows(warehouse, "wh_kill")) == 9
    (job,) = client.ledger.jobs()
    with client.ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM enrich_watermarks")).scalar() == 0

    def recorded(engine: Engine, table: Any, key: str, rows: list[Any]) -> None:
        real_upsert(engine, table, key, rows)
        upserted.append([r[key] for r in rows])

    monkeypatch.setattr(enrich_module, "upsert", recorded)
    del upserted[:]
    report = run(client, warehouse, "wh_kill", since=True)
    assert report.resumed and report.job_id == job.id and len(client.ledger.jobs()) == 1
    assert upserted == [[6, 7, 8], [9]]  # the unnoted batch again, then the rest only
    assert (report.rows_read, report.rows_written, report.watermark_after) == (10, 10, 9)
    assert len(dest_rows(warehouse, "wh_kill")) == 10
    assert retry_counts(client) == {"7": 1}  # counted once, though written twice
    assert run(client, warehouse, "wh_kill", since=True).rows_retried == 1  # a new run


def test_a_run_killed_before_its_job_was_recorded_starts_over(
    client: Client, warehouse: Engine, monkeypatch: pytest.MonkeyPatch
):
    make_table(warehouse, "wh_early", "INTEGER", [1, 2, 3])

    def killed(*args: Any, **kwargs: Any) -> str:
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(client, "submit_items", killed)
        with pytest.raises(Killed):
            run(client, warehouse, "wh_early")
    assert client.ledger.jobs() == []
    report = run(client, warehouse, "wh_early")
    assert (report.resumed, report.rows_written) == (False, 3)
    assert [j.id for j in client.ledger.jobs()] == [report.job_id]


def test_a_run_killed_before_it_noted_its_job_finds_the_job(
    client: Client, warehouse: Engine, monkeypatch: pytest.MonkeyPatch
):
    make_table(warehouse, "wh_noted", "INTEGER", [1, 2, 3])

    def killed(*args: Any, **kwargs: Any) -> None:
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(EnrichRuns, "submitted", killed)
        with pytest.raises(Killed):
            run(client, warehouse, "wh_noted")
    (job,) = client.ledger.jobs()  # submitted (and, inline, already done)
    report = run(client, warehouse, "wh_noted")
    assert (report.resumed, report.job_id, report.rows_written) == (True, job.id, 3)
    assert len(client.ledger.jobs()) == 1


def test_a_run_that_timed_out_waiting_is_resumed_by_the_next(client: Client, warehouse: Engine):
    make_table(warehouse, "wh_wait", "INTEGER", [1, 2, 3])
    worker(client).hold = True
    url = warehouse.url.render_as_string(hide_password=False)
    spec = EnrichSpec(SourceSpec(url, "wh_wait", "id", "body"), "wh_wait_out", "text-stats")
    with pytest.raises(TimeoutError):
        enrich(client, spec, timeout=0)
    (job,) = client.ledger.jobs()
    worker(client).hold = False
    worker(client).drain()
    report = enrich(client, spec)
    assert (report.resumed, report.job_id, report.rows_written) == (True, job.id, 3)
    changed = EnrichSpec(spec.source, "wh_wait_other", "text-stats")  # another spec: a new run
    assert not enrich(client, changed).resumed and len(client.ledger.jobs()) == 2


def test_embeddings_are_written_back_exactly_as_the_ledger_holds_them(
    client: Client, warehouse: Engine
):
    make_table(warehouse, "wh_vectors", "INTEGER", [1, 2, 3])
    set_body(warehouse, "wh_vectors", 1, "VECTOR one", 1)
    set_body(warehouse, "wh_vectors", 2, "VECTOR BROKEN", 2)
    worker(client).failing = {"BROKEN"}
    report = run(client, warehouse, "wh_vectors")
    made = {r["key"]: r for r in client.results(report.job_id)}
    rows = dest_rows(warehouse, "wh_vectors")
    with warehouse.connect() as conn:  # the column's own reading, as a user's query gets it
        out = Table("wh_vectors_out", MetaData(), autoload_with=conn)
        stored = {r.id: r for r in conn.execute(select(out.c.id, out.c.embedding, out.c.output))}
    vector = stored[1].embedding
    assert vector == made["1"]["output"]["embedding"] == [0.1, -2.5e-8, 1e300, 3.0, 10 / 7]
    assert stored[1].output is None and rows[1].label is None  # nothing but the embedding
    assert stored[2].embedding is None and rows[2].status == "error"  # failed: no embedding
    assert stored[3].embedding is None and rows[3].label == "row"  # a label, no embedding


def test_results_are_written_back_while_the_job_still_runs(
    client: Client, warehouse: Engine, monkeypatch: pytest.MonkeyPatch
):
    make_table(warehouse, "wh_follow", "INTEGER", list(range(12)))
    monkeypatch.setattr(enrich_module, "WRITE_BATCH", 4)
    monkeypatch.setattr(client.settings, "chunk_size", 2)
    inline = worker(client)
    inline.hold = True
    real_job = client.ledger.job
    seen: list[tuple[bool, int]] = []

    def job_moving_one_chunk_per_look(job_id: str) -> Any:
        """Each look at the job completes its next chunk (as a worker would meanwhile)."""
        rest, inline.pending = inline.pending[1:], inline.pending[:1]
        inline.drain()
        inline.pending = rest
        view = real_job(job_id)
        with warehouse.connect() as conn:
            written = conn.execute(text("SELECT count(*) FROM wh_follow_out")).scalar_one()
        seen.append((view.status.finished, written))
        return view

    monkeypatch.setattr(client.ledger, "job", job_moving_one_chunk_per_look)
    report = run(client, warehouse, "wh_follow")
    assert report.rows_written == 12 and len(dest_rows(warehouse, "wh_follow")) == 12
    while_running = [written for finished, written in seen if not finished]
    # batches of 4 landed while chunks were still open: 4, then 8, before the job ended
    assert 4 in while_running and 8 in while_running, seen
    assert sorted(while_running) == while_running  # never undone


def test_a_run_killed_while_writing_back_beside_its_job_resumes_where_it_stopped(
    client: Client, warehouse: Engine, monkeypatch: pytest.MonkeyPatch
):
    make_table(warehouse, "wh_follow_kill", "INTEGER", list(range(12)))
    monkeypatch.setattr(enrich_module, "WRITE_BATCH", 4)
    monkeypatch.setattr(client.settings, "chunk_size", 2)
    inline = worker(client)
    inline.hold = True
    real_job, real_upsert = client.ledger.job, enrich_module.upsert
    upserted: list[list[Any]] = []

    def job_moving_one_chunk_per_look(job_id: str) -> Any:
        rest, inline.pending = inline.pending[1:], inline.pending[:1]
        inline.drain()
        inline.pending = rest
        return real_job(job_id)

    def killed_after_the_second(engine: Engine, table: Any, key: str, rows: list[Any]) -> None:
        real_upsert(engine, table, key, rows)
        upserted.append([r[key] for r in rows])
        if len(upserted) == 2:
            raise Killed  # rows 4-7 are in, the ledger has not noted it; the job still runs

    monkeypatch.setattr(client.ledger, "job", job_moving_one_chunk_per_look)
    monkeypatch.setattr(enrich_module, "upsert", killed_after_the_second)
    with pytest.raises(Killed):
        run(client, warehouse, "wh_follow_kill")
    (job,) = client.ledger.jobs()
    assert not real_job(job.id).status.finished  # killed while its job was running
    assert upserted == [[0, 1, 2, 3], [4, 5, 6, 7]]

    def recorded(engine: Engine, table: Any, key: str, rows: list[Any]) -> None:
        real_upsert(engine, table, key, rows)
        upserted.append([r[key] for r in rows])

    monkeypatch.setattr(enrich_module, "upsert", recorded)
    del upserted[:]
    report = run(client, warehouse, "wh_follow_kill")
    assert report.resumed and report.job_id == job.id and len(client.ledger.jobs()) == 1
    assert upserted == [[4, 5, 6, 7], [8, 9, 10, 11]]  # the unnoted batch again, then the rest
    assert report.rows_written == 12 and len(dest_rows(warehouse, "wh_follow_kill")) == 12
