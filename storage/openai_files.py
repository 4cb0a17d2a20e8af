"""Files uploaded through the OpenAI-compatible API (issue 25): kept where exports are kept,
in the ledger (parts of at most 1 MiB in `openai_file_parts`) or, with SLUICE_OPENAI_FILES_URI,
as objects under that prefix; streamed in and out, never held whole. A file lives for its
tenant's retention period from upload (schemas/retention.py), or until deleted."""

import secrets
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.orm import Session

from schemas.errors import OpenAIRequestError
from storage import tables as t
from storage.clock import db_now, utc
from storage.object_store import ObjectStore

PART_BYTES = 2**20


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


def lines_of(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a stream of bytes (without their ends), a line split across pieces
    joined; blank lines left out."""
    rest = b""
    for piece in pieces:
        lines = (rest + piece).split(b"\n")
        rest = lines.pop()
        yield from (line for line in lines if line.strip())
    if rest.strip():
        yield rest


class OpenAIFiles:
    def __init__(self, engine: Engine, store: ObjectStore, prefix: str = "") -> None:
        self.engine = engine
        self.store = store
        self.prefix = prefix.rstrip("/")

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
        counted = _capped(pieces, max_bytes)
        with Session(self.engine) as s, s.begin():
            now = db_now(s)
            row = t.OpenAIFile(
                id=file_id, tenant=tenant, purpose=purpose, filename=filename[:255], bytes=0,
                created_at=now,
                expires_at=now + timedelta(seconds=retention_s) if retention_s else None,
            )  # fmt: skip
            s.add(row)
            s.flush()
            if self.prefix:
                row.uri = f"{self.prefix}/{tenant}/{file_id}.jsonl"
                row.bytes = self._put(counted, row.uri)
            else:
                for seq, part in enumerate(in_parts(counted)):
                    s.execute(insert(t.OpenAIFilePart).values(file_id=file_id, seq=seq, data=part))
                    row.bytes += len(part)
            return StoredFile.of(row)

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
        """The tenant's file (None: any tenant's, for an operator); 404 otherwise."""
        with Session(self.engine) as s:
            row = s.get(t.OpenAIFile, file_id)
            if row is None or (tenant is not None and row.tenant != tenant):
                raise OpenAIRequestError(f"no such file: {file_id}", "file_id", status=404)
            return StoredFile.of(row)

    def listed(self, tenant: str, limit: int = 100) -> list[StoredFile]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(t.OpenAIFile)
                .where(t.OpenAIFile.tenant == tenant)
                .order_by(t.OpenAIFile.created_at.desc())
                .limit(limit)
            )
            return [StoredFile.of(r) for r in rows]

    def content(self, stored: StoredFile) -> Iterator[bytes]:
        """The file's bytes in parts, read as they are sent."""
        if stored.uri:
            fs, path = self.store.filesystem(stored.uri)
            with fs.open(path, "rb") as fh:
                while piece := fh.read(PART_BYTES):
                    yield piece
            return
        seq = 0
        while True:
            with Session(self.engine) as s:  # a part per read: no transaction held open
                part = s.scalar(
                    select(t.OpenAIFilePart.data).where(
                        t.OpenAIFilePart.file_id == stored.id, t.OpenAIFilePart.seq == seq
                    )
                )
            if part is None:
                return
            yield bytes(part)
            seq += 1

    def delete(self, tenant: str | None, file_id: str) -> None:
        stored = self.get(tenant, file_id)
        if stored.uri:
            self.store.remove(stored.uri)
        with Session(self.engine) as s, s.begin():
            s.execute(delete(t.OpenAIFilePart).where(t.OpenAIFilePart.file_id == file_id))
            s.execute(delete(t.OpenAIFile).where(t.OpenAIFile.id == file_id))

    def expire(self, limit: int = 1000) -> int:
        """Remove files whose retention passed; how many."""
        with Session(self.engine) as s:
            due = list(
                s.scalars(
                    select(t.OpenAIFile.id).where(t.OpenAIFile.expires_at <= db_now(s)).limit(limit)
                )
            )
        for file_id in due:
            self.delete(None, file_id)
        return len(due)


def _capped(pieces: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
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
