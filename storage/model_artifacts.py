"""Model directories wherever they live: a local directory, or a prefix in an object store,
copied to each host that needs it and kept there by content digest (every file copied, by
path and bytes: `tree_digest`). A host never loads object-store bytes it has not hashed: the
copy's digest must be the one the job was submitted with, else the job's items end with the
reason (the model changed after submit)."""

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from schemas.errors import ModelChangedError, ModelLocationError, ObjectStoreError
from schemas.object_refs import is_object_uri, normalised_uri
from storage.object_store import ObjectStore

# What changes a prediction changes the digest: weights, configs, vocabularies.
MODEL_FILES = ("*.safetensors", "*.json", "*.txt", "*.model")
COMPLETE = ".sluice-complete"  # written last: a directory without it is a partial copy
DIGEST_CHARS = 16  # a job's model_version: the first 16 hex of the digest


def tree_digest(directory: Path) -> str:
    """SHA-256 over every file under `directory` (sub-folders, templates, any name), each as
    its relative path and its own SHA-256: two copies get one digest only if they hold the
    same files with the same bytes. An object-store model's version and cache key."""
    digest = hashlib.sha256(b"sluice-tree-v1\n")
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = f.relative_to(directory).as_posix()
        if name == COMPLETE:
            continue
        digest.update(f"{name}\0{sha256_of([f])}\n".encode())
    return digest.hexdigest()


def sha256_of(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def host() -> str:
    return socket.gethostname()


class ModelCache:
    """Local copies of object-store models under `root`, one directory per digest; a model
    over `max_bytes` (SLUICE_MAX_MODEL_BYTES) is refused before anything is copied."""

    def __init__(self, root: Path, store: ObjectStore, max_bytes: int = 20 * 2**30) -> None:
        self.root, self.store, self.max_bytes = root, store, max_bytes

    def fetch(self, uri: str) -> tuple[Path, str]:
        """A verified local copy of the model under `uri` and its digest (16 hex). One listing
        when the objects are unchanged since the last fetch on this host; else a download."""
        uri = normalised_uri(uri).rstrip("/")
        listed = self.store.list_objects(uri)
        if not listed:
            raise ModelLocationError(f"model {uri}: no objects under this prefix (host {host()})")
        if (total := sum(o.size for o in listed)) > self.max_bytes:
            raise ModelLocationError(
                f"model {uri} holds {total} bytes in {len(listed)} objects, over the cap of "
                f"{self.max_bytes} (SLUICE_MAX_MODEL_BYTES); name the model's own prefix"
            )
        listing = hashlib.sha256(
            json.dumps([(o.uri, o.size, o.stamp) for o in listed]).encode()
        ).hexdigest()
        index = self._index()
        known = index.get(listing)
        if known and (self.root / known / COMPLETE).is_file():
            return self.root / known, known
        path, digest = self._download(uri)
        index[listing] = digest
        self._write_index(index)
        return path, digest

    def materialise(self, location: str, digest: str) -> Path:
        """The directory to load the model at `location` from on this host: the location
        itself if local, else the cached copy whose digest is `digest` (fetched if absent)."""
        if not is_object_uri(location):
            path = Path(location)
            if not path.is_dir():
                raise ModelLocationError(
                    f"model {location} cannot be read on host {host()}: no such directory "
                    "here. A model served by workers on several hosts must be on a path every "
                    "host has, or in the object store (s3://...; register it or pass its URI)"
                )
            return path
        cached = self.root / digest
        if (cached / COMPLETE).is_file():
            return cached
        try:
            path, found = self.fetch(location)
        except ObjectStoreError as exc:
            raise ModelLocationError(f"model {location}: {exc}") from exc
        if found != digest:
            raise ModelChangedError(
                f"model {location} changed after the job was submitted: its files hash to "
                f"{found} on host {host()}, the job was submitted with {digest}; submit the "
                "job again to use the new model"
            )
        return path

    def _download(self, uri: str) -> tuple[Path, str]:
        self.root.mkdir(parents=True, exist_ok=True)
        for left in self.root.glob(".partial-*"):  # a copy whose process died a day ago
            if time.time() - left.stat().st_mtime > 86_400:
                shutil.rmtree(left, ignore_errors=True)
        scratch = self.root / f".partial-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            self.store.download_dir(uri, scratch)
            digest = tree_digest(scratch)[:DIGEST_CHARS]
            (scratch / COMPLETE).write_text(uri)
            final = self.root / digest
            try:
                os.rename(scratch, final)
            except OSError:  # another process on this host finished the same copy first
                if not (final / COMPLETE).is_file():
                    raise
            return final, digest
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _index(self) -> dict[str, str]:
        try:
            found = json.loads((self.root / "index.json").read_text())
            return found if isinstance(found, dict) else {}
        except (OSError, json.JSONDecodeError):
            return {}

    def _write_index(self, index: dict[str, str]) -> None:
        tmp = self.root / f"index.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(index))
        tmp.replace(self.root / "index.json")


def publish(local: Path, target: str, store: ObjectStore) -> str:
    """Put the model directory `local` at `target` (a directory or an object-store prefix,
    replaced if present); returns the location to record. A local source is moved."""
    if is_object_uri(target):
        target = normalised_uri(target).rstrip("/")
        store.remove(target)
        store.upload_dir(local, target)
        return target
    path = Path(target)
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(local), path)
    return str(path)


def join(location: str, *parts: str) -> str:
    """`location`/part/...: a path or an object-store prefix."""
    if is_object_uri(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location).joinpath(*parts))


def remove(location: str, store: ObjectStore) -> None:
    """A directory or an object-store prefix, and all under it; absent is not an error."""
    if is_object_uri(location):
        store.remove(location)
    else:
        shutil.rmtree(location, ignore_errors=True)
