"""Usage per tenant (issue 12): items by outcome, model seconds and tokens, per UTC day and
task, in `tenant_usage`. `record` runs inside the ledger transaction that settles a chunk
(storage/ledger.py `_finish`), so usage moves exactly when the job's counters do: a chunk
redelivered after it was settled adds nothing, and a rolled back settlement adds nothing.

Lock order: the settling transaction holds its job row, then upserts one usage row. Every
transaction takes at most one usage row, after its job, so no cycle (no deadlock) can form.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from schemas.states import ItemStatus
from storage import tables as t


@dataclass(frozen=True)
class ChunkUsage:
    """What one chunk cost, measured by the worker: seconds its items spent with the model
    actor, and tokens fed to the model (None: the task does not count them)."""

    model_seconds: float = 0.0
    tokens: int | None = None


@dataclass(frozen=True)
class UsageRow:
    tenant: str
    day: date
    task: str
    ok: int
    invalid: int
    error: int
    model_seconds: float
    tokens: int | None

    @property
    def items(self) -> int:
        return self.ok + self.invalid + self.error

    def as_dict(self) -> dict[str, object]:
        return {
            "tenant": self.tenant,
            "day": self.day.isoformat(),
            "task": self.task,
            "items": {"ok": self.ok, "invalid": self.invalid, "error": self.error},
            "model_seconds": round(self.model_seconds, 6),
            "tokens": self.tokens,
        }


def record(
    s: Session,
    tenant: str,
    task: str,
    now: datetime,
    counts: dict[ItemStatus, int],
    usage: ChunkUsage | None,
) -> None:
    """Add one settled chunk to its tenant's row of the day (the database's UTC day)."""
    usage = usage or ChunkUsage()
    dialect = s.bind.dialect.name  # type: ignore[union-attr]
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(t.TenantUsage).values(
        tenant=tenant,
        day=now.astimezone(UTC).date(),
        task=task,
        ok=counts.get(ItemStatus.OK, 0),
        invalid=counts.get(ItemStatus.INVALID, 0),
        error=counts.get(ItemStatus.ERROR, 0),
        model_seconds=max(0.0, usage.model_seconds),
        tokens=usage.tokens,
    )
    row = t.TenantUsage
    added = stmt.excluded
    s.execute(
        stmt.on_conflict_do_update(
            index_elements=[row.tenant, row.day, row.task],
            set_={
                "ok": row.ok + added.ok,
                "invalid": row.invalid + added.invalid,
                "error": row.error + added.error,
                "model_seconds": row.model_seconds + added.model_seconds,
                # null + n would stay null: a day's first counted chunk starts the count
                "tokens": func.coalesce(row.tokens, 0) + added.tokens
                if usage.tokens is not None
                else row.tokens,
            },
        )
    )


class Usage:
    """Reading `tenant_usage` (the API, the CLI, /metrics)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine.execution_options(readonly=True)

    def rows(
        self, tenant: str | None = None, start: date | None = None, end: date | None = None
    ) -> list[UsageRow]:
        """Rows of one tenant (None: every tenant) with start <= day <= end, oldest first."""
        query = select(t.TenantUsage).order_by(
            t.TenantUsage.day, t.TenantUsage.tenant, t.TenantUsage.task
        )
        if tenant is not None:
            query = query.where(t.TenantUsage.tenant == tenant)
        if start is not None:
            query = query.where(t.TenantUsage.day >= start)
        if end is not None:
            query = query.where(t.TenantUsage.day <= end)
        with Session(self.engine) as s:
            return [_row(u) for u in s.scalars(query)]

    def totals(self) -> list[UsageRow]:
        """All days summed, per tenant and task (the day field is the latest day)."""
        u = t.TenantUsage
        query = select(
            u.tenant,
            func.max(u.day),
            u.task,
            func.sum(u.ok),
            func.sum(u.invalid),
            func.sum(u.error),
            func.sum(u.model_seconds),
            func.sum(u.tokens),
        ).group_by(u.tenant, u.task)
        with Session(self.engine) as s:
            rows = s.execute(query).all()
        return [
            UsageRow(
                tenant,
                day,
                task,
                int(ok or 0),
                int(invalid or 0),
                int(error or 0),
                float(seconds or 0.0),
                None if tokens is None else int(tokens),
            )
            for tenant, day, task, ok, invalid, error, seconds, tokens in rows
        ]


def _row(u: t.TenantUsage) -> UsageRow:
    return UsageRow(
        u.tenant, u.day, u.task, u.ok, u.invalid, u.error, float(u.model_seconds), u.tokens
    )
