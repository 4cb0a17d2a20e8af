"""How fast a running job goes and when it should end: an ETA that can be trusted.

The rate is exponentially weighted over the chunks that ended in the last WINDOW_S seconds,
newer ones counting more (a job that slows down or speeds up is seen within seconds). Each
ended chunk is a sample: its rows over the time since the chunk before it ended. The ETA is
the rows left over that rate, and stays None until it means something: at least 1 % of the
rows done and two samples in the window. A job where nothing has ended for longer than any
gap seen has its rate lowered by that silence, so a stalled job's ETA grows instead of
pointing at a moment already past.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.states import JobStatus
from storage import tables as t
from storage.clock import db_now, utc

WINDOW_S = 60.0
DECAY_S = 20.0  # a sample this much older weighs 1/e as much
MIN_DONE_FRACTION = 0.01
MIN_SAMPLES = 2


@dataclass(frozen=True)
class Progress:
    rows_per_s: float | None  # None: too few samples yet
    eta_seconds: float | None  # None: not running, or too little done to say

    def as_dict(self) -> dict[str, float | None]:
        return {
            "rows_per_s": None if self.rows_per_s is None else round(self.rows_per_s, 3),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
        }


NO_PROGRESS = Progress(None, None)


def weighted_rate(samples: Sequence[tuple[float, int]], now: float) -> float | None:
    """Rows per second from (when a chunk ended, its rows) samples, oldest first; `now` and
    the times in the same seconds."""
    if len(samples) < MIN_SAMPLES:
        return None
    rows = span = 0.0
    longest = 0.0
    for (before, _), (at, n) in zip(samples, samples[1:], strict=False):
        weight = math.exp(-(now - at) / DECAY_S)
        rows += weight * n
        span += weight * (at - before)
        longest = max(longest, at - before)
    silence = now - samples[-1][0] - longest  # nothing ended for longer than ever before
    if silence > 0:
        span += silence
    if span <= 0:
        return None
    return rows / span


def estimate(
    samples: Sequence[tuple[float, int]], done: int, total: int, now: float, running: bool
) -> Progress:
    rate = weighted_rate(samples, now)
    if rate is None:
        return NO_PROGRESS
    if not running or total <= 0 or done < MIN_DONE_FRACTION * total or rate <= 0:
        return Progress(rate, None)
    return Progress(rate, max(0.0, (total - done) / rate))


def job_progress(s: Session, job: t.Job) -> Progress:
    """The job's rate and ETA now, read from its chunks' ends (database time throughout)."""
    if JobStatus(job.status) not in (JobStatus.QUEUED, JobStatus.RUNNING):
        return NO_PROGRESS
    now = db_now(s)
    since = now - timedelta(seconds=WINDOW_S)
    rows = s.execute(
        select(t.Chunk.finished_at, t.Chunk.size)
        .where(t.Chunk.job_id == job.id, t.Chunk.finished_at >= since)
        .order_by(t.Chunk.finished_at)
    ).all()
    samples = [(_seconds(utc(at)), size) for at, size in rows if at is not None]
    done = job.ok + job.invalid + job.error
    return estimate(samples, done, job.total, _seconds(now), running=True)


def _seconds(at: datetime) -> float:
    return at.timestamp()
