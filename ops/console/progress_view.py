"""A job's progress as the console draws it: percent, rows/s and ETA in words."""

from typing import Any

from ops.progress import clock
from storage.ledger import JobView


def progress_of(view: JobView) -> dict[str, Any]:
    c = view.counts
    percent = 100.0 if view.status.finished else (100.0 * c.processed / c.total if c.total else 0.0)
    rate, eta = view.rows_per_s, view.eta_seconds
    return {
        "job_id": view.id,
        "status": view.status.value,
        "finished": view.status.finished,
        "processed": c.processed,
        "total": c.total,
        "ok": c.ok,
        "invalid": c.invalid,
        "error": c.error,
        "percent": round(percent, 1),
        "rows_per_s": None if rate is None else round(rate, 2),
        "eta_seconds": None if eta is None else round(eta, 1),
        "pace": pace_words(view),
    }


def pace_words(view: JobView) -> str:
    if view.status.finished:
        return f"{view.status.value}"
    rate, eta = view.rows_per_s, view.eta_seconds
    shown = "" if rate is None else f"{rate:.1f} rows/s · "
    return shown + ("ETA: not yet known" if eta is None else f"ETA {clock(eta)}")
