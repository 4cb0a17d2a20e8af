"""The tables of warehouse enrichment: rows read from a table of any SQLAlchemy database, and
the enriched columns upserted into a destination table.

Every table and column name is checked to be a plain identifier before anything connects, then
checked against the reflected table; statements are built by SQLAlchemy with bound values, so
no name or value is ever formatted into SQL. Keys travel as item keys (text) and come back as
the source's own values (producers.warehouse_keys)."""

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    cast,
    inspect,
    literal,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.sql import ColumnElement
from sqlalchemy.types import NullType, TypeEngine

from producers.warehouse_keys import KeyCodec, key_codec, same_kind
from schemas.errors import SluiceError, UnsafeIdentifierError, UnusableKeyError
from schemas.states import ExplanationStatus
from storage import json_codec
from storage.tables import JSONType

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
# A row whose key cannot be an item key is read with key None and, under this name, why.
KEY_PROBLEM = "__sluice_key_problem__"
KEYS_PER_READ = 500  # keys per `key IN (...)` when rows are read again by key


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
        raise SluiceError(f"table {name!r} not found in {redacted(engine)}") from None


def table_column(table: Table, name: str, what: str) -> Any:
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


def raw(column: Any) -> Any:
    """The column's values as the driver returns them: a reflected type may not fit what a
    loosely typed database (SQLite) actually holds, so no result conversion is applied."""
    return type_coerce(column, NullType())


def _selected(table: Table, spec: SourceSpec) -> tuple[list[Any], list[Any]]:
    """The columns read (key first) and the --where filters."""
    key = table_column(table, spec.key_column, "key column")
    cols = [raw(key).label("key")]
    cols += [
        raw(table_column(table, column, what)).label(name)
        for column, name, what in spec.selection()
    ]
    filters = [
        OPERATORS[c.op](
            table_column(table, c.column, "where column"), coerce(table.c[c.column], c.value)
        )
        for c in spec.where
    ]
    return cols, filters


def source_query(table: Table, spec: SourceSpec, after: Any | None) -> Any:
    cols, query_filters = _selected(table, spec)
    key = table.c[spec.key_column]
    order = [key]
    if spec.since_column is not None:
        since = table_column(table, spec.since_column, "since column")
        cols.append(raw(since).label("since"))
        order = [since, key]
        if after is not None:  # bound as the value read last time, driver type and all
            query_filters.append(raw(since) > literal(after, NullType()))
    return select(*cols).where(*query_filters).order_by(*order)


def keyed(rows: Iterator[dict[str, Any]], codec: KeyCodec) -> Iterator[dict[str, Any]]:
    """Rows with their key as an item key; a key that cannot be one is None, and the row says
    why under KEY_PROBLEM. A NULL key stays None."""
    for row in rows:
        if row["key"] is not None:
            try:
                row["key"] = codec.encode(row["key"])
            except UnusableKeyError as exc:
                row["key"], row[KEY_PROBLEM] = None, str(exc)
        yield row


def _stream(engine: Engine, query: Any) -> Iterator[dict[str, Any]]:
    """The query's rows as dicts, streamed. Built from the column names read once and each
    row as the tuple it is: a row's `_mapping` costs 3x as much (4 us a row, issue 16)."""
    with engine.connect().execution_options(stream_results=True, yield_per=2000) as conn:
        result = conn.execute(query)
        names = list(result.keys())
        for row in result:
            yield dict(zip(names, row, strict=True))


def read_rows(
    engine: Engine, spec: SourceSpec, after: Any | None = None, limit: int | None = None
) -> tuple[Table, Iterator[dict[str, Any]]]:
    """The source table and its selected rows as {"key", "text"[, "since"]} dicts, streamed,
    keys as item keys (text); at most `limit` of them (a caller that caps a job asks for one
    more than its cap). A key column whose values could not come back exactly is refused
    (UnusableKeyError) before any row is read."""
    spec.validate()
    table = reflect(engine, spec.table)
    codec = key_codec(table_column(table, spec.key_column, "key column"), engine.dialect)
    query = source_query(table, spec, after)
    if limit is not None:
        query = query.limit(limit)
    return table, keyed(_stream(engine, query), codec)


def read_keys(
    engine: Engine, table: Table, spec: SourceSpec, keys: list[str]
) -> Iterator[dict[str, Any]]:
    """The selected rows of these item keys that still match --where, as read_rows gives
    them (no `since`), read again by key, KEYS_PER_READ at a time."""
    codec = key_codec(table.c[spec.key_column], engine.dialect)
    for start in range(0, len(keys), KEYS_PER_READ):
        values = [codec.decode(k) for k in keys[start : start + KEYS_PER_READ]]
        cols, filters = _selected(table, spec)
        key = raw(table.c[spec.key_column])
        query = select(*cols).where(*filters, key.in_(values)).order_by(key)
        yield from keyed(_stream(engine, query), codec)


# -- the write-back ---------------------------------------------------------------------------


def dest_table(name: str, key_column: str, key_type: TypeEngine[Any]) -> Table:
    schema, table = table_name(name, "destination table")
    return Table(
        table,
        MetaData(),
        Column(
            identifier(key_column, "key column"),
            key_type,
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
    """Create the destination table if it is missing; refuse one without our columns, or
    whose key column holds another kind of key than the source's."""
    if not inspect(engine).has_table(table.name, schema=table.schema):
        table.create(engine)
        return
    have = {c["name"]: c for c in inspect(engine).get_columns(table.name, schema=table.schema)}
    missing = [c.name for c in table.columns if c.name not in have]
    if missing:
        raise SluiceError(
            f"destination table {table.fullname!r} exists without the "
            f"columns {missing}; drop it or choose another --dest-table"
        )
    key = next(iter(table.primary_key.columns))
    existing = have[key.name]["type"]
    if not same_kind(existing, key.type, engine.dialect):
        raise UnusableKeyError(
            f"destination table {table.fullname!r} has key column {key.name!r} of type "
            f"{existing.compile(dialect=engine.dialect)}, which cannot hold the source's keys "
            f"({key.type.compile(dialect=engine.dialect)}); drop it (it may hold keys an "
            "older Sluice wrote as text) or choose another --dest-table"
        )


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
    result: dict[str, Any],
    key_column: str,
    key: Any,
    model_version: str,
    job_id: str,
    now: dt.datetime,
    error: str | None = None,
) -> dict[str, Any]:
    """The destination row of one result; `key` is the source's value, `error` (when given)
    replaces the result's error message."""
    output = dict(result.get("output") or {})
    embedding = output.pop("embedding", None)
    if "embedding_json" in result:  # read as text (Ledger.iter_results): bound as it is
        embedding = JSONText(result["embedding_json"])
    return {
        key_column: key,
        "label": output.get("label"),
        "score": output.get("score"),
        "embedding": embedding,
        "output": output or None,
        "explanation_summary": summarise(result.get("explanation")),
        "status": result["status"],
        "error": error or result.get("error"),
        "model_version": model_version,
        "job_id": job_id,
        "processed_at": now,
    }


KEYS_PER_DELETE = 1000  # Oracle's limit on an IN list; SQL Server's on parameters is 2100


class JSONText(str):
    """A value that is JSON text already: written to a JSON column as it is, not encoded."""


def upsert(engine: Engine, table: Table, key_column: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    # the embedding is bound as JSON text (JSONText, or encoded here): the column's own
    # binding would encode a list of floats that the ledger already holds as JSON
    rows = [
        r if isinstance(r["embedding"], JSONText) else {**r, "embedding": embedding_text(r)}
        for r in rows
    ]
    with engine.begin() as conn:
        embedding = json_text_param(conn.dialect.name, table.c.embedding.type)
        if conn.dialect.name in ("postgresql", "sqlite"):
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            stmt = insert(table).values(embedding=embedding)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[key_column], set_={c: stmt.excluded[c] for c in ENRICHED}
                ),
                rows,
            )
        else:  # any other database: replace the rows of these keys in one transaction
            key = table.c[key_column]
            keys = [r[key_column] for r in rows]
            for start in range(0, len(keys), KEYS_PER_DELETE):
                conn.execute(table.delete().where(key.in_(keys[start : start + KEYS_PER_DELETE])))
            conn.execute(table.insert().values(embedding=embedding), rows)


def embedding_text(row: dict[str, Any]) -> str:
    return json_codec.dumps(row["embedding"])


def json_text_param(dialect: str, column_type: TypeEngine[Any]) -> Any:
    """The `embedding` parameter, JSON text stored as JSON: cast on PostgreSQL to the type
    `dest_table` declares (jsonb; a json or text column that existed before takes it by
    PostgreSQL's assignment cast), plain text elsewhere (SQLite's and MySQL's JSON columns
    take JSON text)."""
    param = bindparam("embedding", type_=Text)
    if dialect == "postgresql":
        return cast(param, column_type.dialect_impl(postgresql.dialect()))
    return type_coerce(param, Text)


def redacted(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
