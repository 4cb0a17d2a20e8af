"""Read JSONL, CSV and Parquet into items, with a clear outcome for every bad row."""

import csv
from collections.abc import Callable, Iterator
from typing import Any

from schemas.errors import InputFileError, TooManyItemsError
from schemas.jobs import Item, check_unique_keys, text_problem
from schemas.storable import MAX_KEY_CHARS
from storage.row_sources import MALFORMED, SUFFIXES, detect_format, read_rows

__all__ = [
    "SUFFIXES",
    "build_items",
    "check_key_column",
    "detect_format",
    "read_rows",
    "rows_to_items",
]


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


def build_items(
    columns: list[str],
    rows: Iterator[dict[str, Any]],
    *,
    key_column: str | None,
    source: str,
    build: ItemBuilder,
) -> list[Item]:
    """Rows to items of any modality: keys are checked here, the content by `build`."""
    check_key_column(columns, key_column, source)
    items: list[Item] = []
    try:
        for n, row in enumerate(rows, 1):
            items.append(_item(n, row, key_column, build))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        # CSV and Parquet are read lazily: a bad byte deep in the file surfaces here.
        raise InputFileError(f"{source}: unreadable near row {len(items) + 1}: {exc}") from exc
    check_unique_keys(items)
    return items


def check_key_column(columns: list[str], key_column: str | None, source: str) -> None:
    if key_column is not None and key_column not in columns:
        raise InputFileError(
            f"{source}: key column {key_column!r} not found; columns are: {', '.join(columns)}"
        )


def _item(n: int, row: dict[str, Any], key_col: str | None, build: ItemBuilder) -> Item:
    if MALFORMED in row:
        return Item(key=f"line:{row['_line']}", invalid=row[MALFORMED])
    if key_col is None:
        key = str(n)
    else:
        raw_key = row.get(key_col)
        if raw_key is None or raw_key == "":
            return Item(key=f"row:{n}", invalid=f"missing key column {key_col!r} in row {n}")
        if not isinstance(raw_key, str | int):
            return Item(
                key=f"row:{n}",
                invalid=f"key column {key_col!r} holds "
                f"{type(raw_key).__name__}, expected a string or an integer",
            )
        key = str(raw_key)
        if len(key) > MAX_KEY_CHARS:
            raise InputFileError(
                f"the key in row {n} is {len(key)} characters long; keys are "
                f"limited to {MAX_KEY_CHARS}"
            )
    return build(key, row)


def capped(
    rows: Iterator[dict[str, Any]], cap: int, source: str, setting: str = "SLUICE_API_MAX_ITEMS"
) -> Iterator[dict[str, Any]]:
    """The rows, refused (TooManyItemsError) as soon as one more than `cap` is read."""
    for n, row in enumerate(rows, 1):
        if n > cap:
            raise TooManyItemsError(source, cap, setting)
        yield row
