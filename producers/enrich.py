"""Warehouse enrichment: read rows from a table of any SQLAlchemy database, run them as one
job, and upsert the enriched columns into a destination table.

Every table and column name is checked to be a plain identifier before anything connects, then
checked against the reflected table; statements are built by SQLAlchemy with bound values, so
no name or value is ever formatted into SQL.
"""

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    literal,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.sql import ColumnElement
from sqlalchemy.types import NullType

from producers.adapters import adapter_for
from schemas.errors import SluiceError, UnsafeIdentifierError
from schemas.jobs import Item
from schemas.states import ExplanationStatus, JobStatus
from storage.engine import make_engine
from storage.ledger import JobView
from storage.tables import JSONType
from storage.watermarks import Watermarks

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
WHERE = re.compile(r"^\s*(\S+?)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*$", re.S)
OPERATORS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
}
ENRICHED = [
    "label",
    "score",
    "embedding",
    "output",
    "explanation_summary",
    "status",
    "error",
    "model_version",
    "job_id",
    "processed_at",
]


def identifier(name: object, what: str) -> str:
    """`name` if it is a plain SQL identifier; otherwise refuse, before anything runs."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise UnsafeIdentifierError(
            f"{what} {name!r} is not a plain SQL identifier (letters, digits and '_', not "
            "starting with a digit, at most 63 characters); refused, nothing was executed"
        )
    return name


def table_name(name: object, what: str = "table") -> tuple[str | None, str]:
    """`table` or `schema.table`, each part a plain identifier."""
    if not isinstance(name, str):
        identifier(name, what)
    parts = str(name).split(".")
    if len(parts) > 2:
        raise UnsafeIdentifierError(
            f"{what} {name!r}: use TABLE or SCHEMA.TABLE; refused, nothing was executed"
        )
    if len(parts) == 2:
        return identifier(parts[0], f"{what} schema"), identifier(parts[1], what)
    return None, identifier(parts[0], what)


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> "Condition":
        """`COLUMN OP VALUE`, OP one of = != < <= > >=; VALUE is bound, never spliced in."""
        match = WHERE.match(text)
        if not match:
            raise SluiceError(f"bad --where {text!r}: use COLUMN=VALUE (or !=, <, <=, >, >=)")
        column, op, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        return cls(identifier(column, "where column"), op, value)


@dataclass
class SourceSpec:
    url: str
    table: str
    key_column: str
    text_column: str = "text"
    where: list[Condition] = field(default_factory=list)
    since_column: str | None = None
    media_column: str | None = None  # images/audio: the column of paths or URIs
    # What is read besides the key, as (table column, row column, what it is called): set by
    # the task's modality adapter (records: the model's feature columns; checked against the
    # reflected table and always quoted). Unset: the text column.
    selected: list[tuple[str, str, str]] = field(default_factory=list)

    def selection(self) -> list[tuple[str, str, str]]:
        return self.selected or [(self.text_column, "text", "text column")]

    def validate(self) -> None:
        table_name(self.table)
        identifier(self.key_column, "key column")
        identifier(self.text_column, "text column")
        if self.media_column is not None:
            identifier(self.media_column, "media column")
        if self.since_column is not None:
            identifier(self.since_column, "since column")
        for cond in self.where:
            identifier(cond.column, "where column")
            if cond.op not in OPERATORS:
                raise SluiceError(f"bad operator {cond.op!r} in --where")


def reflect(engine: Engine, name: str) -> Table:
    schema, table = table_name(name)
    try:
        return Table(table, MetaData(), schema=schema, autoload_with=engine)
    except NoSuchTableError:
        raise SluiceError(f"table {name!r} not found in {_redacted(engine)}") from None


def _column(table: Table, name: str, what: str) -> Any:
    if name not in table.c:
        raise SluiceError(
            f"{what} {name!r} not found in table {table.fullname!r}; columns "
            f"are: {', '.join(table.c.keys())}"
        )
    return table.c[name]


def coerce(column: Any, value: Any) -> Any:
    """A --where value (text) as the column's Python type, so it binds as the right type."""
    if not isinstance(value, str):
        return value
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return value
    try:
        if kind is bool:
            return value.lower() in ("1", "true", "t", "yes")
        if kind in (int, float):
            return kind(value)
        if kind is dt.datetime:
            return dt.datetime.fromisoformat(value)
        if kind is dt.date:
            return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise SluiceError(
            f"--where value {value!r} does not fit column {column.name!r} ({kind.__name__}): {exc}"
        ) from exc
    return value


def _raw(column: Any) -> Any:
    """The column's values as the driver returns them: a reflected type may not fit what a
    loosely typed database (SQLite) actually holds, so no result conversion is applied."""
    return type_coerce(column, NullType())


def source_query(table: Table, spec: SourceSpec, after: Any | None) -> Any:
    key = _column(table, spec.key_column, "key column")
    cols = [_raw(key).label("key")]
    cols += [
        _raw(_column(table, column, what)).label(name) for column, name, what in spec.selection()
    ]
    order = [key]
    query_filters = [
        OPERATORS[c.op](
            _column(table, c.column, "where column"), coerce(table.c[c.column], c.value)
        )
        for c in spec.where
    ]
    if spec.since_column is not None:
        since = _column(table, spec.since_column, "since column")
        cols.append(_raw(since).label("since"))
        order = [since, key]
        if after is not None:  # bound as the value read last time, driver type and all
            query_filters.append(_raw(since) > literal(after, NullType()))
    return select(*cols).where(*query_filters).order_by(*order)


def read_rows(
    engine: Engine, spec: SourceSpec, after: Any | None = None, limit: int | None = None
) -> tuple[Table, Iterator[dict[str, Any]]]:
    """The source table and its selected rows as {"key", "text"[, "since"]} dicts, streamed;
    at most `limit` of them (a caller that caps a job asks for one more than its cap)."""
    spec.validate()
    table = reflect(engine, spec.table)
    query = source_query(table, spec, after)
    if limit is not None:
        query = query.limit(limit)

    def rows() -> Iterator[dict[str, Any]]:
        with engine.connect().execution_options(stream_results=True, yield_per=2000) as conn:
            for row in conn.execute(query):
                yield dict(row._mapping)

    return table, rows()


# -- the write-back ---------------------------------------------------------------------------


def dest_table(name: str, key_column: str, key_is_int: bool) -> Table:
    schema, table = table_name(name, "destination table")
    return Table(
        table,
        MetaData(),
        Column(
            identifier(key_column, "key column"),
            BigInteger() if key_is_int else String(512),
            primary_key=True,
            autoincrement=False,
        ),
        Column("label", Text),
        Column("score", Float),
        Column("embedding", JSONType),
        Column("output", JSONType),
        Column("explanation_summary", Text),
        Column("status", String(16)),
        Column("error", Text),
        Column("model_version", String(64)),
        Column("job_id", String(32)),
        Column("processed_at", DateTime(timezone=True)),
        schema=schema,
    )


def ensure_dest(engine: Engine, table: Table) -> None:
    """Create the destination table if it is missing; refuse one without our columns."""
    if inspect(engine).has_table(table.name, schema=table.schema):
        have = {c["name"] for c in inspect(engine).get_columns(table.name, schema=table.schema)}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            raise SluiceError(
                f"destination table {table.fullname!r} exists without the "
                f"columns {missing}; drop it or choose another --dest-table"
            )
        return
    table.create(engine)


def summarise(explanation: dict[str, Any] | None, top: int = 5) -> str | None:
    """`word(+0.412) word(-0.120) ...`: the most attributed words, strongest first."""
    if not explanation or explanation.get("status") != ExplanationStatus.OK:
        return None
    pairs = sorted(
        zip(explanation.get("tokens") or [], explanation.get("attributions") or [], strict=False),
        key=lambda p: -abs(p[1]),
    )[:top]
    return " ".join(f"{tok}({att:+.3f})" for tok, att in pairs) or None


def enriched_row(
    result: dict[str, Any], key_column: str, key_is_int: bool, view: JobView, now: dt.datetime
) -> dict[str, Any]:
    output = dict(result.get("output") or {})
    embedding = output.pop("embedding", None)
    return {
        key_column: int(result["key"]) if key_is_int else result["key"],
        "label": output.get("label"),
        "score": output.get("score"),
        "embedding": embedding,
        "output": output or None,
        "explanation_summary": summarise(result.get("explanation")),
        "status": result["status"],
        "error": result.get("error"),
        "model_version": view.model_version,
        "job_id": view.id,
        "processed_at": now,
    }


def upsert(engine: Engine, table: Table, key_column: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with engine.begin() as conn:
        if conn.dialect.name in ("postgresql", "sqlite"):
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            stmt = insert(table)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[key_column], set_={c: stmt.excluded[c] for c in ENRICHED}
                ),
                rows,
            )
        else:  # any other database: replace the rows of these keys in one transaction
            key = table.c[key_column]
            conn.execute(table.delete().where(key.in_([r[key_column] for r in rows])))
            conn.execute(table.insert(), rows)


def _redacted(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


# -- the whole run ------------------------------------------------------------------------------


@dataclass
class EnrichSpec:
    source: SourceSpec
    dest_table: str
    task: str
    dest_url: str | None = None
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # explain, labels, priority...


@dataclass
class EnrichReport:
    rows_read: int
    rows_written: int
    job_id: str | None
    status: str
    watermark_before: Any | None
    watermark_after: Any | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        def show(v: Any) -> Any:
            return v.isoformat() if isinstance(v, dt.date) else v

        return {
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "job_id": self.job_id,
            "status": self.status,
            "watermark_before": show(self.watermark_before),
            "watermark_after": show(self.watermark_after),
            "seconds": round(self.seconds, 3),
        }


def enrich(
    client: Any,
    spec: EnrichSpec,
    *,
    full: bool = False,
    timeout: float | None = None,
    on_progress: Callable[[JobView], None] | None = None,
) -> EnrichReport:
    """Read (new) rows, run them as one job, wait, upsert the results, move the watermark."""
    import time

    started = time.perf_counter()
    spec.source.validate()
    table_name(spec.dest_table, "destination table")  # all names checked before connecting
    source = make_engine(spec.source.url)
    dest_engine = make_engine(spec.dest_url) if spec.dest_url else source
    try:
        ref = client.resolve_model(spec.model, spec.task)
        marks = Watermarks(client.ledger.engine)
        adapter = adapter_for(client.catalog.get(spec.task).modality)
        spec.source.selected = adapter.table_columns(
            spec.source.text_column, spec.source.media_column, ref.path if ref.loads else None
        )
        mark_key = (_redacted(source), spec.source.table, spec.task, ref.version)
        before = None if full or not spec.source.since_column else marks.get(*mark_key)
        table, rows = read_rows(source, spec.source, before)
        newest: list[Any] = []

        def tracked() -> Iterator[dict[str, Any]]:
            for row in rows:
                if row.get("since") is not None:
                    newest[:] = [max(newest[0], row["since"]) if newest else row["since"]]
                yield {k: v for k, v in row.items() if k != "since"}

        columns = ["key", *(name for _, name, _ in spec.source.selection())]
        items: list[Item] = client.items_from_rows(
            columns,
            tracked(),
            spec.task,
            ref=ref,
            key_column="key",
            source=f"table {spec.source.table}",
        )
        if not items:
            return EnrichReport(
                0, 0, None, "nothing-to-do", before, before, time.perf_counter() - started
            )
        key_col = table.c[spec.source.key_column]
        key_is_int = _python_type(key_col) is int
        dest = dest_table(spec.dest_table, spec.source.key_column, key_is_int)
        ensure_dest(dest_engine, dest)
        job_id = client.submit_items(
            items,
            spec.task,
            model=spec.model,
            **spec.options,
            source=f"sql:{_redacted(source)}#{spec.source.table}",
        )
        view = client.wait(job_id, timeout=timeout, on_progress=on_progress)
        written = write_back(client, view, dest_engine, dest, spec.source.key_column, key_is_int)
        after = newest[0] if newest else before
        if spec.source.since_column and after is not None and view.status != JobStatus.CANCELLED:
            marks.set(*mark_key, spec.source.since_column, after, job_id)
        return EnrichReport(
            len(items),
            written,
            job_id,
            view.status.value,
            before,
            after,
            time.perf_counter() - started,
        )
    finally:
        source.dispose()
        if dest_engine is not source:
            dest_engine.dispose()


def write_back(
    client: Any,
    view: JobView,
    engine: Engine,
    dest: Table,
    key_column: str,
    key_is_int: bool,
    batch: int = 1000,
) -> int:
    now = dt.datetime.now(dt.UTC)
    written = 0
    pending: list[dict[str, Any]] = []
    for result in client.ledger.iter_results(view.id):
        if (result.get("error") or "").startswith("missing key column"):
            continue  # a source row without a key: nowhere to write it back
        pending.append(enriched_row(result, key_column, key_is_int, view, now))
        if len(pending) >= batch:
            upsert(engine, dest, key_column, pending)
            written += len(pending)
            pending = []
    upsert(engine, dest, key_column, pending)
    return written + len(pending)


def _python_type(column: Any) -> type | None:
    try:
        return column.type.python_type  # type: ignore[no-any-return]
    except NotImplementedError:
        return None
