"""Media and record items: what a folder, a list file or a list of paths becomes. Nothing is
decoded here (that is the worker's job); references are checked against the input roots."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from schemas.errors import InputFileError
from schemas.jobs import Item
from schemas.media import SUFFIXES, MediaRefError, confined_path, decode_inline, parse_reference
from schemas.records import check_record
from schemas.settings import Settings


def folder_items(folder: Path, modality: str, settings: Settings) -> list[Item]:
    """Every file of the modality under `folder`, keyed by its path relative to the folder."""
    suffixes = SUFFIXES[modality]
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in suffixes and (p.is_file() or p.is_symlink())
    )
    if not files:
        raise InputFileError(f"{folder}: no {modality} files ({', '.join(suffixes)}) found")
    return [media_item(p.relative_to(folder).as_posix(), str(p), None, settings) for p in files]


def path_items(paths: Iterable[str | Path], settings: Settings) -> list[Item]:
    return [media_item(str(p), str(p), None, settings) for p in paths]


def media_item(key: str, value: Any, base_dir: Path | None, settings: Settings) -> Item:
    """An item for a path, `file://` URI or `data:` URI; `invalid` says why one is refused."""
    if not isinstance(value, str):
        what = "missing" if value is None else f"a {type(value).__name__}"
        return Item(
            key=key,
            invalid=f"media reference is {what}; expected a path, a file:// URI or a data: URI",
        )
    try:
        kind, ref = parse_reference(value, base_dir)
        if kind == "data":
            decode_inline(ref, settings.max_inline_bytes)  # refuse now, not in the worker
            return Item(key=key, data=ref)
        real = confined_path(ref, settings.input_root_paths(), settings.max_media_bytes)
        return Item(key=key, path=str(real))
    except MediaRefError as exc:
        return Item(key=key, invalid=str(exc))


def record_item(
    key: str, row: dict[str, Any], features: list[dict[str, Any]], ignore: tuple[str, ...]
) -> Item:
    values, problem = check_record(row, features, ignore)
    return Item(key=key, invalid=problem) if problem else Item(key=key, record=values)
