"""`sluice enrich --since-column`: the newest value already enriched, per (source, table,
task, model version), so that a re-run reads only new or changed rows. The rows behind the
watermark that ended `error` are kept apart, by key (storage.enrich_runs)."""

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from storage import tables as t
from storage.clock import host_now


def encode(value: Any) -> dict[str, Any]:
    """A watermark as JSON that keeps its type (a timestamp must come back a timestamp)."""
    for kind, cls in (
        ("bool", bool),
        ("int", int),
        ("float", float),
        ("decimal", Decimal),
        ("datetime", dt.datetime),
        ("date", dt.date),
    ):
        if isinstance(value, cls):
            text = value.isoformat() if isinstance(value, dt.date) else str(value)
            return {"type": kind, "value": text}
    return {"type": "str", "value": str(value)}


def decode(raw: dict[str, Any]) -> Any:
    kind, text = raw["type"], raw["value"]
    converters: dict[str, Any] = {
        "bool": lambda v: v == "True",
        "int": int,
        "float": float,
        "decimal": Decimal,
        "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
        "str": str,
    }
    return converters[kind](text)


class Watermarks:
    def __init__(self, engine: Engine) -> None:
        self._session = sessionmaker(engine, expire_on_commit=False)

    def get(self, source: str, table: str, task: str, model_version: str) -> Any | None:
        with self._session() as s:
            raw = s.scalar(
                select(t.EnrichWatermark.value).where(
                    t.EnrichWatermark.source == source,
                    t.EnrichWatermark.table_name == table,
                    t.EnrichWatermark.task == task,
                    t.EnrichWatermark.model_version == model_version,
                )
            )
            return decode(raw) if raw else None

    def set(
        self,
        source: str,
        table: str,
        task: str,
        model_version: str,
        since_column: str,
        value: Any,
        job_id: str | None,
    ) -> None:
        with self._session.begin() as s:
            set_watermark(s, (source, table, task, model_version), since_column, value, job_id)


def set_watermark(
    s: Session,
    mark: tuple[str, str, str, str],
    since_column: str,
    value: Any,
    job_id: str | None,
) -> None:
    """Upsert the watermark of `mark` (source, table, task, model version) in session `s`,
    so that a caller can move it in the same transaction as other bookkeeping."""
    source, table, task, model_version = mark
    row = {
        "source": source,
        "table_name": table,
        "task": task,
        "model_version": model_version,
        "since_column": since_column,
        "value": encode(value),
        "job_id": job_id,
        "updated_at": host_now(),
    }
    insert = postgresql.insert if s.bind.dialect.name == "postgresql" else sqlite.insert  # type: ignore[union-attr]
    stmt = insert(t.EnrichWatermark).values(row)
    s.execute(
        stmt.on_conflict_do_update(
            index_elements=["source", "table_name", "task", "model_version"],
            set_={k: stmt.excluded[k] for k in ("since_column", "value", "job_id", "updated_at")},
        )
    )
