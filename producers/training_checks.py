"""Checks of training rows shared by `sluice train`'s submit path and the modality adapters:
each raises TrainingError with a message that names the column, row or label to fix."""

import math
from typing import Any

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
