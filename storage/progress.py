"""How fast a running job goes and when it should end: an ETA that can be trusted.

Each chunk that ended is a sample: its rows over the time since the previous end (the first
chunk's since the job's first claim). The rate is those rows over that time, exponentially
weighted towards the last WINDOW_S seconds (samples DECAY_S older count 1/e as much), so a
job that slows down or speeds up is seen within seconds, while chunks ending together (N
workers finishing N equal chunks) count over the time they took, not the milliseconds
between them. When fewer than two chunks ended in the window (slow chunks, a stall) the
last ones before it still count, less. The ETA is the rows left over that rate. It stays
None until it means something: 1 % of the rows done, two chunk ends, and at least
MIN_SPAN_S seconds of work behind the rate. A job where nothing has ended for longer than
any gap seen has its rate lowered by that silence, so a stalled job's ETA grows instead of
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
BEFORE_WINDOW = 2  # chunk ends read from before the window: slow chunks still get a rate
MIN_DONE_FRACTION = 0.01
MIN_SAMPLES = 2
MIN_SPAN_S = 1.0


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


def weighted_rate(
    ends: Sequence[tuple[float, int]],
    now: float,
    anchor: float | None = None,
    since: float | None = None,
) -> float | None:
    """Rows per second from chunk ends (when, rows), oldest first. `anchor`: when the work
    behind the first end began (the end before it, or the job's first claim). `since`: the
    window's start: an anchor before it counts only from there, with the first end's rows in
    proportion. Times in seconds."""
    if len(ends) < MIN_SAMPLES:
        return None
    points: list[tuple[float, float]] = [(at, float(n)) for at, n in ends]
    if anchor is None:
        anchor, _ = points.pop(0)  # the first end only marks when the next one's work began
    elif since is not None and anchor < since < points[0][0]:
        first_at, first_rows = points[0]
        points[0] = (first_at, first_rows * (first_at - since) / (first_at - anchor))
        anchor = since
    rows = span = longest = whole = 0.0
    before = anchor
    for at, n in points:
        weight = math.exp(-(now - at) / DECAY_S)
        rows += weight * n
        span += weight * (at - before)
        longest = max(longest, at - before)
        whole += at - before
        before = at
    if whole < MIN_SPAN_S or span <= 0:
        return None
    silence = now - before - longest  # nothing ended for longer than ever before
    if silence > 0:
        span += silence
    return rows / span


def estimate(
    ends: Sequence[tuple[float, int]],
    done: int,
    total: int,
    now: float,
    running: bool,
    anchor: float | None = None,
    since: float | None = None,
) -> Progress:
    rate = weighted_rate(ends, now, anchor, since)
    if rate is None:
        return NO_PROGRESS
    if not running or total <= 0 or done < MIN_DONE_FRACTION * total or rate <= 0:
        return Progress(rate, None)
    return Progress(rate, max(0.0, (total - done) / rate))


def job_progress(s: Session, job: t.Job) -> Progress:
    """The job's rate and ETA now, read from its chunks' ends (database time throughout):
    those of the last WINDOW_S seconds, anchored at the end before them; where fewer than
    two ended in the window, the last few before it too, at their lower weight."""
    if JobStatus(job.status) not in (JobStatus.QUEUED, JobStatus.RUNNING):
        return NO_PROGRESS
    now = db_now(s)
    since = now - timedelta(seconds=WINDOW_S)
    ended = (t.Chunk.job_id == job.id) & t.Chunk.finished_at.is_not(None)
    recent = s.execute(
        select(t.Chunk.finished_at, t.Chunk.size)
        .where(ended, t.Chunk.finished_at >= since)
        .order_by(t.Chunk.finished_at)
    ).all()
    earlier = s.execute(
        select(t.Chunk.finished_at, t.Chunk.size)
        .where(ended, t.Chunk.finished_at < since)
        .order_by(t.Chunk.finished_at.desc())
        .limit(BEFORE_WINDOW + 1)
    ).all()
    started = _seconds(utc(job.started_at)) if job.started_at else None
    done = job.ok + job.invalid + job.error
    recent_ends = [(_seconds(utc(at)), size) for at, size in recent if at]
    earlier_ends = [(_seconds(utc(at)), size) for at, size in reversed(earlier) if at]
    if len(recent_ends) >= MIN_SAMPLES:
        # anchored at the end before the window, or at the job's first claim if none
        anchor = earlier_ends[-1][0] if earlier_ends else started
        ends, clip = recent_ends, _seconds(since)
    else:  # slow chunks or a stall: the last ends before the window count too
        ends = earlier_ends[-BEFORE_WINDOW:] + recent_ends
        anchor = None if len(earlier_ends) > BEFORE_WINDOW else started
        clip = None
    return estimate(ends, done, job.total, _seconds(now), True, anchor, clip)


def _seconds(at: datetime) -> float:
    return at.timestamp()
