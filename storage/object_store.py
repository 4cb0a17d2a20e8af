"""Object storage (s3://, gs://, az://..., whatever fsspec speaks) behind one small interface:
what the model store, training checkpoints, media, list files and exports need. Every error
names the location; every read can be pinned to the object's stamp (ETag or version) taken
when it was checked, so an object replaced in between is refused, not silently used."""

import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import ObjectStoreError
from schemas.object_refs import normalised_uri, scheme_of


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    stamp: str  # "version:...", "etag:..." or "mtime:...": changes whenever the object does


def stamp_of(info: Mapping[str, Any]) -> str:
    """The object's ETag (S3, GCS, Azure all give one; GCS also an MD5), else its version,
    else its modification time and size."""
    # The ETag first: a listing and a HEAD both give it (a listing gives no version id), and
    # any rewrite of the bytes changes it.
    for key, kind in (
        ("ETag", "etag"),
        ("etag", "etag"),
        ("md5Hash", "md5"),
        ("generation", "version"),
        ("VersionId", "version"),
    ):
        if info.get(key) and info[key] != "null":
            return f"{kind}:{info[key]}"
    when = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    return f"mtime:{when}:{info.get('size')}"


class ObjectStore:
    """`options`: fsspec storage options per scheme (Settings.storage_options)."""

    def __init__(self, options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.options = {k.lower(): dict(v) for k, v in (options or {}).items()}

    def filesystem(self, uri: str) -> tuple[Any, str]:
        """The fsspec filesystem for `uri` and the path within it."""
        import fsspec

        norm = normalised_uri(uri)
        try:
            return fsspec.core.url_to_fs(norm, **self.options.get(scheme_of(norm), {}))
        except (ImportError, ValueError) as exc:
            raise ObjectStoreError(
                f"{norm}: no filesystem for {scheme_of(norm)}:// ({exc}); install its fsspec "
                "package (s3fs for s3://, gcsfs for gs://, adlfs for az://)"
            ) from exc

    def info(self, uri: str) -> ObjectInfo:
        """The object's size and stamp, asked of the store now (never a cached listing)."""
        fs, path = self.filesystem(uri)
        with _named(uri, "read"):
            fs.invalidate_cache(path)
            found = fs.info(path)
        if found.get("type") == "directory":
            raise ObjectStoreError(f"{uri} is a prefix, not an object")
        return ObjectInfo(normalised_uri(uri), int(found.get("size") or 0), stamp_of(found))

    def read(
        self,
        uri: str,
        max_bytes: int,
        stamp: str | None = None,
        cap: str = "SLUICE_MAX_MEDIA_BYTES",
    ) -> bytes:
        """The object's bytes, refused over `max_bytes`, or when `stamp` is given and the
        object is no longer the one stamped (replaced or rewritten since)."""
        now = self.info(uri)
        if stamp is not None and now.stamp != stamp:
            raise ObjectStoreError(
                f"{uri} changed after it was submitted ({stamp} then, {now.stamp} now); "
                "submit it again to process the new object"
            )
        if now.size > max_bytes:
            raise ObjectStoreError(
                f"{uri} is {now.size} bytes, over the cap of {max_bytes} (SLUICE_MAX_MEDIA_BYTES)"
            )
        fs, path = self.filesystem(uri)
        with _named(uri, "read"):
            data: bytes = fs.cat_file(path)
        if len(data) != now.size:  # rewritten between the stamp and the read
            raise ObjectStoreError(f"{uri} changed while it was read; submit it again")
        return data

    def list_objects(self, uri: str) -> list[ObjectInfo]:
        """Every object under the prefix `uri`, by key, with its stamp (one listing)."""
        fs, path = self.filesystem(uri)
        with _named(uri, "list"):
            fs.invalidate_cache(path)
            found = fs.find(path.rstrip("/"), detail=True)
        scheme = scheme_of(uri)
        return [
            ObjectInfo(f"{scheme}://{key}", int(info.get("size") or 0), stamp_of(info))
            for key, info in sorted(found.items())
            if info.get("type") != "directory"
        ]

    def exists(self, uri: str) -> bool:
        fs, path = self.filesystem(uri)
        with _named(uri, "read"):
            fs.invalidate_cache(path)
            found = bool(fs.exists(path))
        return found

    def upload_dir(self, local: Path, uri: str) -> None:
        """Every file under `local` to the prefix `uri`, keeping relative paths."""
        fs, path = self.filesystem(uri)
        with _named(uri, "write"):
            for file in sorted(p for p in local.rglob("*") if p.is_file()):
                fs.put_file(str(file), f"{path.rstrip('/')}/{file.relative_to(local).as_posix()}")

    def download_dir(self, uri: str, local: Path) -> list[ObjectInfo]:
        """Every object under the prefix `uri` into `local`, at its key relative to the
        prefix; returns what was listed. A key that would land outside `local` (`..`, an
        empty segment, not under the prefix) is refused: keys are whatever the writer chose."""
        listed = self.list_objects(uri)
        if not listed:
            raise ObjectStoreError(f"{uri}: no objects under this prefix")
        fs, path = self.filesystem(uri)
        base = path.rstrip("/") + "/"
        targets = []
        for obj in listed:
            key = obj.uri.split("://", 1)[1]
            parts = key[len(base) :].split("/") if key.startswith(base) else []
            if not parts or any(p in ("", ".", "..") for p in parts):
                raise ObjectStoreError(
                    f"{obj.uri}: a key that is not a plain path under {uri} (empty, '.' or "
                    "'..' segments) is not copied"
                )
            targets.append((key, local.joinpath(*parts)))
        with _named(uri, "read"):
            for key, target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(key, str(target))
        return listed

    def stamp_if_present(self, uri: str) -> str | None:
        """The object's stamp now; None if nothing is there (an error reaching a store that
        still holds it is raised)."""
        try:
            return self.info(uri).stamp
        except ObjectStoreError:
            if self.exists(uri):
                raise
            return None

    def put_file(self, local: Path, uri: str) -> None:
        fs, path = self.filesystem(uri)
        with _named(uri, "write"):
            fs.put_file(str(local), path)

    def fetch_file(self, uri: str, max_bytes: int) -> Path:
        """A local temporary copy of one object (a list file to read), streamed to disk; the
        caller removes it."""
        found = self.info(uri)
        if found.size > max_bytes:
            raise ObjectStoreError(f"{uri} is {found.size} bytes, over {max_bytes} for one file")
        fs, path = self.filesystem(uri)
        fd, name = tempfile.mkstemp(prefix="sluice-object-", suffix="".join(Path(uri).suffixes))
        os.close(fd)
        with _named(uri, "read"):
            fs.get_file(path, name)
        return Path(name)

    def remove(self, uri: str) -> None:
        """The prefix `uri` and everything under it; nothing there is not an error."""
        fs, path = self.filesystem(uri)
        with _named(uri, "delete"):
            if fs.exists(path):
                fs.rm(path, recursive=True)

    def arrow_filesystem(self, uri: str) -> tuple[Any, str]:
        """A pyarrow filesystem over the same fsspec one (Ray Train's storage_filesystem),
        and the path within it."""
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs, path = self.filesystem(uri)
        return PyFileSystem(FSSpecHandler(fs)), path


@contextmanager
def _named(uri: str, action: str) -> Iterator[None]:
    """Turns a store's error into an ObjectStoreError that names the location and the host
    that could not reach it."""
    try:
        yield
    except ObjectStoreError:
        raise
    except Exception as exc:
        if isinstance(exc, FileNotFoundError):
            why = "no such object"
        elif isinstance(exc, PermissionError):
            why = "access denied (check the credentials in SLUICE_STORAGE_OPTIONS or AWS_*)"
        else:
            why = f"{type(exc).__name__}: {exc}"
        raise ObjectStoreError(
            f"cannot {action} {uri} from host {socket.gethostname()}: {why}"
        ) from exc
