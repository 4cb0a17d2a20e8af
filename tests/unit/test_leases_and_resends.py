"""Leases on the database's clock, lost messages re-sent even behind a busy queue (but not a
backlog), re-sends after a broker wipe in batches, and workers that refuse another schema."""

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from schemas.errors import SchemaVersionError
from schemas.settings import Settings
from storage import clock
from storage.engine import make_engine, migrate, require_current_schema, schema_revisions
from storage.ledger import Ledger
from tests.unit.test_ledger import items, spec

SLUICE = str(Path(sys.executable).parent / "sluice")


def test_a_host_clock_ahead_takes_no_live_lease_on_postgresql(ledger: Ledger, monkeypatch):
    if ledger.engine.dialect.name != "postgresql":
        pytest.skip("SQLite is the one-host ledger: its clock is the host's")
    _, (chunk,) = ledger.create_job(spec(), items(2), chunk_size=10)
    assert ledger.claim(chunk, "healthy-worker", lease_seconds=30).outcome == "claimed"
    # This host (a sweeper) runs 60 s ahead of the database and of the healthy worker.
    ahead = clock.host_now() + timedelta(seconds=60)
    monkeypatch.setattr(clock, "host_now", lambda: ahead)
    assert [c for c in ledger.stalled(requeue_after=10) if c.expired] == []
    assert not ledger.dead_letter(chunk, None, "taken from a live worker")
    assert ledger.claim(chunk, "sweeper-host", lease_seconds=30).outcome == "busy"


def test_requeue_after_a_wipe_marks_more_chunks_than_one_statement_can_name(ledger: Ledger):
    if ledger.engine.dialect.name != "postgresql":
        pytest.skip("the 65,535-parameter cap is PostgreSQL's")
    _, chunks = ledger.create_job(spec(), items(70_000), chunk_size=1)
    marked = ledger.requeue(chunks)
    assert len(marked) == 70_000 == len(set(marked))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def _set_revision(url: str, revision: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def test_a_worker_refuses_a_schema_older_or_newer_than_its_code(sqlite_url: str):
    engine = make_engine(sqlite_url)
    require_current_schema(engine)  # a new database is created
    current, head, known = schema_revisions(engine)
    assert current == head
    older = sorted(known - {head})[0]
    _set_revision(sqlite_url, older)
    with pytest.raises(SchemaVersionError, match="older than this Sluice.*sluice migrate"):
        require_current_schema(engine)
    _set_revision(sqlite_url, "9999_from_the_future")
    with pytest.raises(SchemaVersionError, match="newer than this Sluice"):
        require_current_schema(engine)
    with pytest.raises(SchemaVersionError, match="newer"):
        migrate(engine)  # migrating never downgrades a newer schema either


def test_sluice_worker_exits_with_the_reason_before_consuming(sqlite_url: str, tmp_path: Path):
    require_current_schema(make_engine(sqlite_url))
    _set_revision(sqlite_url, "9999_from_the_future")
    env = {
        "SLUICE_DATABASE_URL": sqlite_url,
        "SLUICE_DATA_DIR": str(tmp_path / "data"),
        "SLUICE_BROKER_URL": "redis://127.0.0.1:1/0",  # never reached: it stops first
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run([SLUICE, "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "newer than this Sluice" in done.stderr


class RetryRequested(Exception):
    pass


def test_a_database_error_at_claim_keeps_the_message_for_a_retry():
    from workers.chunk_task import process_chunk

    class Down:
        def claim(self, *args: object) -> None:
            raise OperationalError("SELECT", {}, Exception("connection refused"))

    class FakeTask:
        request = SimpleNamespace(id="task-1", retries=0)

        def retry(self, exc: Exception, countdown: float, max_retries: None) -> Exception:
            assert countdown > 0 and max_retries is None
            return RetryRequested(str(exc))

    state = SimpleNamespace(settings=Settings(ledger_patience=1.2), ledger=Down())
    started = time.monotonic()
    with pytest.raises(RetryRequested, match="connection refused"):
        process_chunk(FakeTask(), state, "job-00000")  # type: ignore[arg-type]
    assert time.monotonic() - started >= 1.2  # the outage was waited out in the task first


def test_producers_bring_the_embedded_ledger_to_this_version(sqlite_url: str):
    from alembic import command

    from storage.engine import alembic_config, prepare_schema

    engine = make_engine(sqlite_url)
    _, head, known = schema_revisions(engine)
    older = sorted(known - {head})[-1]
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, older)  # a ledger written by the previous version
    assert schema_revisions(engine)[0] == older
    prepare_schema(engine)  # what the SDK and the CLI do
    assert schema_revisions(engine)[0] == head


def test_producers_never_migrate_a_shared_database(database_url: str):
    """On PostgreSQL, workers of the older version may still run: refuse until
    `sluice migrate`."""
    from storage.engine import prepare_schema

    engine = make_engine(database_url)
    if engine.dialect.name != "postgresql":
        pytest.skip("the shared database case")
    migrate(engine)
    _, head, known = schema_revisions(engine)
    _set_revision(database_url, sorted(known - {head})[-1])
    try:
        with pytest.raises(SchemaVersionError, match="sluice migrate"):
            prepare_schema(engine)
    finally:
        _set_revision(database_url, head)
        engine.dispose()
