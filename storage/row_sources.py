"""Tabular data as rows: JSONL, CSV and Parquet files, and SQL tables. Producers read job
inputs with it; the training driver reads training data with it (and checks the data is
still what was submitted, by its fingerprint)."""

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, select
from sqlalchemy.exc import NoSuchTableError

from schemas.errors import InputFileError
from schemas.object_refs import is_object_uri
from storage.engine import make_engine
from storage.object_store import ObjectStore

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
MALFORMED = "__sluice_malformed__"
JSONL_COLUMNS_FROM = 10_000  # a JSONL file's columns: the keys of its first lines
PARQUET_BATCH = 2_000  # rows decoded from Parquet at a time: Python holds them all as dicts
PARQUET_READ_BUFFER = 1 << 20  # bytes of a Parquet file read at a time


def detect_format(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputFileError(
            f"{path}: unknown file type {path.suffix!r}; use .jsonl, .csv or .parquet"
        )
    return fmt


def read_rows(path: Path, limit: int | None = None) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """The file's columns and its rows. Raises InputFileError when the file cannot be read.
    `limit`: read at most that many JSONL rows (a capped caller asks for cap + 1; CSV and
    Parquet stream, so the caller's count stops them)."""
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    fmt = detect_format(path)
    try:
        if fmt == "jsonl":
            return _jsonl_columns_and_rows(path, limit)
        if fmt == "csv":
            return _csv_rows(path)
        return _parquet_rows(path)
    except InputFileError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise InputFileError(f"{path}: cannot read it as {fmt}: {exc}") from exc


def _jsonl_columns_and_rows(
    path: Path, limit: int | None
) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """Streamed (issue 16: a file of any size in flat memory): the columns are the keys of
    the first JSONL_COLUMNS_FROM lines, in file order (first seen), as CSV and Parquet give
    them; malformed lines add none. Those lines are held, the rest read as they are used."""
    rows = _jsonl_rows(path)
    head = list(
        islice(rows, JSONL_COLUMNS_FROM if limit is None else min(limit, JSONL_COLUMNS_FROM))
    )
    if head and all(MALFORMED in r for r in head):
        which = (
            "no line" if len(head) < JSONL_COLUMNS_FROM else f"none of its first {len(head)} lines"
        )
        raise InputFileError(f"{path}: not JSONL ({which} is a JSON object)")
    columns = list(dict.fromkeys(k for r in head if MALFORMED not in r for k in r))
    rest = rows if limit is None else islice(rows, max(0, limit - len(head)))
    return columns, chain(head, rest)


# json's own C scanner, called on a line directly: a JSON object spanning the whole line is
# read as json.loads reads it, without loads' per-call Python (3x the cost: issue 16). Any
# other line goes through json.loads, for its exact outcome and message.
SCAN_JSON: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                row, end = SCAN_JSON(line, 0)
            except (StopIteration, ValueError, RecursionError):
                pass
            else:
                if type(row) is dict and (end == len(line) or line[end:] == "\n"):
                    yield row
                    continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield {MALFORMED: f"line {lineno} is not valid JSON: {exc.msg}", "_line": lineno}
                continue
            except RecursionError:
                why = f"line {lineno} nests arrays or objects too deeply to be read"
                yield {MALFORMED: why, "_line": lineno}
                continue
            except ValueError as exc:  # e.g. an integer longer than Python converts
                why = str(exc).split(";")[0]  # not the advice for programmers after it
                yield {MALFORMED: f"line {lineno} cannot be read: {why}"[:300], "_line": lineno}
                continue
            if not isinstance(row, dict):
                yield {MALFORMED: f"line {lineno} is not a JSON object", "_line": lineno}
                continue
            yield row


def _csv_rows(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    fh = path.open(encoding="utf-8-sig", newline="")
    reader = csv.DictReader(fh)
    if reader.fieldnames is None:
        fh.close()
        raise InputFileError(f"{path}: empty CSV file (no header row)")
    columns = list(reader.fieldnames)

    def rows() -> Iterator[dict[str, Any]]:
        """DictReader's rows, read from its csv.reader: a row of the header's width (nearly
        all) without DictReader's per-row Python (issue 16), any other as DictReader makes it
        (a short row's missing fields None, a long row's extra values under None)."""
        width = len(columns)
        with fh:
            for values in reader.reader:
                if len(values) == width and values:
                    yield dict(zip(columns, values, strict=True))
                elif values:  # DictReader skips blank lines
                    row: dict[Any, Any] = dict(zip(columns, values, strict=False))
                    row.update(dict.fromkeys(columns[len(values) :]))
                    if len(values) > width:
                        row[None] = values[width:]
                    yield row

    return columns, rows()


def _parquet_rows(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        # streamed (no row group read whole ahead of its pages, no decoding threads, each
        # with a heap of its own): a third less peak memory, the rows being Python's work
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=PARQUET_READ_BUFFER)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise InputFileError(f"{path}: not a readable Parquet file: {exc}") from exc

    def rows() -> Iterator[dict[str, Any]]:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH, use_threads=False):
            yield from batch.to_pylist()

    return list(pf.schema_arrow.names), rows()


def read_table(url: str, table: str) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """A SQL table's columns and rows, through any SQLAlchemy URL. Names are checked against
    the reflected table, and the statement is built by SQLAlchemy (quoted identifiers)."""
    schema, _, name = table.rpartition(".")
    try:
        engine = make_engine(url)
    except Exception as exc:  # an unparseable URL, an uninstalled dialect
        raise InputFileError(f"cannot open the database URL ({type(exc).__name__}: {exc})") from exc
    try:
        reflected = Table(name, MetaData(), schema=schema or None, autoload_with=engine)
    except NoSuchTableError:
        engine.dispose()
        raise InputFileError(f"no table {table!r} in the database") from None
    except Exception as exc:
        engine.dispose()
        raise InputFileError(f"cannot read table {table!r}: {type(exc).__name__}: {exc}") from exc
    columns = [c.name for c in reflected.columns]
    # A stable order (the primary key, else every column): a table read twice gives its rows
    # in the same order, so the training data's fingerprint matches when nothing changed.
    order = list(reflected.primary_key.columns) or list(reflected.columns)

    def rows() -> Iterator[dict[str, Any]]:
        try:
            with engine.connect() as conn:
                for row in conn.execute(select(reflected).order_by(*order)).mappings():
                    yield dict(row)
        finally:
            engine.dispose()

    return columns, rows()


def fingerprint(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    """SHA-256 of the rows' values in `columns`, in row order: the same data gives the same
    fingerprint whether it came from CSV, JSONL, Parquet or SQL."""
    digest = hashlib.sha256(json.dumps(columns).encode())
    for row in rows:
        values = [_canonical(row.get(c)) for c in columns]
        digest.update(json.dumps(values, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    """CSV gives strings, JSONL numbers: compare numbers as numbers."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def declared_rows(path: Path) -> int | None:
    """The row count a file declares without being read (Parquet's metadata), or None."""
    if detect_format(path) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # unreadable: read_rows says why
        return None


WHOLE_OBJECT_MAX_BYTES = 2 * 2**30  # an object's local copy in read_all_rows


def read_all_rows(
    location: str, store: ObjectStore, max_bytes: int = WHOLE_OBJECT_MAX_BYTES
) -> tuple[list[str], list[dict[str, Any]]]:
    """Every row of a file or of an object (s3://bucket/data.csv, read through a local copy
    of at most `max_bytes`): training data, which is held whole anyway."""
    if not is_object_uri(location):
        columns, rows = read_rows(Path(location))
        return columns, list(rows)
    local = store.fetch_file(location, max_bytes)
    try:
        columns, rows = read_rows(local)
        return columns, list(rows)
    except InputFileError as exc:  # say where, not the local copy's name
        raise InputFileError(str(exc).replace(str(local), location)) from exc
    finally:
        local.unlink(missing_ok=True)
