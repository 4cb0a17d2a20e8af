"""Checks of training rows shared by `sluice train`'s submit path and the modality adapters:
each raises TrainingError with a message that names the column, row or label to fix."""

import math
from collections import Counter
from typing import Any

from schemas import entity_spans as spans
from schemas.errors import TrainingError
from schemas.training import DataSource

MAX_PROBLEMS = 5


def need(columns: list[str], name: str, option: str, source: DataSource) -> None:
    if name not in columns:
        raise TrainingError(
            f"{source.describe()}: column {name!r} not found ({option}); "
            f"columns are: {', '.join(columns) or '(none)'}"
        )


def problems(found: list[str], what: str) -> None:
    if found:
        more = f" (and {len(found) - MAX_PROBLEMS} more)" if len(found) > MAX_PROBLEMS else ""
        raise TrainingError(f"{what}: {'; '.join(found[:MAX_PROBLEMS])}{more}")


def number(value: Any) -> float | None:
    """A finite number, or None (booleans, blanks and text are not numbers)."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def check_target_texts(rows: list[dict[str, Any]], column: str, holdout_fraction: float) -> None:
    """A generator's targets: a text in every row (an empty target would teach the model to
    stop at once), and rows enough to train on and hold out a part."""
    empty = [
        f"row {n}"
        for n, r in enumerate(rows, 1)
        if not isinstance(r.get(column), str) or not r[column].strip()
    ]
    problems(empty, f"rows with no target text in {column!r}")
    heldout = math.ceil(len(rows) * holdout_fraction)
    if len(rows) - heldout < 1:
        raise TrainingError(
            f"{len(rows)} rows are too few to train on and hold out "
            f"{holdout_fraction:.0%} for the exact-match score; add rows"
        )


def check_entity_annotations(
    rows: list[dict[str, Any]],
    text_column: str,
    label_column: str,
    declared: list[str] | None,
    holdout_fraction: float,
) -> tuple[str, list[str]]:
    """A tagger's rows (schemas/entity_spans.py): one shape for the whole data set, every row
    readable, and entities to learn. Returns (the shape, the entity types in label order:
    --labels' order, else sorted). --labels keeps only the types it lists: spans of other
    types are read as no entity."""
    shapes = [spans.shape_of(r.get(text_column), r.get(label_column)) for r in rows]
    problems(
        [f"row {n}" for n, s in enumerate(shapes, 1) if s is None],
        f"rows that are neither a text in {text_column!r} with a list of spans in "
        f"{label_column!r} nor a list of tokens with a list of BIO tags",
    )
    counts = Counter(shapes)
    if len(counts) > 1:
        fewer = min(counts, key=lambda s: (counts[s], s or ""))
        most = max(counts, key=lambda s: (counts[s], s or ""))
        odd = [str(n) for n, s in enumerate(shapes, 1) if s == fewer]
        more = f" (and {len(odd) - 10} more)" if len(odd) > 10 else ""
        raise TrainingError(
            f"rows mix two shapes: most hold {spans.SHAPES[most or '']}, but rows "
            f"{', '.join(odd[:10])}{more} hold {spans.SHAPES[fewer or '']}; give every "
            "row the same shape"
        )
    shape = shapes[0] or spans.SPANS
    bad, found = [], Counter[str]()
    for n, row in enumerate(rows, 1):
        try:
            _, entities = spans.annotated(row.get(text_column), row.get(label_column), shape)
        except ValueError as exc:
            bad.append(f"row {n}: {exc}")
            continue
        found.update(kind for _, _, kind in entities)
    what = "spans" if shape == spans.SPANS else "tokens and tags"
    problems(bad, f"rows whose {what} cannot be read")
    if declared is None:
        kinds = sorted(found)
    else:
        kinds = list(dict.fromkeys(declared))
        problems(
            [repr(k) for k in kinds if k[:2] in ("B-", "I-") or k == spans.OUTSIDE],
            "--labels lists entity types (PERSON), not BIO tags (B-PERSON)",
        )
        problems(
            [repr(k) for k in kinds if k not in found],
            "entity types in --labels that no row has (the model could never learn them)",
        )
    if not kinds:
        raise TrainingError(f"no row of {label_column!r} holds an entity: nothing to learn")
    heldout = math.ceil(len(rows) * holdout_fraction)
    if heldout < 1 or len(rows) - heldout < 1:
        raise TrainingError(
            f"{len(rows)} rows are too few to train on and hold out "
            f"{holdout_fraction:.0%} for precision, recall and F1; add rows"
        )
    return shape, kinds
