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
