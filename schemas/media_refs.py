"""Where media may come from: pure checks shared by the producer (at submit) and the worker
(again, before it opens a file), so a path accepted once cannot point elsewhere later."""

import base64
import binascii
import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from schemas.errors import MediaRefError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")
SUFFIXES = {"image": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES}


def parse_reference(value: str, base_dir: Path | None) -> tuple[str, str]:
    """('path', absolute path) or ('data', base64 text) for a path, `file://` URI or `data:`
    URI. Raises MediaRefError for anything else (other hosts, other schemes, `..`)."""
    value = value.strip()
    if not value:
        raise MediaRefError("empty media reference")
    if value.startswith("data:"):
        return "data", _data_uri_payload(value)
    if value.startswith("file:"):
        parsed = urlparse(value)
        if parsed.netloc not in ("", "localhost"):
            raise MediaRefError(
                f"{value!r} names another host ({parsed.netloc}); only local "
                "files under the input roots are read"
            )
        raw = unquote(parsed.path)
    elif "://" in value:
        scheme = value.split("://", 1)[0]
        raise MediaRefError(
            f"{scheme}:// references are not fetched; give a path under the "
            "input roots, a file:// URI or an inline data: URI"
        )
    else:
        raw = value
    if ".." in PurePosixPath(raw.replace("\\", "/")).parts:
        raise MediaRefError(f"{value!r} contains '..'; give a path inside an input root")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return "path", str(path)


def _data_uri_payload(value: str) -> str:
    header, sep, payload = value.partition(",")
    if not sep or not header.endswith(";base64"):
        raise MediaRefError(
            "inline media must be a data: URI with base64 content (data:image/png;base64,...)"
        )
    return payload.strip()


def decode_inline(payload: str, cap: int) -> bytes:
    """The bytes of inline base64, refusing oversize payloads before decoding them."""
    if len(payload) * 3 // 4 > cap:
        raise MediaRefError(
            f"inline media is about {len(payload) * 3 // 4} bytes, over the cap "
            f"of {cap} (SLUICE_MAX_INLINE_BYTES); pass a file path instead"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaRefError(f"inline media is not valid base64: {exc}") from exc


def confined_path(path: str, roots: list[Path], max_bytes: int) -> Path:
    """The real path of a regular file under one of `roots`, following symlinks first so
    that a link pointing out of a root is refused. Raises MediaRefError."""
    if not roots:
        raise MediaRefError(
            f"{path}: no input roots are open to this job; an operator sets "
            "SLUICE_INPUT_ROOTS to the directories Sluice may read (for the producer and "
            "the workers) and, for an API tenant, its input_roots in SLUICE_TENANT_GRANTS"
        )
    real = Path(os.path.realpath(path))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        shown = os.pathsep.join(str(r) for r in roots)
        # The same words whether or not it exists or is a link (and never where a link
        # points): it may be another tenant's file, or the server's.
        raise MediaRefError(f"{path} is outside the input roots ({shown}), its links followed")
    if not real.is_file():
        raise MediaRefError(f"{path}: no such file")
    size = real.stat().st_size
    if size == 0:
        raise MediaRefError(f"{path}: empty file (0 bytes)")
    if size > max_bytes:
        raise MediaRefError(
            f"{path} is {size} bytes, over the cap of {max_bytes} (SLUICE_MAX_MEDIA_BYTES)"
        )
    return real


@dataclass(frozen=True)
class MediaLimits:
    """What a worker may read, and how much of it: passed from the worker's own settings to
    its model actors, which check every reference again before opening it."""

    roots: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()  # object-store prefixes (schemas/object_refs.py)
    max_bytes: int = 50 * 2**20
    max_inline_bytes: int = 512 * 2**10
    max_image_pixels: int = 40_000_000
    max_audio_seconds: float = 600.0
    max_audio_channels: int = 8
    max_audio_decoded_bytes: int = 256 * 2**20  # float32 samples, every channel

    def root_paths(self) -> list[Path]:
        return [Path(r) for r in self.roots]

    def narrowed_to(self, roots: list[str], prefixes: list[str] | None = None) -> "MediaLimits":
        """These limits for a job that may read only `roots` and `prefixes` (an API
        tenant's): each kept only if it lies under one of these."""
        mine = self.root_paths()
        kept = tuple(
            r for r in roots if any(Path(r) == m or Path(r).is_relative_to(m) for m in mine)
        )
        objects = tuple(p for p in prefixes or () if any(p.startswith(m) for m in self.prefixes))
        return replace(self, roots=kept, prefixes=objects)


def media_bytes(data: str | None, path: str | None, limits: MediaLimits) -> bytes:
    """An item's media (inline base64 or a file), read under `limits` again: by the worker
    before decoding and by the report before drawing. Raises MediaRefError."""
    if data is not None:
        return decode_inline(data, limits.max_inline_bytes)
    if path is None:
        raise MediaRefError("the item has no media reference (path or data)")
    return confined_path(path, limits.root_paths(), limits.max_bytes).read_bytes()
