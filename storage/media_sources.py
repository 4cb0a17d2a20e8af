"""An item's media bytes from wherever its reference points: inline base64, a file under the
input roots, or an object under the object-store prefixes, pinned to the stamp (ETag or
version) the producer saw. Read by the producer's report, the worker's result cache and the
model actor alike, each time checked against the limits of whoever reads."""

from schemas.errors import MediaRefError, ObjectStoreError
from schemas.media_refs import MediaLimits, media_bytes
from schemas.object_refs import confined_uri, is_object_uri
from storage.object_store import ObjectInfo, ObjectStore


def item_bytes(
    data: str | None, path: str | None, stamp: str | None, limits: MediaLimits, store: ObjectStore
) -> bytes:
    """Raises MediaRefError (the item is `invalid`, with the reason)."""
    if data is None and path is not None and is_object_uri(path):
        uri = confined_uri(path, limits.prefixes)
        try:
            return store.read(uri, limits.max_bytes, stamp)
        except ObjectStoreError as exc:
            raise MediaRefError(str(exc)) from exc
    return media_bytes(data, path, limits)


def checked_object(
    uri: str, prefixes: tuple[str, ...], max_bytes: int, store: ObjectStore
) -> ObjectInfo:
    """An object reference as the producer accepts it: under the prefixes, present, not empty
    and under the size cap. Raises MediaRefError."""
    norm = confined_uri(uri, prefixes)
    try:
        found = store.info(norm)
    except ObjectStoreError as exc:
        raise MediaRefError(str(exc)) from exc
    return checked_size(found, max_bytes)


def checked_size(found: ObjectInfo, max_bytes: int) -> ObjectInfo:
    if found.size == 0:
        raise MediaRefError(f"{found.uri}: empty object (0 bytes)")
    if found.size > max_bytes:
        raise MediaRefError(
            f"{found.uri} is {found.size} bytes, over the cap of {max_bytes} "
            "(SLUICE_MAX_MEDIA_BYTES)"
        )
    return found
