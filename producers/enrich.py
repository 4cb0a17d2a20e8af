"""`sluice enrich`: read rows from a table of any SQLAlchemy database, run them as one job,
and upsert the enriched columns into a destination table (producers.warehouse_tables).

A run can be re-run:
- Incremental runs (--since-column) read the rows newer than the watermark, and again, by key,
  the rows whose result was `error` in an earlier run (at most --max-retries runs in a row).
- A run is recorded before its job is submitted (storage.enrich_runs). An invocation whose
  spec has an unfinished run (killed, or it timed out waiting) resumes it: the same job is
  waited for, and only the results not yet written back are written.
- Keys of any exact SQL type come back as the source's own values (producers.warehouse_keys).
"""

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from typing import Any

from sqlalchemy import Engine, Table

from producers.adapters import adapter_for
from producers.job_specs import table_selection
from producers.warehouse_keys import KeyCodec, dest_key_type, key_codec
from producers.warehouse_tables import (
    KEY_PROBLEM,
    Condition,
    SourceSpec,
    dest_table,
    enriched_row,
    ensure_dest,
    read_keys,
    read_rows,
    redacted,
    reflect,
    table_column,
    table_name,
    upsert,
)
from schemas.errors import JobNotFoundError
from schemas.jobs import Item
from schemas.states import EnrichRunState, ItemStatus, JobStatus
from storage.engine import make_engine
from storage.enrich_runs import EnrichRuns, Mark, RunView, idempotency_key
from storage.ledger import JobView
from storage.watermarks import Watermarks

__all__ = ["Condition", "EnrichReport", "EnrichSpec", "SourceSpec", "enrich", "read_rows"]

WRITE_BATCH = 4000  # results upserted per statement (a commit each: ~15 ms on a SQLite file),
# and per step of the write-back cursor; embeddings are held as their JSON text (~30 MB)
DEFAULT_MAX_RETRIES = 3
# The invalid items of rows without a usable key: nothing to write back to. (The second
# prefix is the one producers.readers gives a row without a key.)
KEYLESS = ("key column ", "missing key column")


@dataclass
class EnrichSpec:
    source: SourceSpec
    dest_table: str
    task: str
    dest_url: str | None = None
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # explain, labels, priority...
    # Incremental runs: how many more runs read a row again after it ended `error`.
    max_retries: int = DEFAULT_MAX_RETRIES


@dataclass
class EnrichReport:
    rows_read: int
    rows_written: int
    job_id: str | None
    status: str
    watermark_before: Any | None
    watermark_after: Any | None
    seconds: float
    rows_retried: int = 0  # read again by key: their last result was `error`
    rows_given_up: int = 0  # `error` in more runs than --max-retries: read only when changed
    resumed: bool = False  # an unfinished run of the same spec was finished

    def as_dict(self) -> dict[str, Any]:
        def show(v: Any) -> Any:
            return v.isoformat() if isinstance(v, dt.date) else v

        return {
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_retried": self.rows_retried,
            "rows_given_up": self.rows_given_up,
            "job_id": self.job_id,
            "status": self.status,
            "resumed": self.resumed,
            "watermark_before": show(self.watermark_before),
            "watermark_after": show(self.watermark_after),
            "seconds": round(self.seconds, 3),
        }


def fingerprint(spec: EnrichSpec, full: bool, model_version: str, source: str, dest: str) -> str:
    """What a run is: an invocation resumes an unfinished run only if it asks the same."""
    s = spec.source
    described = {
        "source": source,
        "table": s.table,
        "key": s.key_column,
        "selected": s.selection(),
        "where": [(c.column, c.op, str(c.value)) for c in s.where],
        "since": s.since_column,
        "full": full,
        "task": spec.task,
        "model": spec.model,
        "model_version": model_version,
        "dest": dest,
        "dest_table": spec.dest_table,
        # --no-cache changes how rows are computed, not which: the same run, the same mark
        "options": {k: v for k, v in spec.options.items() if k != "cache"},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    """What one invocation works with, resolved before any row is read."""

    spec: EnrichSpec
    full: bool
    ref: Any  # the resolved model
    source: Engine
    table: Table  # the source table, reflected
    codec: KeyCodec  # its key column's
    mark: Mark  # the watermark's and the retried keys' scope
    fingerprint: str  # what the run is (resumed only by the same)

    @property
    def since(self) -> str | None:
        return self.spec.source.since_column


def enrich(
    client: Any,
    spec: EnrichSpec,
    *,
    full: bool = False,
    timeout: float | None = None,
    on_progress: Callable[[JobView], None] | None = None,
) -> EnrichReport:
    """Resume this spec's unfinished run, or read (new and failed) rows and run them as one
    job; wait, upsert the results, move the watermark."""
    started = time.perf_counter()
    spec.source.validate()
    table_name(spec.dest_table, "destination table")  # all names checked before connecting
    source = make_engine(spec.source.url)
    dest_engine = make_engine(spec.dest_url) if spec.dest_url else source
    try:
        ref = client.resolve_model(spec.model, spec.task)
        runs = EnrichRuns(client.ledger.engine)
        task = client.catalog.get(spec.task)
        adapter = adapter_for(task.modality)
        spec.source.selected = table_selection(
            task,
            adapter.table_columns(
                spec.source.text_column, spec.source.media_column, ref.path if ref.loads else None
            ),
            spec.options,
        )
        table = reflect(source, spec.source.table)
        key = table_column(table, spec.source.key_column, "key column")
        codec = key_codec(key, source.dialect)  # an unusable key is refused before any work
        key_type = dest_key_type(codec, key.type, source.dialect, dest_engine.dialect)
        dest = dest_table(spec.dest_table, spec.source.key_column, key_type)
        ensure_dest(dest_engine, dest)
        plan = Plan(
            spec,
            full,
            ref,
            source,
            table,
            codec,
            (redacted(source), spec.source.table, spec.task, ref.version),
            fingerprint(spec, full, ref.version, redacted(source), redacted(dest_engine)),
        )
        run = resumable(client, runs, plan.fingerprint)
        resumed = run is not None
        run = run or start(client, runs, plan)
        if run is None:
            before = watermark(runs, plan)
            seconds = time.perf_counter() - started
            return EnrichReport(
                0,
                0,
                None,
                "nothing-to-do",
                before,
                before,
                seconds,
                rows_given_up=given_up(runs, plan),
            )
        assert run.job_id is not None
        # full batches of results are written back while the job runs (FollowingWriteBack),
        # the rest once it has finished
        following = FollowingWriteBack(client, runs, run, dest_engine, dest, plan, on_progress)
        view = client.wait(run.job_id, timeout=timeout, on_progress=following)
        # ended with every chunk done or dead: a result for every position, so the rest is
        # read from the cursor's position on; a cancelled job's (gaps) is counted to it
        upto = None if view.status == JobStatus.CANCELLED else view.counts.total
        run = write_back(client, runs, following.run, view, dest_engine, dest, plan, upto)
        moved = plan.since is not None and view.status != JobStatus.CANCELLED
        after = run.watermark_after if moved else run.watermark_before
        runs.finish(
            plan.fingerprint, run.id, plan.mark, plan.since if moved else None, after, view.id
        )
        return EnrichReport(
            run.rows_read,
            run.rows_written,
            view.id,
            view.status.value,
            run.watermark_before,
            after,
            time.perf_counter() - started,
            rows_retried=run.rows_retried,
            rows_given_up=given_up(runs, plan),
            resumed=resumed,
        )
    finally:
        source.dispose()
        if dest_engine is not source:
            dest_engine.dispose()


def watermark(runs: EnrichRuns, plan: Plan) -> Any | None:
    """Where an incremental run starts reading (None: every row)."""
    if plan.since is None or plan.full:
        return None
    return Watermarks(runs.engine).get(*plan.mark)


def given_up(runs: EnrichRuns, plan: Plan) -> int:
    return runs.given_up(plan.mark, plan.spec.max_retries) if plan.since else 0


def resumable(client: Any, runs: EnrichRuns, fp: str) -> RunView | None:
    """The unfinished run of this spec, with its job; None when there is none, or when its job
    never came to exist (killed before the job was recorded: nothing ran, start over)."""
    run = runs.unfinished(fp)
    if run is None:
        return None
    job_id = runs.job_of(run)
    if job_id is not None:
        try:
            client.ledger.job(job_id)
        except JobNotFoundError:  # deleted since (retention): its results are gone too
            job_id = None
    if job_id is not None and client.ledger.job(job_id).status == JobStatus.RECEIVING:
        # its submitter died while writing it: remove what it wrote and start over
        client.ledger.receiver.abandon(job_id)
        job_id = None
    if job_id is None:
        runs.discard(fp)
        return None
    if run.job_id is None:
        runs.submitted(fp, run.id, job_id)
    return replace(run, job_id=job_id, state=EnrichRunState.RUNNING)


def start(client: Any, runs: EnrichRuns, plan: Plan) -> RunView | None:
    """Read the rows, record the run, submit its job; None when there is nothing to do.

    Incremental runs read the rows newer than the watermark, then the rows whose last result
    was `error`, again by key. Keeping failed keys apart, rather than holding the watermark
    back at the oldest failure, keeps each run proportional to what changed or failed: a row
    that keeps failing does not make every later run re-read all the rows after it."""
    src, codec = plan.spec.source, plan.codec
    before = watermark(runs, plan)
    failed = runs.retries(plan.mark) if plan.since is not None else {}
    usable = {k for k in failed if decodes(codec, k)}
    unusable = [k for k in failed if k not in usable]
    due = [k for k, n in failed.items() if n <= plan.spec.max_retries and k in usable]
    _, rows = read_rows(plan.source, src, before)
    newest: list[Any] = []
    seen: set[str] = set()  # keys read that had failed before: only those are kept
    retried: set[str] = set()
    keyless: list[Item] = []
    read = [0]

    def tracked() -> Iterator[dict[str, Any]]:
        for n, row in enumerate(rows, 1):
            since = row.pop("since", None)
            if since is not None:
                newest[:] = [max(newest[0], since) if newest else since]
            if row["key"] is None:
                keyless.append(keyless_item(n, row, src.key_column))
                continue
            if row["key"] in failed:
                seen.add(row["key"])
            yield row
        again = [k for k in due if k not in seen]
        for row in read_keys(plan.source, plan.table, src, again):
            retried.add(row["key"])
            yield row

    def counted(items: Iterator[Item]) -> Iterator[Item]:
        for item in items:
            read[0] += 1
            yield item

    columns = ["key", *(name for _, name, _ in src.selection())]

    # Streamed into the job as they are read (a table of any size in flat memory); the rows
    # without a key (invalid: nowhere to write back) come last.
    def without_key() -> Iterator[Item]:  # started once every row was read
        yield from keyless
        keyless.clear()

    items = counted(chain(client.iter_items_from_rows(
        columns, tracked(), plan.spec.task, ref=plan.ref, key_column="key",
        source=f"table {src.table}",
    ), without_key()))  # fmt: skip
    first = next(items, None)
    if first is None:  # every row was read: nothing changed and nothing to retry
        runs.forget(plan.mark, [k for k in due if k not in retried] + unusable)
        return None
    run = runs.start(plan.fingerprint, plan.mark, before=before, after=before,
                     rows_read=0, rows_retried=0)  # fmt: skip
    job_id = client.submit_items(
        chain([first], items),
        plan.spec.task,
        model=plan.spec.model,
        **plan.spec.options,
        source=f"sql:{redacted(plan.source)}#{src.table}",
        idempotency_key=idempotency_key(run.id),
        redact_keys=False,  # results are written back by the table's own keys
    )
    # keys to retry that are no longer in the source (or no longer fit its key column)
    forget = [k for k in due if k not in seen and k not in retried] + unusable
    after = newest[0] if newest else before
    runs.submitted(
        plan.fingerprint, run.id, job_id,
        read=(after, read[0], len(retried)),
        reset=list(seen),  # changed rows: their failures count afresh
        forget=forget,
    )  # fmt: skip
    return replace(run, job_id=job_id, state=EnrichRunState.RUNNING, watermark_after=after,
                   rows_read=read[0], rows_retried=len(retried))  # fmt: skip


def decodes(codec: KeyCodec, key: str) -> bool:
    try:
        codec.decode(key)
    except (ValueError, ArithmeticError):
        return False
    return True


def keyless_item(n: int, row: dict[str, Any], key_column: str) -> Item:
    why = row.get(KEY_PROBLEM) or f"key column {key_column!r} is NULL"
    return Item(key=f"row:{n}", invalid=f"{why}; nowhere to write its result back")


class FollowingWriteBack:
    """Client.wait's on_progress: each time the job moves, write back the full batches of
    results before the first chunk still open (Ledger.final_results_before), so that the
    destination fills while the job runs and little is left when it ends."""

    def __init__(
        self,
        client: Any,
        runs: EnrichRuns,
        run: RunView,
        engine: Engine,
        dest: Table,
        plan: Plan,
        on_progress: Callable[[JobView], None] | None,
    ) -> None:
        self.client, self.runs, self.run = client, runs, run
        self.engine, self.dest, self.plan = engine, dest, plan
        self.on_progress = on_progress

    def __call__(self, view: JobView) -> None:
        if self.on_progress is not None:
            self.on_progress(view)
        if view.status.finished:  # the rest is written after the wait
            return
        done = self.run.results_done
        ready = self.client.ledger.final_results_before(view.id)
        full = (ready - done) // WRITE_BATCH * WRITE_BATCH
        if full > 0:
            self.run = write_back(
                self.client, self.runs, self.run, view, self.engine, self.dest, self.plan,
                upto=done + full,
            )  # fmt: skip


def write_back(
    client: Any,
    runs: EnrichRuns,
    run: RunView,
    view: JobView,
    engine: Engine,
    dest: Table,
    plan: Plan,
    upto: int | None = None,
) -> RunView:
    """Upsert the job's results from where this run's write-back stopped, WRITE_BATCH at a
    time; after each batch the cursor moves and (incremental runs) the failed keys are
    counted, in one ledger transaction. A kill between the upsert and that transaction
    upserts the batch again on resume: the same rows, no duplicates. `upto`: only the
    results of input positions before it, every one final, none missing (the cursor, a
    count of results, is then their position: read from there, not counted to)."""
    mark = plan.mark if plan.since else None
    key_column = next(iter(dest.primary_key.columns)).name
    now = dt.datetime.now(dt.UTC)
    done, written = run.results_done, run.rows_written
    if upto is not None:
        results: Iterator[dict[str, Any]] = client.ledger.iter_results(
            view.id, embedding_as_text=True, seqs=(done, upto)
        )
    else:
        results = islice(client.ledger.iter_results(view.id, embedding_as_text=True), done, None)
    while batch := list(islice(results, WRITE_BATCH)):
        keyed = [r for r in batch if not keyless(r)]
        errors = [r for r in keyed if r["status"] == ItemStatus.ERROR]
        before = runs.attempts(mark, [r["key"] for r in errors]) if mark and errors else {}
        rows = []
        for r in keyed:
            note = None
            runs_failed = before.get(r["key"], 0) + 1
            if mark and r["status"] == ItemStatus.ERROR and runs_failed > plan.spec.max_retries:
                note = (
                    f"{r.get('error')} [failed in {runs_failed} runs in a row: not retried "
                    "again until the row changes, or with --full]"
                )
            key = plan.codec.decode(r["key"])
            rows.append(enriched_row(r, key_column, key, view.model_version, view.id, now, note))
        upsert(engine, dest, key_column, rows)
        done, written = done + len(batch), written + len(rows)
        runs.wrote(
            run.fingerprint,
            run.id,
            done,
            written,
            mark,
            failed=[(r["key"], r.get("error")) for r in errors],
            cleared=[r["key"] for r in keyed if r["status"] != ItemStatus.ERROR],
            job_id=view.id,
        )
    return replace(run, results_done=done, rows_written=written)


def keyless(result: dict[str, Any]) -> bool:
    """A result of a row without a usable key: there is no row to write it back to."""
    error = result.get("error") or ""
    return result["status"] == ItemStatus.INVALID and error.startswith(KEYLESS)
