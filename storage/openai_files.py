"""Files uploaded through the OpenAI-compatible API (issue 25): kept where exports are kept,
in the ledger (parts of at most 1 MiB in `openai_file_parts`) or, with SLUICE_OPENAI_FILES_URI,
as objects under that prefix; streamed in and out, never held whole. A file lives for its
tenant's retention period from upload (schemas/retention.py), or until deleted.

An upload is written in short transactions (a few parts each: SQLite writers, the workers
among them, never wait on a slow client) and is `uploading` until its last part is in; only
then is it seen. One never finished (a client gone, a crash) is removed after a day."""

import logging
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, delete, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from schemas.errors import OpenAIRequestError
from schemas.storable import escaped_text
from storage import tables as t
from storage.clock import db_now, utc
from storage.engine import truncate_wal
from storage.object_store import ObjectStore

log = logging.getLogger("sluice.openai_files")
PART_BYTES = 2**20
PARTS_PER_TRANSACTION = 8
UPLOADING, PROCESSED = "uploading", "processed"
ABANDONED_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class StoredFile:
    id: str
    tenant: str
    purpose: str
    filename: str
    bytes: int
    created_at: datetime
    expires_at: datetime | None
    uri: str | None

    @classmethod
    def of(cls, row: t.OpenAIFile) -> "StoredFile":
        return cls(
            row.id, row.tenant, row.purpose, row.filename, row.bytes,
            utc(row.created_at) or row.created_at, utc(row.expires_at), row.uri,
        )  # fmt: skip


@dataclass(frozen=True)
class Line:
    """One line of a file (without its end), or `too_long` with its first bytes only;
    `number`: its line in the file, from 1, blank lines counted."""

    data: bytes
    number: int
    too_long: bool = False


def in_parts(pieces: Iterable[bytes], size: int = PART_BYTES) -> Iterator[bytes]:
    """The bytes of `pieces` again, in parts of `size` (the last may be shorter)."""
    held = bytearray()
    for piece in pieces:
        held += piece
        while len(held) >= size:
            yield bytes(held[:size])
            del held[:size]
    if held:
        yield bytes(held)


def lines_of(pieces: Iterable[bytes], max_line: int) -> Iterator[Line]:
    """The lines of a stream of bytes, blank ones left out; a line over `max_line` bytes is
    not kept whole (only its first bytes, marked too long), so no line costs more memory."""
    held = bytearray()
    number = 1
    dropping = False  # inside a line already over the cap (reported)
    for piece in pieces:
        start = 0
        while (end := piece.find(b"\n", start)) != -1:
            if not dropping:
                if len(held) + end - start > max_line:
                    yield Line(bytes((held + piece[start:end])[:256]), number, too_long=True)
                else:
                    held += piece[start:end]
                    if held.strip():
                        yield Line(bytes(held), number)
            dropping = False
            held.clear()
            number += 1
            start = end + 1
        if not dropping:
            held += piece[start:]
            if len(held) > max_line:
                yield Line(bytes(held[:256]), number, too_long=True)
                held.clear()
                dropping = True
    if held.strip() and not dropping:
        yield Line(bytes(held), number)


class OpenAIFiles:
    def __init__(self, engine: Engine, store: ObjectStore, prefix: str = "") -> None:
        self.engine = engine
        self.store = store
        self.prefix = prefix.rstrip("/")
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def save(
        self,
        tenant: str,
        purpose: str,
        filename: str,
        pieces: Iterable[bytes],
        max_bytes: int,
        retention_s: int | None,
    ) -> StoredFile:
        """Store an upload; over `max_bytes` it is refused (413) and nothing is kept."""
        file_id = f"file-{secrets.token_hex(12)}"
        counted = capped(pieces, max_bytes)
        uri = f"{self.prefix}/{tenant}/{file_id}.jsonl" if self.prefix else None
        size = self._put(counted, uri) if uri else 0  # the object first, outside any transaction
        with Session(self.engine) as s, s.begin():
            now = db_now(s)
            s.add(
                t.OpenAIFile(
                    id=file_id, tenant=tenant, purpose=purpose,
                    filename=escaped_text(filename)[:255], bytes=size, created_at=now,
                    expires_at=now + timedelta(seconds=retention_s) if retention_s else None,
                    uri=uri, status=UPLOADING if uri is None else PROCESSED,
                )
            )  # fmt: skip
        if uri is None:
            try:
                size = self._write_parts(file_id, counted)
            except BaseException:
                self._remove_rows(file_id)
                raise
        return self.get(tenant, file_id)

    def _write_parts(self, file_id: str, pieces: Iterable[bytes]) -> int:
        size, seq, batch = 0, 0, []
        for part in in_parts(pieces):
            batch.append({"file_id": file_id, "seq": seq, "data": part})
            seq, size = seq + 1, size + len(part)
            if len(batch) == PARTS_PER_TRANSACTION:
                self._insert_parts(batch)
                batch = []
        self._insert_parts(batch)
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(t.OpenAIFile)
                .where(t.OpenAIFile.id == file_id)
                .values(bytes=size, status=PROCESSED)
            )
        return size

    def _insert_parts(self, parts: list[dict[str, object]]) -> None:
        if parts:
            with Session(self.engine) as s, s.begin():
                s.execute(insert(t.OpenAIFilePart), parts)

    def _put(self, pieces: Iterable[bytes], uri: str) -> int:
        """Written to a local file first, then put as one object (no reader sees half)."""
        with tempfile.TemporaryDirectory(prefix="sluice-upload-") as scratch:
            local = Path(scratch) / "upload"
            n = 0
            with local.open("wb") as out:
                for piece in pieces:
                    out.write(piece)
                    n += len(piece)
            self.store.put_file(local, uri)
        return n

    def get(self, tenant: str | None, file_id: str) -> StoredFile:
        """The tenant's uploaded file (None: any tenant's); 404 otherwise."""
        with self._reader() as s:
            row = s.get(t.OpenAIFile, file_id)
            if (
                row is None
                or row.status != PROCESSED
                or (tenant is not None and row.tenant != tenant)
            ):
                raise OpenAIRequestError(f"no such file: {file_id}", "file_id", status=404)
            return StoredFile.of(row)

    def listed(
        self, tenant: str, after: str | None, limit: int, newest_first: bool, purpose: str | None
    ) -> list[StoredFile]:
        """A page of the tenant's files, from after the file `after` (a page's last)."""
        query = select(t.OpenAIFile).where(
            t.OpenAIFile.tenant == tenant, t.OpenAIFile.status == PROCESSED
        )
        if purpose:
            query = query.where(t.OpenAIFile.purpose == purpose)
        when, ident = t.OpenAIFile.created_at, t.OpenAIFile.id
        with self._reader() as s:
            if after:
                last = s.get(t.OpenAIFile, after)
                if last is None or last.tenant != tenant:
                    raise OpenAIRequestError(f"no such file: {after}", "after", status=404)
                if newest_first:
                    beyond = or_(
                        when < last.created_at, and_(when == last.created_at, ident < last.id)
                    )
                else:
                    beyond = or_(
                        when > last.created_at, and_(when == last.created_at, ident > last.id)
                    )
                query = query.where(beyond)
            order = (when.desc(), ident.desc()) if newest_first else (when, ident)
            return [StoredFile.of(r) for r in s.scalars(query.order_by(*order).limit(limit))]

    def content(self, stored: StoredFile) -> Iterator[bytes]:
        """The file's bytes in parts, read as they are sent (a short read per part); a file
        removed meanwhile raises rather than ending early."""
        n = 0
        if stored.uri:
            fs, path = self.store.filesystem(stored.uri)
            with fs.open(path, "rb") as fh:
                while piece := fh.read(PART_BYTES):
                    n += len(piece)
                    yield piece
        else:
            seq = 0
            while n < stored.bytes:
                with self._reader() as s:
                    part = s.scalar(
                        select(t.OpenAIFilePart.data).where(
                            t.OpenAIFilePart.file_id == stored.id, t.OpenAIFilePart.seq == seq
                        )
                    )
                if part is None:
                    break
                n += len(part)
                yield bytes(part)
                seq += 1
        if n != stored.bytes:
            raise OpenAIRequestError(
                f"{stored.id} was removed while it was read", "file_id", status=404
            )

    def delete(self, tenant: str | None, file_id: str) -> None:
        stored = self.get(tenant, file_id)
        if stored.uri:
            self.store.remove(stored.uri)
        self._remove_rows(file_id)
        truncate_wal(self.engine)  # on SQLite, no copy is left in the write-ahead log

    def _remove_rows(self, file_id: str) -> None:
        remove_rows(self.engine, file_id)

    def expire(self) -> int:
        """Files whose retention passed, and uploads a day old never finished."""
        with self._reader() as s:
            now = db_now(s)
        return remove_files(
            self.engine,
            self.store.remove,
            or_(
                t.OpenAIFile.expires_at <= now,
                and_(
                    t.OpenAIFile.status == UPLOADING,
                    t.OpenAIFile.created_at < now - ABANDONED_AFTER,
                ),
            ),
        )


def capped(pieces: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
    n = 0
    for piece in pieces:
        n += len(piece)
        if n > max_bytes:
            raise OpenAIRequestError(
                f"the file is over {max_bytes} bytes (SLUICE_OPENAI_MAX_FILE_BYTES)",
                "file",
                "file_too_large",
                status=413,
            )
        yield piece


def remove_rows(engine: Engine, file_id: str) -> None:
    with Session(engine) as s, s.begin():
        s.execute(delete(t.OpenAIFilePart).where(t.OpenAIFilePart.file_id == file_id))
        s.execute(delete(t.OpenAIFile).where(t.OpenAIFile.id == file_id))


def remove_files(
    engine: Engine, remove: Callable[[str], None], *conditions: Any, limit: int = 1000
) -> int:
    """Remove files matching `conditions` (their retention passed, a tenant's older than a
    date, uploads never finished); how many. One that cannot be removed now (its object
    store unreachable) is logged and passed over, never holding back the others."""
    with Session(engine.execution_options(readonly=True)) as s:
        due = list(
            s.execute(select(t.OpenAIFile.id, t.OpenAIFile.uri).where(*conditions).limit(limit))
        )
    removed = 0
    for file_id, uri in due:
        try:
            if uri:
                remove(uri)
            remove_rows(engine, file_id)
            removed += 1
        except Exception:
            log.warning("file %s: not removed yet", file_id, exc_info=True)
    if removed:
        truncate_wal(engine)
    return removed
