"""Records against the feature schema a records model carries (features.json): checked at
submit and again in the worker, with a message that names the column."""

import math
from typing import Any

MAX_LISTED = 8


def check_record(
    row: dict[str, Any], features: list[dict[str, Any]], ignore: tuple[str, ...] = ()
) -> tuple[dict[str, float] | None, str | None]:
    """(values by feature name, None) or (None, why the row cannot be used)."""
    names = [f["name"] for f in features]
    extra = [c for c in row if c not in names and c not in ignore]
    if extra:
        return None, (
            f"unexpected column(s) {_names(extra)}; the model's features are {_names(names)}"
        )
    values: dict[str, float] = {}
    for feature in features:
        value, problem = _value(row.get(feature["name"]), feature)
        if problem:
            return None, problem
        assert value is not None
        values[feature["name"]] = value
    return values, None


def _value(raw: Any, feature: dict[str, Any]) -> tuple[float | None, str | None]:
    name, kind = feature["name"], feature.get("type", "number")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None, f"missing column {name!r}"
    if kind == "boolean":
        if isinstance(raw, bool):
            return float(raw), None
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "1", "0"):
            return float(raw.strip().lower() in ("true", "1")), None
        if isinstance(raw, int) and raw in (0, 1):
            return float(raw), None
        return None, f"column {name!r} must be a boolean, got {raw!r}"
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None, f"column {name!r} must be a number, got {type(raw).__name__} {raw!r}"
    try:
        value = float(raw)
    except ValueError:
        return None, f"column {name!r} must be a number, got {raw!r}"
    except OverflowError:  # an integer beyond any float
        return None, f"column {name!r} is too large a number ({len(str(raw))} digits)"
    if math.isnan(value):
        return None, f"column {name!r} is NaN"
    if math.isinf(value):
        return None, f"column {name!r} is infinite"
    if kind == "integer" and not value.is_integer():
        return None, f"column {name!r} must be an integer, got {raw!r}"
    lo, hi = feature.get("min"), feature.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return None, (
            f"column {name!r} = {value:g} is outside the allowed range [{_num(lo)}, {_num(hi)}]"
        )
    return value, None


def _num(bound: float | None) -> str:
    return "unbounded" if bound is None else f"{bound:g}"


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")
