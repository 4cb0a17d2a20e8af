"""A table as a pipeline's sink: each result upserted by its event key, in the columns
`sluice enrich` writes (producers/warehouse_tables.py), so a result published twice (a crash
between the upsert and the ledger's mark) rewrites the same row: one row per event."""

import asyncio
from datetime import UTC, datetime

import orjson
from sqlalchemy import Engine, String, Table

from producers.buses.base import Outgoing
from producers.warehouse_tables import dest_table, enriched_row, ensure_dest, upsert
from schemas import pipelines as p
from schemas.errors import BusError
from schemas.pipelines import expand_env, masked_url
from schemas.storable import MAX_KEY_CHARS
from storage.engine import make_engine


class SqlSink:
    def __init__(self, conf: p.SqlSink) -> None:
        self.conf = conf
        self._engine: Engine | None = None
        self._table: Table | None = None

    async def connect(self) -> None:
        def prepare() -> None:
            self._engine = make_engine(expand_env(self.conf.url))
            self._table = dest_table(self.conf.table, self.conf.key_column, String(MAX_KEY_CHARS))
            ensure_dest(self._engine, self._table)

        try:
            await asyncio.to_thread(prepare)
        except Exception as exc:
            raise BusError(f"SQL sink {masked_url(self.conf.url)}: {exc}") from exc

    async def publish(self, messages: list[Outgoing]) -> None:
        assert self._engine is not None and self._table is not None
        now = datetime.now(UTC)
        rows = []
        for message in messages:
            result = orjson.loads(message.body)
            rows.append(
                enriched_row(
                    result,
                    self.conf.key_column,
                    result["key"],
                    result.get("model_version") or "",
                    result.get("job_id") or "",
                    now,
                )
            )
        try:
            await asyncio.to_thread(upsert, self._engine, self._table, self.conf.key_column, rows)
        except Exception as exc:
            raise BusError(f"SQL sink table {self.conf.table!r}: {exc}") from exc

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
