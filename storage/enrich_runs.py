"""`sluice enrich`'s memory between invocations, beside the watermark (storage.watermarks):

- the run of a spec that has not finished (enrich_runs), so that an invocation killed while
  its job ran, or while it wrote the results back, is resumed by the next one: the same job
  is waited for and only the results not yet written back are written;
- the keys of rows whose result was `error` (enrich_retries), so that an incremental run
  reads them again although the watermark has moved past them.

Each method is one transaction. Keys are item keys (text; producers.warehouse_keys turns
them back into the source's values)."""

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from schemas.states import EnrichRunState
from storage import tables as t
from storage.clock import host_now
from storage.watermarks import decode, encode, set_watermark

Mark = tuple[str, str, str, str]  # (source, table, task, model version): a watermark's key
IN_BATCH = 1000  # keys per IN (...) list


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """`items` in lists of at most `size` (itertools.batched is Python 3.12+)."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def idempotency_key(run_id: str) -> str:
    """The job of run `run_id` is recorded under this key, so a resume can find it even
    when the run was killed before it noted the job's id."""
    return f"enrich:{run_id}"


@dataclass(frozen=True)
class RunView:
    fingerprint: str
    id: str
    state: EnrichRunState
    job_id: str | None
    watermark_before: Any | None
    watermark_after: Any | None
    rows_read: int
    rows_retried: int
    results_done: int  # results of the job written back (or skipped), in input order
    rows_written: int


def _view(run: t.EnrichRun) -> RunView:
    return RunView(
        fingerprint=run.fingerprint,
        id=run.id,
        state=EnrichRunState(run.state),
        job_id=run.job_id,
        watermark_before=decode(run.watermark_before) if run.watermark_before else None,
        watermark_after=decode(run.watermark_after) if run.watermark_after else None,
        rows_read=run.rows_read,
        rows_retried=run.rows_retried,
        results_done=run.results_done,
        rows_written=run.rows_written,
    )


class EnrichRuns:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)

    # -- runs -----------------------------------------------------------------------------

    def unfinished(self, fingerprint: str) -> RunView | None:
        with self._session() as s:
            run = s.get(t.EnrichRun, fingerprint)
            return _view(run) if run and run.state != EnrichRunState.DONE else None

    def start(
        self,
        fingerprint: str,
        mark: Mark,
        *,
        before: Any | None,
        after: Any | None,
        rows_read: int,
        rows_retried: int,
        reset: Iterable[str] = (),
        forget: Iterable[str] = (),
    ) -> RunView:
        """Record a new run of the spec (replacing its last one) before its job is submitted.
        `reset`: keys read again because they changed; their failures count afresh.
        `forget`: keys to retry that are no longer in the source."""
        source, table, task, version = mark
        with self._session.begin() as s:
            run = s.get(t.EnrichRun, fingerprint)
            if run is None:
                run = t.EnrichRun(fingerprint=fingerprint, created_at=host_now())
                s.add(run)
            run.id = uuid.uuid4().hex
            run.source, run.table_name, run.task, run.model_version = mark
            run.state = EnrichRunState.SUBMITTING
            run.job_id = None
            run.watermark_before = None if before is None else encode(before)
            run.watermark_after = None if after is None else encode(after)
            run.rows_read, run.rows_retried = rows_read, rows_retried
            run.results_done = run.rows_written = 0
            run.created_at = run.updated_at = host_now()
            for keys in batched(reset, IN_BATCH):
                s.execute(update(t.EnrichRetry).where(*_of(mark, keys)).values(attempts=0))
            for keys in batched(forget, IN_BATCH):
                s.execute(delete(t.EnrichRetry).where(*_of(mark, keys)))
            s.flush()
            return _view(run)

    def submitted(
        self,
        fingerprint: str,
        run_id: str,
        job_id: str,
        *,
        read: tuple[Any | None, int, int] | None = None,
        reset: Iterable[str] = (),
        forget: Iterable[str] = (),
    ) -> None:
        """The run's job is recorded. `read`: what reading the rows as they streamed into
        the job found (the newest `since` value, rows read, rows retried by key); `reset` and
        `forget` as in `start` (known only once every row was read)."""
        values: dict[str, Any] = {"state": EnrichRunState.RUNNING, "job_id": job_id}
        if read is not None:
            after, rows_read, rows_retried = read
            values["watermark_after"] = None if after is None else encode(after)
            values["rows_read"], values["rows_retried"] = rows_read, rows_retried
        with self._session.begin() as s:
            run = s.get(t.EnrichRun, fingerprint)
            noted = s.execute(
                update(t.EnrichRun)
                .where(t.EnrichRun.fingerprint == fingerprint, t.EnrichRun.id == run_id)
                .values(**values, updated_at=host_now())
            )
            if run is None or noted.rowcount == 0:  # type: ignore[attr-defined]
                return
            mark = (run.source, run.table_name, run.task, run.model_version)
            for keys in batched(reset, IN_BATCH):
                s.execute(update(t.EnrichRetry).where(*_of(mark, keys)).values(attempts=0))
            for keys in batched(forget, IN_BATCH):
                s.execute(delete(t.EnrichRetry).where(*_of(mark, keys)))

    def job_of(self, run: RunView) -> str | None:
        """The run's job: noted on the run, or recorded under its idempotency key."""
        if run.job_id:
            return run.job_id
        with self._session() as s:
            return s.scalar(
                select(t.Job.id).where(
                    t.Job.tenant == "default", t.Job.idempotency_key == idempotency_key(run.id)
                )
            )

    def wrote(
        self,
        fingerprint: str,
        run_id: str,
        results_done: int,
        rows_written: int,
        mark: Mark | None,
        failed: list[tuple[str, str | None]],
        cleared: list[str],
        job_id: str,
    ) -> None:
        """A batch of results was written back: move the cursor and, for an incremental run
        (`mark`), count `failed` (key, error) as one more failed run each and drop `cleared`
        keys from the retries, in the same transaction (so a resumed run counts it once).
        A run replaced by a newer run of its spec notes nothing: the newer one counts."""
        with self._session.begin() as s:
            noted = s.execute(
                update(t.EnrichRun)
                .where(t.EnrichRun.fingerprint == fingerprint, t.EnrichRun.id == run_id)
                .values(results_done=results_done, rows_written=rows_written, updated_at=host_now())
            )
            if mark is None or noted.rowcount == 0:  # type: ignore[attr-defined]
                return
            if failed:
                _count_failures(s, mark, failed, job_id)
            for keys in batched(cleared, IN_BATCH):
                s.execute(delete(t.EnrichRetry).where(*_of(mark, keys)))

    def finish(
        self,
        fingerprint: str,
        run_id: str,
        mark: Mark,
        since_column: str | None,
        watermark: Any | None,
        job_id: str | None,
    ) -> None:
        """The run is done; the watermark (when given) moves in the same transaction, unless a
        newer run of the spec replaced this one (it moves the watermark when it is done)."""
        with self._session.begin() as s:
            done = s.execute(
                update(t.EnrichRun)
                .where(t.EnrichRun.fingerprint == fingerprint, t.EnrichRun.id == run_id)
                .values(state=EnrichRunState.DONE, updated_at=host_now())
            )
            replaced = done.rowcount == 0  # type: ignore[attr-defined]
            if since_column is not None and watermark is not None and not replaced:
                set_watermark(s, mark, since_column, watermark, job_id)

    def discard(self, fingerprint: str) -> None:
        """Forget an unfinished run whose job never came to exist (or no longer does)."""
        with self._session.begin() as s:
            s.execute(delete(t.EnrichRun).where(t.EnrichRun.fingerprint == fingerprint))

    # -- the keys to retry ----------------------------------------------------------------

    def retries(self, mark: Mark) -> dict[str, int]:
        """Every key of `mark` whose last result was `error`, with its failed runs."""
        with self._session() as s:
            rows = s.execute(
                select(t.EnrichRetry.item_key, t.EnrichRetry.attempts).where(*_of(mark))
            )
            return {key: attempts for key, attempts in rows}

    def forget(self, mark: Mark, keys: list[str]) -> None:
        """Stop retrying these keys (their rows are no longer in the source)."""
        with self._session.begin() as s:
            for batch in batched(keys, IN_BATCH):
                s.execute(delete(t.EnrichRetry).where(*_of(mark, batch)))

    def attempts(self, mark: Mark, keys: list[str]) -> dict[str, int]:
        with self._session() as s:
            found: dict[str, int] = {}
            for batch in batched(keys, IN_BATCH):
                rows = s.execute(
                    select(t.EnrichRetry.item_key, t.EnrichRetry.attempts).where(*_of(mark, batch))
                )
                found.update({key: attempts for key, attempts in rows})
            return found

    def given_up(self, mark: Mark, max_retries: int) -> int:
        """How many rows failed in more runs than `max_retries` allows to retry."""
        with self._session() as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(t.EnrichRetry)
                    .where(*_of(mark), t.EnrichRetry.attempts > max_retries)
                )
                or 0
            )

    def given_up_keys(self, mark: Mark, max_retries: int, limit: int = 20) -> list[str]:
        with self._session() as s:
            return list(
                s.scalars(
                    select(t.EnrichRetry.item_key)
                    .where(*_of(mark), t.EnrichRetry.attempts > max_retries)
                    .order_by(t.EnrichRetry.item_key)
                    .limit(limit)
                )
            )


def _of(mark: Mark, keys: Iterable[str] | None = None) -> Iterator[Any]:
    source, table, task, version = mark
    yield t.EnrichRetry.source == source
    yield t.EnrichRetry.table_name == table
    yield t.EnrichRetry.task == task
    yield t.EnrichRetry.model_version == version
    if keys is not None:
        yield t.EnrichRetry.item_key.in_(list(keys))


def _count_failures(
    s: Session, mark: Mark, failed: list[tuple[str, str | None]], job_id: str
) -> None:
    source, table, task, version = mark
    now = host_now()
    rows = [
        {
            "source": source,
            "table_name": table,
            "task": task,
            "model_version": version,
            "item_key": key,
            "attempts": 1,
            "last_error": error,
            "job_id": job_id,
            "updated_at": now,
        }
        for key, error in failed
    ]
    insert = postgresql.insert if s.bind.dialect.name == "postgresql" else sqlite.insert  # type: ignore[union-attr]
    stmt = insert(t.EnrichRetry)
    s.execute(
        stmt.on_conflict_do_update(
            index_elements=["source", "table_name", "task", "model_version", "item_key"],
            set_={
                "attempts": t.EnrichRetry.attempts + 1,
                "last_error": stmt.excluded.last_error,
                "job_id": stmt.excluded.job_id,
                "updated_at": stmt.excluded.updated_at,
            },
        ),
        rows,
    )
