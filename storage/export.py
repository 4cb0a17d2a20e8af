"""Streaming exporters: results go out in batches, never all held in memory."""

import csv
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import IO, Any

from schemas.storable import strict_json

FORMATS = ("jsonl", "csv", "parquet")
CSV_COLUMNS = [
    "key", "status", "output", "error", "explanation", "model", "model_version", "cached",
    "redactions", "input_digest", "lineage",
]  # fmt: skip


def write_jsonl(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    n, encoded = 0, OnceEncoded()
    for row in rows:
        out.write(_jsonl_line(row, encoded) + "\n")
        n += 1
    return n


def _jsonl_line(row: dict[str, Any], encoded: "OnceEncoded") -> str:
    """A row as one JSON object; its lineage (shared by its chunk's rows) encoded once."""
    lineage = row.get("lineage")
    if not isinstance(lineage, dict):
        return strict_json(row)
    rest = strict_json({k: v for k, v in row.items() if k != "lineage"})
    return f'{rest[:-1]},"lineage":{encoded(lineage)}}}'


def _flat(row: dict[str, Any], encoded: "OnceEncoded") -> dict[str, Any]:
    """Nested values become JSON strings so every tabular format can hold them."""
    return {
        "key": row["key"],
        "status": row["status"],
        "output": strict_json(row["output"]) if row["output"] else None,
        "error": row["error"],
        "explanation": strict_json(row["explanation"]) if row.get("explanation") else None,
        "model": row.get("model"),
        "model_version": row.get("model_version"),
        "cached": bool(row.get("cached")),  # schemas.states.RowMark.CACHED
        # what PII redaction found (schemas/redaction.py): fields, types, spans, no values
        "redactions": strict_json(row["redactions"]) if row.get("redactions") else None,
        # what made the row (storage/lineage.py): its input's keyed digest, and its job's and
        # chunk's part (one object per chunk: encoded once, not per row)
        "input_digest": row.get("input_digest"),
        "lineage": encoded(row.get("lineage")),
    }


class OnceEncoded:
    """JSON text of values shared by many rows (a chunk's lineage: one object for its rows),
    encoded once per object for one export."""

    def __init__(self) -> None:
        self.texts: dict[int, tuple[Any, str]] = {}  # by id; the value kept: ids stay unique

    def __call__(self, value: dict[str, Any] | None) -> str | None:
        if value is None:
            return None
        known = self.texts.get(id(value))
        if known is None:
            known = self.texts[id(value)] = (value, strict_json(value))
        return known[1]


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    n, encoded = 0, OnceEncoded()
    for row in rows:
        writer.writerow(_flat(row, encoded))
        n += 1
    return n


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def write_parquet(rows: Iterable[dict[str, Any]], path: str, batch_size: int = 5000) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.bool_() if c == "cached" else pa.string()) for c in CSV_COLUMNS])
    n, encoded = 0, OnceEncoded()
    with pq.ParquetWriter(path, schema) as writer:
        for batch in _batches(rows, batch_size):
            flat = [_flat(r, encoded) for r in batch]
            writer.write_table(pa.Table.from_pylist(flat, schema=schema))
            n += len(batch)
    return n


def iter_jsonl(rows: Iterable[dict[str, Any]], batch: int = 500) -> Iterator[str]:
    """JSONL as text pieces of `batch` rows, for a streamed HTTP response."""
    encoded = OnceEncoded()
    for part in _batches(rows, batch):
        yield "".join(_jsonl_line(row, encoded) + "\n" for row in part)


def iter_csv(rows: Iterable[dict[str, Any]], batch: int = 500) -> Iterator[str]:
    """CSV (header first) as text pieces of `batch` rows, for a streamed HTTP response."""
    import io

    buf, encoded = io.StringIO(), OnceEncoded()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for part in _batches(rows, batch):
        writer.writerows(_flat(r, encoded) for r in part)
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue()
