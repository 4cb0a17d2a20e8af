"""Large jobs written in batches (issue 16): the ledger-first rule without holding the input.

A job too large for one transaction is opened `receiving` (JobStatus.RECEIVING): no worker
claims its chunks (Ledger.claim answers ClaimOutcome.RECEIVING), the sweeper sends none, and
it counts neither against its tenant's limit nor in a lane (storage/admission.py). Each
batch of items is written in one transaction: its full chunks, and its item keys into
`job_keys`, whose primary key keeps them unique across batches (a repeated key fails the
batch, and the error names it). `finish` admits the job (its tenant's limit, with the count
now known) and makes it `queued` in one transaction; only then are its chunks sent. A failed
or interrupted submit removes what it wrote (`abandon`); the sweeper removes the jobs of a
submitter that died (`abandoned`).

Lock order: the job row first, as everywhere in the ledger (storage/ledger.py), except in a
batch (`add`), which updates the job row last so that two batches in flight overlap: its chunk
inserts hold only a KEY SHARE lock on the job row (their foreign key), which a cancel or the
sweeper's FOR UPDATE waits for, and which the batch may strengthen without queueing behind them.

Durability: batches commit with `synchronous_commit = off` on PostgreSQL and `finish` commits
as the server is configured; on a server whose default is `off` a crash can lose a queued job's
last transactions, as it can anything else written there.
"""

import contextlib
import json
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import (
    Connection,
    Engine,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from schemas.errors import DuplicateKeysError, SluiceError, TooManyItemsError
from schemas.jobs import Item, JobSpec
from schemas.states import ChunkState, JobStatus
from storage import tables as t
from storage.admission import FairShare, admit
from storage.clock import db_now, utc
from storage.job_rows import new_job_row

ITEMS = TypeAdapter(list[Item])  # a chunk's items as JSON in one call, not one per item
KEYS_PER_LOOKUP = 1000  # keys per IN (...) list when naming a repeated key
UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


def name_chunk(job_id: str, seq: int) -> str:
    """The id of a job's chunk `seq` (Ledger.create_job names them the same way)."""
    return f"{job_id}-{seq:05d}"


class ReceivingJob:
    """One job being received: `write` items as they are read (full chunks are written, the
    rest waits for the next batch), then `finish`; `abandon` on any failure.

    A batch commits on a thread of its own while the caller reads the next one (the
    database's work overlaps the parsing). On PostgreSQL two batches are in flight, each on
    a connection of its own (one server process parses a batch's JSON and index entries
    while the other commits); on SQLite, whose writes take turns, one. Memory holds
    `depth + 1` batches whatever the input's size."""

    def __init__(self, receiver: "Receiver", job_id: str, spec: JobSpec, chunk_size: int):
        self.receiver = receiver
        self.job_id = job_id
        self.spec = spec
        self.chunk_size = chunk_size
        self.pending: list[Item] = []  # items read, not yet in a full chunk
        self.chunks = 0
        self.items = 0
        self.depth = 2 if receiver.engine.dialect.name == "postgresql" else 1
        self._writer = ThreadPoolExecutor(self.depth, thread_name_prefix="sluice-receive")
        self._in_flight: deque[Future[None]] = deque()

    def write(self, items: list[Item]) -> None:
        """Write every full chunk of what was read so far, in one transaction."""
        self.pending += items
        full = len(self.pending) - len(self.pending) % self.chunk_size
        if full:
            self._commit(self.pending[:full])
            self.pending = self.pending[full:]

    def finish(self) -> int:
        """Write the last chunk, admit the job and queue it; returns its lane."""
        if self.pending:
            self._commit(self.pending)
            self.pending = []
        self.flush()
        self._writer.shutdown()
        return self.receiver.finish(self.job_id, self.spec, self.items, self.chunks)

    def abandon(self) -> None:
        with contextlib.suppress(Exception):  # the failure being handled is the caller's
            self.flush()
        self._writer.shutdown()
        self.receiver.abandon(self.job_id)

    def _commit(self, rows: list[Item]) -> None:
        self._wait(self.depth - 1)  # a batch before: its failure (a repeated key) surfaces here
        args = (self.job_id, self.spec, rows, self.chunks, self.items, self.chunk_size)
        self._in_flight.append(self._writer.submit(self.receiver.add, *args))
        self.items += len(rows)
        self.chunks += -(-len(rows) // self.chunk_size)

    def flush(self) -> None:
        """Wait until every batch in flight has committed; a failure is raised here."""
        self._wait(0)

    def _wait(self, in_flight: int) -> None:
        """Wait, oldest first, until at most `in_flight` batches are left in flight."""
        while len(self._in_flight) > in_flight:
            self._in_flight.popleft().result()


class Receiver:
    def __init__(self, engine: Engine, fair_share: FairShare | None = None) -> None:
        self.engine = engine
        self.fair_share = fair_share or FairShare()
        self._session = sessionmaker(engine, expire_on_commit=False)

    def open(self, spec: JobSpec, chunk_size: int) -> ReceivingJob:
        """Record the job, `receiving`, with no items yet."""
        job_id = uuid.uuid4().hex
        with self._session.begin() as s:
            now = db_now(s)
            s.add(new_job_row(job_id, spec, now, JobStatus.RECEIVING, lane=0))
        return ReceivingJob(self, job_id, spec, chunk_size)

    def add(
        self,
        job_id: str,
        spec: JobSpec,
        rows: list[Item],
        first_seq: int,
        first_item: int,
        chunk_size: int,
    ) -> None:
        """One batch: its chunks and keys, and the job's counts, in one transaction. A key
        seen before in the job raises DuplicateKeysError naming it (nothing of the batch is
        written); so does a key repeated within the batch."""
        keys = [row.key for row in rows]
        if len(set(keys)) < len(keys):
            raise DuplicateKeysError([first_repeated(keys)])
        limit = self.fair_share.tenant_max_in_flight
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # the job is durable only once `finish` commits (synchronously, which
                    # flushes every batch's WAL before it); a crash before leaves a job
                    # `receiving` that the sweeper removes. Saves a disk flush per batch.
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                now = db_now(conn)
                insert_keys(conn, job_id, keys)
                conn.execute(
                    insert(t.Chunk).values(items=json_text(conn)),
                    [
                        {
                            "id": name_chunk(job_id, first_seq + n),
                            "job_id": job_id,
                            "seq": first_seq + n,
                            "state": ChunkState.QUEUED,
                            "first_item": first_item + start,
                            "size": len(part),
                            "attempts": 0,
                            "enqueued_at": now,
                            "items_json": ITEMS.dump_json(part, exclude_none=True).decode(),
                        }
                        for n, start in enumerate(range(0, len(rows), chunk_size))
                        if (part := rows[start : start + chunk_size])
                    ],
                )
                # the job's row last: a batch in flight beside this one waits for its lock
                # only here, after both wrote their keys and chunks
                total = self._count_in(conn, job_id, len(rows), -(-len(rows) // chunk_size))
                if limit is not None and total > limit:
                    raise TooManyItemsError(
                        f"a job of more than {limit} items", limit, "SLUICE_TENANT_MAX_IN_FLIGHT"
                    )
        except IntegrityError:
            known = self.first_known(job_id, keys)
            if known is not None:
                raise DuplicateKeysError([known]) from None
            with self.engine.connect() as conn:  # a chunk's job removed meanwhile (its key)
                status = conn.execute(select(t.Job.status).where(t.Job.id == job_id)).scalar()
            if status != JobStatus.RECEIVING:
                raise no_longer_receiving(job_id, status) from None
            raise  # neither: a bug, shown as it is

    def first_known(self, job_id: str, keys: list[str]) -> str | None:
        """The first of `keys` (in input order) the job already has, if any."""
        with self._session() as s:
            for start in range(0, len(keys), KEYS_PER_LOOKUP):
                part = keys[start : start + KEYS_PER_LOOKUP]
                known = set(
                    s.scalars(
                        select(t.JobKey.item_key).where(
                            t.JobKey.job_id == job_id, t.JobKey.item_key.in_(part)
                        )
                    )
                )
                if known:
                    return next(k for k in part if k in known)
        return None

    def finish(self, job_id: str, spec: JobSpec, items: int, chunks: int) -> int:
        """Admit the job with its whole count (the tenant's limit; its lane) and queue it, in
        one transaction; its chunks are sent after this commits. Returns the lane. `items`
        and `chunks`: what the submitter wrote. A job holding fewer (batches committed
        asynchronously, lost to a database crash the submitter's connection outlived) is
        refused, never queued with a gap."""
        with self._session.begin() as s:
            job = self._receiving(s, job_id)
            if (job.total, job.chunks_total) != (items, chunks):
                raise SluiceError(
                    f"job {job_id}: the ledger holds {job.total} of the {items} items written "
                    f"({job.chunks_total} of {chunks} chunks; the database restarted while "
                    "they were written?); nothing of it runs: submit it again"
                )
            now = db_now(s)
            job.lane = admit(s, self.fair_share, spec.tenant, spec.task, job.total, now)
            job.status = JobStatus.QUEUED
            # sent now: the sweeper's clock for a lost message starts here, not at the batch
            s.execute(update(t.Chunk).where(t.Chunk.job_id == job_id).values(enqueued_at=now))
            return job.lane

    def abandon(self, job_id: str, if_idle: float | None = None) -> bool:
        """Remove a job that was never queued (`receiving`, or cancelled while it was), with
        what was written of it. `if_idle`: only if no batch came for that many seconds
        (checked under the job's lock: a submitter that was only slow keeps its job)."""
        with self._session.begin() as s:
            job = s.get(t.Job, job_id, with_for_update=True, populate_existing=True)
            never_queued = job is not None and (
                job.status == JobStatus.RECEIVING
                or (job.status == JobStatus.CANCELLED and job.started_at is None)
            )
            if job is None or not never_queued:
                return False
            if if_idle is not None and job_id not in self._idle(s, if_idle, job_id):
                return False
            s.execute(delete(t.JobKey).where(t.JobKey.job_id == job_id))
            s.execute(delete(t.Chunk).where(t.Chunk.job_id == job_id))
            if job.status == JobStatus.CANCELLED:  # a user's cancel: the job stays, cancelled
                job.chunks_total = 0
            else:
                s.execute(delete(t.Job).where(t.Job.id == job_id))
            return True

    def abandoned(self, idle_seconds: float) -> list[str]:
        """Jobs still `receiving` with nothing written for `idle_seconds`: their submitter
        died (a live one writes a batch every few seconds)."""
        with self._session() as s:
            return self._idle(s, idle_seconds)

    @staticmethod
    def _idle(s: Session, idle_seconds: float, job_id: str | None = None) -> list[str]:
        newest = select(t.Chunk.job_id, func.max(t.Chunk.enqueued_at).label("last"))
        if job_id is not None:
            newest = newest.where(t.Chunk.job_id == job_id)
        last = newest.group_by(t.Chunk.job_id).subquery()
        query = (
            select(t.Job.id, t.Job.created_at, last.c.last)
            .outerjoin(last, last.c.job_id == t.Job.id)
            .where(t.Job.status == JobStatus.RECEIVING)
        )
        if job_id is not None:
            query = query.where(t.Job.id == job_id)
        cutoff = db_now(s) - timedelta(seconds=idle_seconds)
        return [
            found
            for found, created, written in s.execute(query).all()
            if (utc(written) or utc(created) or cutoff) < cutoff
        ]

    def clear_keys(self, jobs: int = 10) -> int:
        """Delete the keys of up to `jobs` jobs no longer `receiving` (queued since, or
        removed): the index has done its work, and the chunks hold the keys. The sweeper's,
        so that no submit pays for it; returns how many keys went."""
        with self._session.begin() as s:
            received = (
                select(t.JobKey.job_id)
                .outerjoin(t.Job, t.Job.id == t.JobKey.job_id)
                .where(or_(t.Job.id.is_(None), t.Job.status != JobStatus.RECEIVING))
                .distinct()
                .limit(jobs)
            )
            done = list(s.scalars(received))
            if not done:
                return 0
            gone = s.execute(delete(t.JobKey).where(t.JobKey.job_id.in_(done)))
            return int(gone.rowcount)  # type: ignore[attr-defined]

    def chunk_ids(self, job_id: str) -> Iterator[str]:
        """The job's chunk ids in order, read as they are sent (never all held)."""
        query = (
            select(t.Chunk.id)
            .where(t.Chunk.job_id == job_id)
            .order_by(t.Chunk.seq)
            .execution_options(yield_per=5000)
        )
        with self._session() as s:
            yield from s.scalars(query)

    @staticmethod
    def _count_in(conn: Connection, job_id: str, items: int, chunks: int) -> int:
        """Add a batch's counts to the job, locking its row, in one statement; returns the
        job's new total. Raises if the job is no longer `receiving` (cancelled, removed)."""
        total = conn.execute(
            update(t.Job)
            .where(t.Job.id == job_id, t.Job.status == JobStatus.RECEIVING)
            .values(total=t.Job.total + items, chunks_total=t.Job.chunks_total + chunks)
            .returning(t.Job.total)
        ).scalar()
        if total is None:
            status = conn.execute(select(t.Job.status).where(t.Job.id == job_id)).scalar()
            raise no_longer_receiving(job_id, status)
        return int(total)

    @staticmethod
    def _receiving(s: Session, job_id: str) -> t.Job:
        job = s.get(t.Job, job_id, with_for_update=True, populate_existing=True)
        if job is None or job.status != JobStatus.RECEIVING:
            raise no_longer_receiving(job_id, None if job is None else job.status)
        return job


def no_longer_receiving(job_id: str, status: str | None) -> SluiceError:
    return SluiceError(
        f"job {job_id} was {status or 'removed'} while its input was written; nothing of it runs"
    )


def insert_keys(conn: Connection, job_id: str, keys: list[str]) -> None:
    """The batch's keys into job_keys, bulk: COPY on PostgreSQL (sorted); on SQLite one statement
    reading them from a JSON array (json_each: half the cost of an executemany's binding of
    each row; a million keys through the ORM's per-row parameters would cost more than the
    rest)."""
    if conn.dialect.name != "postgresql":
        conn.exec_driver_sql(
            "INSERT INTO job_keys (job_id, item_key) SELECT ?, value FROM json_each(?)",
            (job_id, json.dumps(keys, ensure_ascii=False)),
        )
        return
    raw: Any = conn.connection.driver_connection
    try:
        with raw.cursor() as cur, cur.copy("COPY job_keys (job_id, item_key) FROM STDIN") as cp:
            # sorted: two batches in flight that share a key then take its index entry in
            # the same order (the later waits for the earlier and fails on the key; never a
            # deadlock), and a sorted run fills the index's pages in order
            cp.write(copy_rows(job_id, sorted(keys)).encode())
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == UNIQUE_VIOLATION:  # COPY's is not wrapped
            raise IntegrityError("COPY job_keys", None, exc) from exc
        raise


COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def json_text(conn: Connection) -> Any:
    """The chunk's items, bound as JSON text made by pydantic (its serialiser is compiled; the
    column type's would dump the same items again in Python): cast to JSONB on PostgreSQL,
    stored as the text it is on SQLite (where a JSON column is text)."""
    param = bindparam("items_json", type_=Text)
    return cast(param, JSONB) if conn.dialect.name == "postgresql" else type_coerce(param, Text)


def copy_rows(job_id: str, keys: list[str]) -> str:
    """(job_id, key) rows in COPY's text format: its four special characters escaped (looked
    for once in the whole batch: keys rarely hold any)."""
    joined = "\n".join(keys)
    plain = joined.count("\n") == len(keys) - 1 and not any(c in joined for c in "\\\t\r")
    if not plain:
        keys = [k.translate(COPY_ESCAPES) for k in keys]
    prefix = f"{job_id}\t"
    return prefix + f"\n{prefix}".join(keys) + "\n"


def first_repeated(keys: list[str]) -> str:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    raise ValueError("no key is repeated")
