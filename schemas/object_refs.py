"""Object-store locations (`s3://bucket/key`, and the other schemes fsspec speaks): pure checks
shared by the producer, the worker and the trainer, so a location accepted once cannot point
elsewhere later. Local paths and `file://` URIs are not object locations."""

import re

from schemas.errors import MediaRefError

URI_RE = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$", re.IGNORECASE)
# Never object stores: local files, inline data, and web pages (fetching an arbitrary URL from
# a worker is a door into the network it sits in).
NOT_OBJECT_SCHEMES = frozenset({"file", "local", "data", "http", "https", "ftp", "sftp", "ssh"})


def is_object_uri(value: str) -> bool:
    found = URI_RE.match(value.strip())
    return found is not None and found.group(1).lower() not in NOT_OBJECT_SCHEMES


def scheme_of(uri: str) -> str:
    found = URI_RE.match(uri.strip())
    if not found:
        raise MediaRefError(f"{uri!r} is not a URI (scheme://bucket/key)")
    return found.group(1).lower()


def normalised_uri(uri: str) -> str:
    """`scheme://bucket/key` with no `.`/`..` segment, no empty segment and no query: one
    spelling per object, so a prefix check cannot be walked around."""
    found = URI_RE.match(uri.strip())
    if not found or found.group(1).lower() in NOT_OBJECT_SCHEMES:
        raise MediaRefError(f"{uri!r} is not an object-store URI (s3://bucket/key)")
    scheme, rest = found.group(1).lower(), found.group(2)
    if "?" in rest or "#" in rest:
        raise MediaRefError(f"{uri!r}: object URIs take no query or fragment")
    # Never percent-decoded: an S3 key is the literal string ("100%25.png" is its own name),
    # and decoding at each step would read another key than the one checked.
    parts = rest.split("/")
    trailing = rest.endswith("/")
    parts = parts[:-1] if trailing else parts
    if not parts or not parts[0]:
        raise MediaRefError(f"{uri!r} names no bucket")
    if any(p in ("", ".", "..") for p in parts):
        raise MediaRefError(f"{uri!r} has an empty, '.' or '..' segment; give the object's key")
    return f"{scheme}://{'/'.join(parts)}{'/' if trailing else ''}"


def as_prefix(uri: str) -> str:
    """A prefix that matches whole segments: `s3://b/media` allows `s3://b/media/x`, not
    `s3://b/media-private/x`."""
    norm = normalised_uri(uri)
    return norm if norm.endswith("/") else norm + "/"


def parse_prefixes(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Prefixes from a comma-separated setting or a list, each normalised."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(as_prefix(p) for p in items if p.strip())


def under_prefixes(uri: str, prefixes: tuple[str, ...]) -> bool:
    norm = normalised_uri(uri)
    return any(norm.startswith(p) or norm + "/" == p for p in prefixes)


def confined_uri(uri: str, prefixes: tuple[str, ...]) -> str:
    """The normalised URI if it lies under one of `prefixes`. Raises MediaRefError, with the
    same words whether or not the object exists (it may be another tenant's)."""
    norm = normalised_uri(uri)
    if not prefixes:
        raise MediaRefError(
            f"{norm}: no object-store prefixes are open to this job; an operator sets "
            "SLUICE_OBJECT_PREFIXES to the prefixes Sluice may read (s3://bucket/media/) and, "
            "for an API tenant, its object_prefixes in SLUICE_TENANT_GRANTS"
        )
    if not under_prefixes(norm, prefixes):
        raise MediaRefError(f"{norm} is outside the object-store prefixes ({', '.join(prefixes)})")
    return norm


def prefixes_within(mine: list[str], server: tuple[str, ...]) -> tuple[str, ...]:
    """A tenant's prefixes, each kept only if it lies under one of the server's."""
    return tuple(p for p in parse_prefixes(mine) if any(p.startswith(s) for s in server))
