"""Read JSONL, CSV and Parquet into items, with a clear outcome for every bad row."""

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from schemas.errors import DuplicateKeysError, InputFileError
from schemas.jobs import Item, text_problem

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_MALFORMED = "__sluice_malformed__"
MAX_KEY_CHARS = 512  # the width of results.item_key


def detect_format(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputFileError(
            f"{path}: unknown file type {path.suffix!r}; use .jsonl, .csv or .parquet"
        )
    return fmt


def read_rows(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """The file's columns and its rows. Raises InputFileError when the file cannot be read."""
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    fmt = detect_format(path)
    try:
        if fmt == "jsonl":
            rows = list(_jsonl_rows(path))
            if rows and all(_MALFORMED in r for r in rows):
                raise InputFileError(f"{path}: not JSONL (no line is a JSON object)")
            columns = sorted({k for r in rows for k in r if k != _MALFORMED})
            return columns, iter(rows)
        if fmt == "csv":
            return _csv_rows(path)
        return _parquet_rows(path)
    except InputFileError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise InputFileError(f"{path}: cannot read it as {fmt}: {exc}") from exc


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield {_MALFORMED: f"line {lineno} is not valid JSON: {exc.msg}", "_line": lineno}
                continue
            if not isinstance(row, dict):
                yield {_MALFORMED: f"line {lineno} is not a JSON object", "_line": lineno}
                continue
            yield row


def _csv_rows(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    fh = path.open(encoding="utf-8", newline="")
    reader = csv.DictReader(fh)
    if reader.fieldnames is None:
        fh.close()
        raise InputFileError(f"{path}: empty CSV file (no header row)")
    columns = list(reader.fieldnames)

    def rows() -> Iterator[dict[str, Any]]:
        with fh:
            yield from reader

    return columns, rows()


def _parquet_rows(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise InputFileError(f"{path}: not a readable Parquet file: {exc}") from exc

    def rows() -> Iterator[dict[str, Any]]:
        for batch in pf.iter_batches(batch_size=10_000):
            yield from batch.to_pylist()

    return list(pf.schema_arrow.names), rows()


ItemBuilder = Callable[[str, dict[str, Any]], Item]


def rows_to_items(
    columns: list[str],
    rows: Iterator[dict[str, Any]],
    *,
    text_column: str,
    key_column: str | None,
    max_chars: int,
    source: str = "input",
) -> list[Item]:
    """Texts: bad rows become `invalid` items; a file-level problem raises."""
    check_key_column(columns, key_column, source)
    if text_column not in columns:
        raise InputFileError(
            f"{source}: text column {text_column!r} not found; columns are: "
            f"{', '.join(columns) or '(none)'}; choose one with --text-column"
        )

    def build(key: str, row: dict[str, Any]) -> Item:
        text = row.get(text_column)
        problem = text_problem(text, text_column, max_chars)
        return Item(key=key, invalid=problem) if problem else Item(key=key, text=text)

    return build_items(columns, rows, key_column=key_column, source=source, build=build)


def build_items(columns: list[str], rows: Iterator[dict[str, Any]], *, key_column: str | None,
                source: str, build: ItemBuilder) -> list[Item]:
    """Rows to items of any modality: keys are checked here, the content by `build`."""
    check_key_column(columns, key_column, source)
    items: list[Item] = []
    try:
        for n, row in enumerate(rows, 1):
            items.append(_item(n, row, key_column, build))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        # CSV and Parquet are read lazily: a bad byte deep in the file surfaces here.
        raise InputFileError(f"{source}: unreadable near row {len(items) + 1}: {exc}") from exc
    dupes = [k for k, c in Counter(i.key for i in items).items() if c > 1]
    if dupes:
        raise DuplicateKeysError(dupes)
    return items


def check_key_column(columns: list[str], key_column: str | None, source: str) -> None:
    if key_column is not None and key_column not in columns:
        raise InputFileError(
            f"{source}: key column {key_column!r} not found; columns are: {', '.join(columns)}"
        )


def _item(n: int, row: dict[str, Any], key_col: str | None, build: ItemBuilder) -> Item:
    if _MALFORMED in row:
        return Item(key=f"line:{row['_line']}", invalid=row[_MALFORMED])
    if key_col is None:
        key = str(n)
    else:
        raw_key = row.get(key_col)
        if raw_key is None or raw_key == "":
            return Item(key=f"row:{n}", invalid=f"missing key column {key_col!r} in row {n}")
        if not isinstance(raw_key, str | int):
            return Item(key=f"row:{n}", invalid=f"key column {key_col!r} holds "
                        f"{type(raw_key).__name__}, expected a string or an integer")
        key = str(raw_key)
        if len(key) > MAX_KEY_CHARS:
            raise InputFileError(f"the key in row {n} is {len(key)} characters long; keys are "
                                 f"limited to {MAX_KEY_CHARS}")
    return build(key, row)
