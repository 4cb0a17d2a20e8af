"""Read JSONL, CSV and Parquet into items, with a clear outcome for every bad row."""

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter

from schemas.errors import InputFileError, SluiceError, TooManyItemsError
from schemas.jobs import Item, check_unique_keys, text_problem
from schemas.storable import MAX_KEY_CHARS, escaped_text
from storage import row_sources
from storage.row_sources import MALFORMED, SUFFIXES, detect_format

__all__ = [
    "SUFFIXES",
    "build_items",
    "check_key_column",
    "detect_format",
    "iter_build_items",
    "iter_rows_to_items",
    "listed",
    "read_rows",
    "rows_to_items",
]

ITEMS = TypeAdapter(list[Item])
# rows made into items in one pydantic call (one call a row costs as much as reading it);
# a divisor of RECEIVE_BATCH, so that no more rows are read than the batch being written
ITEM_BLOCK = 1000
UNDECODED = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, surrogate-escaped


def read_rows(
    path: Path, limit: int | None = None, source: str | None = None
) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """An input file's columns and rows (storage.row_sources.read_rows), where every failure,
    now or while the rows are read, is an InputFileError that says where: the line that is
    not UTF-8 or that JSON cannot hold, the header, or the row and column of a Parquet value
    Python cannot hold (a date past the year 9999). Nothing else escapes to a user.
    `source`: the file's name in messages (an upload's own name, not the server's copy)."""
    name = source or str(path)
    try:
        columns, rows = row_sources.read_rows(path, limit)
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, SluiceError) else exc
        if cause is None or detect_format(path) == "parquet":  # the reader's own message
            if isinstance(exc, SluiceError):
                message = str(exc)
                if source is None or not message.startswith(f"{path}:"):
                    raise
                raise InputFileError(name + message[len(str(path)) :]) from exc
            raise InputFileError(f"{name}: cannot be read ({type(exc).__name__}: {exc})") from exc
        where = _problem(path, cause)
        if where is None and isinstance(cause, csv.Error):  # only the header is read now
            where = f"the header row cannot be read ({cause})"
        where = where or f"cannot be read ({type(cause).__name__}: {cause})"
        raise InputFileError(f"{name}: {where}") from exc
    return columns, _located(rows, path, name)


def _located(rows: Iterator[dict[str, Any]], path: Path, name: str) -> Iterator[dict[str, Any]]:
    """The rows; a failure while one is read (CSV and Parquet are read lazily: a bad byte or
    value deep in the file surfaces here) an InputFileError naming where it is."""
    n = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except SluiceError:
            raise
        except Exception as exc:  # csv, codecs and pyarrow raise many types
            where = _problem(path, exc) or f"row {n + 1} cannot be read ({exc})"
            raise InputFileError(f"{name}: {where}") from exc
        n += 1
        yield row


def _problem(path: Path, exc: BaseException) -> str | None:
    """Where the file holds what made reading it fail with `exc`, if it can be found."""
    fmt = detect_format(path)
    if fmt == "parquet":
        return _parquet_problem(path)
    if fmt == "jsonl" or isinstance(exc, UnicodeDecodeError):
        return _text_problem(path, fmt)
    return None


def _text_problem(path: Path, fmt: str) -> str | None:
    """The first line of a JSONL or CSV file that is not UTF-8, or (JSONL) that Python's
    JSON parser refuses other than as bad JSON (such lines become `invalid` items)."""
    with path.open("rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape")
        for n, line in enumerate(text, 1):
            if bad := UNDECODED.search(line):
                return (
                    f"line {n} is not valid UTF-8 (byte 0x{ord(bad.group()) - 0xDC00:02x} at "
                    f"character {bad.start() + 1}); save the file as UTF-8"
                )
            if fmt != "jsonl" or not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError:
                continue
            except RecursionError:
                return f"line {n} nests arrays or objects too deeply to be read"
            except ValueError as exc:  # an integer of more digits than Python converts
                return f"line {n} cannot be read: {str(exc).split(';')[0]}"
    return None


def _parquet_problem(path: Path) -> str | None:
    """The row and column of the first Parquet value that cannot be read as Python's."""
    import pyarrow.parquet as pq

    start = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                try:
                    column.to_pylist()
                    continue
                except Exception:  # find its row
                    pass
                for i in range(len(column)):
                    try:
                        column.slice(i, 1).to_pylist()
                    except Exception as exc:
                        return (
                            f"row {start + i + 1}, column {name!r}: a value that cannot be "
                            f"read ({type(exc).__name__}: {exc})"
                        )
            start += batch.num_rows
    except Exception as exc:  # a damaged page or row group
        return f"the data from row {start + 1} on cannot be read ({type(exc).__name__}: {exc})"
    return None


ItemBuilder = Callable[[str, dict[str, Any]], Item]
Built = TypeVar("Built")  # an Item, or the fields of one


def field_text(value: Any) -> str:
    """A row's value as a prompt template shows it: text as it is, a number, date or
    decimal as str() writes it, a list or object (and true/false) as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | tuple | bool):
        return json.dumps(value, default=str)
    return str(value)


def rows_to_items(
    columns: list[str],
    rows: Iterator[dict[str, Any]],
    *,
    text_column: str,
    key_column: str | None,
    max_chars: int,
    source: str = "input",
    keep_fields: bool = False,
    needs_text: bool = True,
) -> list[Item]:
    """iter_rows_to_items, all at once, every repeated key named (DuplicateKeysError)."""
    items = list(
        iter_rows_to_items(
            columns,
            rows,
            text_column=text_column,
            key_column=key_column,
            max_chars=max_chars,
            source=source,
            keep_fields=keep_fields,
            needs_text=needs_text,
        )
    )
    check_unique_keys(items)
    return items


def iter_rows_to_items(
    columns: list[str],
    rows: Iterator[dict[str, Any]],
    *,
    text_column: str,
    key_column: str | None,
    max_chars: int,
    source: str = "input",
    keep_fields: bool = False,
    needs_text: bool = True,
) -> Iterator[Item]:
    """Texts, one item per row as it is read: bad rows become `invalid` items; a file-level
    problem raises (the columns now, before any row). With `keep_fields`, each item also
    carries its row's fields (the key and text columns too, under their own names) as text.
    Without `needs_text` (a task that builds its inputs from the fields, such as a question
    and its context) rows need no text column. Keys are not compared here: the submit path
    does (storage/receiving.py). Items are made a block of rows at a time, in one pydantic
    call (one per row costs as much as reading the row: issue 16)."""
    check_key_column(columns, key_column, source)
    if needs_text and text_column not in columns:
        raise InputFileError(
            f"{source}: text column {text_column!r} not found; columns are: "
            f"{listed(columns)}; choose one with --text-column"
        )

    def build(key: str, row: dict[str, Any]) -> dict[str, Any]:
        text = row.get(text_column)
        problem = text_problem(text, text_column, max_chars) if needs_text else None
        if problem:
            return {"key": key, "invalid": problem}
        if not keep_fields:
            return {"key": key, "text": text}
        fields = {
            str(name): field_text(value)
            for name, value in row.items()
            if not str(name).startswith("_") and value is not None
        }
        if too_long := [n for n, v in fields.items() if len(v) > max_chars]:
            return {"key": key, "invalid": f"the field {too_long[0]!r} is over {max_chars} "
                    "characters (SLUICE_MAX_TEXT_CHARS)"}  # fmt: skip
        if not needs_text and not isinstance(text, str):
            text = None  # the task reads the fields; a text column, where there is one, helps
        return {"key": key, "text": text, "fields": fields}

    return _validated_in_blocks(_built(rows, key_column, source, build))


def build_items(
    columns: list[str],
    rows: Iterator[dict[str, Any]],
    *,
    key_column: str | None,
    source: str,
    build: ItemBuilder,
) -> list[Item]:
    """iter_build_items, all at once, every repeated key named (DuplicateKeysError)."""
    items = list(iter_build_items(columns, rows, key_column=key_column, source=source, build=build))
    check_unique_keys(items)
    return items


def iter_build_items(
    columns: list[str],
    rows: Iterator[dict[str, Any]],
    *,
    key_column: str | None,
    source: str,
    build: ItemBuilder,
) -> Iterator[Item]:
    """Rows to items of any modality, lazily: keys are checked here (the key column now,
    before any row), the content by `build`."""
    check_key_column(columns, key_column, source)
    return _built(rows, key_column, source, build)


def _built(
    rows: Iterator[dict[str, Any]],
    key_column: str | None,
    source: str,
    build: Callable[[str, dict[str, Any]], Built],
) -> Iterator[Item | Built]:
    """Each row built with its key, or the `invalid` item it is for want of one."""
    for n, row in enumerate(_read(rows, source), 1):
        yield _keyed(n, row, key_column) or build(_key(n, row, key_column), row)


def _validated_in_blocks(fields: Iterator[dict[str, Any] | Item]) -> Iterator[Item]:
    """Items from their fields, ITEM_BLOCK at a time (an Item already made passes as it is)."""
    while block := list(islice(fields, ITEM_BLOCK)):
        yield from ITEMS.validate_python(block)


def _read(rows: Iterator[dict[str, Any]], source: str) -> Iterator[dict[str, Any]]:
    """Rows read lazily from elsewhere (a table, a stream): a failure to read one is an
    InputFileError naming it; a failure to build an item from it is not caught here."""
    n = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
            raise InputFileError(f"{source}: row {n + 1} cannot be read: {exc}") from exc
        n += 1
        yield row


def check_key_column(columns: list[str], key_column: str | None, source: str) -> None:
    if key_column is not None and key_column not in columns:
        raise InputFileError(
            f"{source}: key column {key_column!r} not found; columns are: {listed(columns)}"
        )


def listed(columns: list[str]) -> str:
    """Column names for a message: a name that is not valid Unicode (a JSON key "\\ud800")
    shown escaped, so the message can be printed and sent."""
    return escaped_text(", ".join(columns)) or "(none)"


def _keyed(n: int, row: dict[str, Any], key_col: str | None) -> Item | None:
    """The `invalid` item a row is for want of a usable key (or a line that is not JSON), or
    None: the row has its key (_key)."""
    if MALFORMED in row:
        return Item(key=f"line:{row['_line']}", invalid=row[MALFORMED])
    if key_col is None:
        return None
    raw_key = row.get(key_col)
    if raw_key is None or raw_key == "":
        return Item(key=f"row:{n}", invalid=f"missing key column {key_col!r} in row {n}")
    if isinstance(raw_key, bool) or not isinstance(raw_key, str | int):
        return Item(
            key=f"row:{n}",
            invalid=f"key column {key_col!r} holds "
            f"{type(raw_key).__name__}, expected a string or an integer",
        )
    return None


def _key(n: int, row: dict[str, Any], key_col: str | None) -> str:
    """The key of a row _keyed let through: its key column's, else its number."""
    if key_col is None:
        return str(n)
    key = str(row[key_col])
    if len(key) > MAX_KEY_CHARS:
        raise InputFileError(
            f"the key in row {n} is {len(key)} characters long; keys are limited to {MAX_KEY_CHARS}"
        )
    return key


def capped(
    rows: Iterator[dict[str, Any]], cap: int, source: str, setting: str = "SLUICE_API_MAX_ITEMS"
) -> Iterator[dict[str, Any]]:
    """The rows, refused (TooManyItemsError) as soon as one more than `cap` is read."""
    for n, row in enumerate(rows, 1):
        if n > cap:
            raise TooManyItemsError(source, cap, setting)
        yield row
