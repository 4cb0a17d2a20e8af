"""Engine set-up for SQLite (embedded default) and PostgreSQL (psycopg 3), and migrations."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

from schemas.errors import SchemaVersionError
from storage import json_codec

MIGRATIONS = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` and use the psycopg 3 driver for them."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False},
            json_serializer=json_codec.dumps,
            json_deserializer=json_codec.loads,
        )
        _sqlite_tuning(engine)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        json_serializer=json_codec.dumps,
        json_deserializer=json_codec.loads,
    )


def _sqlite_tuning(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, own transactions, so BEGIN IMMEDIATE below applies.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        # Deleted and rewritten content is zeroed, not left in free space: a redacting
        # completion's original values must not survive in the file (truncate_wal).
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front: two deferred transactions that both later write
        # would otherwise fail with "database is locked" instead of waiting their turn.
        # Readers (execution option readonly=True) start a plain snapshot and never wait.
        readonly = conn.get_execution_options().get("readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def truncate_wal(engine: Engine) -> bool:
    """SQLite: copy the write-ahead log into the database and truncate it to nothing, so the
    page images of rows since rewritten (a chunk's items before redaction) survive in neither
    file (with secure_delete, the database's freed space is zeroed). Waits at most 5 s for
    other connections; False if it could not finish (the next call does). True elsewhere."""
    if engine.dialect.name != "sqlite":
        return True
    raw = engine.raw_connection()  # outside any transaction: a checkpoint cannot run in one
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA busy_timeout=5000")
        try:
            busy = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()
    finally:
        raw.close()
    return bool(busy == 0)


def alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def schema_revisions(engine: Engine) -> tuple[str | None, str, set[str]]:
    """(the database's revision, or None for a database Sluice never wrote; this code's
    newest revision; every revision this code knows)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None
    known = {rev.revision for rev in script.walk_revisions()}
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None, head, known
        return MigrationContext.configure(conn).get_current_revision(), head, known


def require_current_schema(engine: Engine) -> None:
    """For workers: the database's schema must be exactly this code's, or the worker would
    consume messages it cannot process (older code) or write rows a newer schema refuses.
    A database Sluice never wrote is created (the embedded default's first start)."""
    current, head, known = schema_revisions(engine)
    if current is None:
        migrate(engine)
        return
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current not in known:
        raise SchemaVersionError(
            f"the database {where} has schema revision {current}, newer than this Sluice "
            f"knows (its newest is {head}): install the Sluice version that migrated it on "
            "this host"
        )
    raise SchemaVersionError(
        f"the database {where} has schema revision {current}, older than this Sluice's "
        f"{head}: stop the workers of the older version, run `sluice migrate` once, then "
        "start again"
    )


def prepare_schema(engine: Engine) -> None:
    """For producers (the SDK, the CLI, the API): the embedded SQLite ledger is brought to
    this version's schema (one host runs everything); a shared database is only created when
    new, never migrated under workers of another version: `sluice migrate` does that."""
    if engine.dialect.name == "sqlite":
        migrate(engine)
    else:
        require_current_schema(engine)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is already there)."""
    from alembic import command

    config = alembic_config()
    current, head, known = schema_revisions(engine)
    if current == head:
        return
    if current is not None and current not in known:
        raise SchemaVersionError(
            f"the database has schema revision {current}, newer than this Sluice knows "
            f"(its newest is {head}): upgrade Sluice on this host"
        )
    with engine.connect() as conn, foreign_keys_off(conn), conn.begin():
        if conn.dialect.name == "postgresql":
            # Two processes starting at once must not both create the tables.
            conn.execute(text("SELECT pg_advisory_xact_lock(727711)"))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


@contextmanager
def foreign_keys_off(conn: Connection) -> Iterator[None]:
    """SQLite alters a table by copying it and dropping the old one; with foreign keys on,
    that drop would cascade to every child row (chunks, results). Outside any transaction:
    SQLite ignores the pragma inside one."""
    raw = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
    if raw is not None:
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=ON")
