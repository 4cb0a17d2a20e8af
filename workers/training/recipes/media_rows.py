"""Training rows that name media files: references checked as a job's are, media decoded with
the handlers' own loaders, and every unreadable row named in one error."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from schemas.errors import InvalidInput, MediaRefError
from schemas.jobs import Item
from schemas.media_refs import parse_reference
from schemas.training import TrainSpec

CHUNK = 256  # media decoded and encoded at a time: bounds the memory of decoded files
MAX_REPORTED = 5  # unreadable rows named in the error


def media_items(spec: TrainSpec, rows: list[dict[str, Any]]) -> list[Item]:
    """One Item per row from its media column: a path (relative to spec.media_base_dir), a
    file:// URI or a data: URI."""
    base_dir = Path(spec.media_base_dir) if spec.media_base_dir else None
    items, problems = [], []
    for n, row in enumerate(rows):
        value = row.get(spec.media_column)
        try:
            if not isinstance(value, str):
                raise MediaRefError(f"expected a path, got {value!r}")
            kind, ref = parse_reference(value, base_dir)
        except MediaRefError as exc:
            problems.append(f"row {n}: {exc}")
            continue
        items.append(Item(key=str(n), path=ref) if kind == "path" else Item(key=str(n), data=ref))
    raise_problems(problems, spec.media_column)
    if not items:
        raise ValueError("no training rows")
    return items


def decoded_chunks(
    items: list[Item], load: Callable[[Item], Any], column: str
) -> Iterator[list[Any]]:
    """`load(item)` for every item, yielded a chunk at a time. After the first unreadable row
    nothing more is yielded, but the rest are still decoded so the error names them all."""
    problems: list[str] = []
    for start in range(0, len(items), CHUNK):
        decoded = []
        for item in items[start : start + CHUNK]:
            try:
                decoded.append(load(item))
            except InvalidInput as exc:
                problems.append(f"row {item.key}: {exc}")
        if not problems:
            yield decoded
    raise_problems(problems, column)


def raise_problems(problems: list[str], column: str) -> None:
    if problems:
        shown = "; ".join(problems[:MAX_REPORTED])
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        raise ValueError(
            f"{len(problems)} rows of column {column!r} cannot be read: "
            f"{shown}{more}; fix or remove them and train again"
        )
