"""The sweeper: re-sends chunks whose message or worker was lost, and dead-letters chunks
that used up their attempts.

Redis is only the transport. If it loses messages (a flush, a restart without persistence),
the ledger still says which chunks are unfinished, and this sends them again.
"""

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis
from celery import Celery

from schemas.catalog import Catalog
from schemas.errors import ClusterMismatchError, UnknownTaskError
from schemas.queues import (
    CONTROL_QUEUE,
    PROCESS_CHUNK,
    SWEEP,
    TRAIN_QUEUE,
    TRAIN_TASK,
    lane_queue,
)
from schemas.settings import Settings
from schemas.stack import Endpoints, priority_lists, redis_priority, require_broker
from storage.cluster_identity import require_same_cluster
from storage.ledger import Ledger
from workers.callback_delivery import SendCallback, callback_sender, enqueue_due
from workers.chunk_task import WorkerState
from workers.training.run_task import resend_training

log = logging.getLogger("sluice.sweeper")
EPOCH_KEY = "sluice:broker-epoch"
SCAN_KEY = "sluice:backlog-read"
UNACKED = "unacked"  # kombu's Redis transport: messages delivered and not yet acked
SCAN_LIMIT = 200_000
CHUNK_ID = re.compile(rb"[0-9a-f]{32}-[0-9]{5,}")  # storage.ledger: f"{job_id}-{n:05d}"
Send = Callable[[str, str, int], None]  # (chunk_id, queue, priority)


@dataclass
class SweepReport:
    resent: int
    dead_lettered: int
    broker_reset: bool
    expired: int = 0  # jobs ended at their deadline

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class BrokerProbe:
    """What the sweeper asks the broker: was it wiped, and is a queue empty?"""

    def __init__(self, broker_url: str) -> None:
        url = broker_url.replace("redis+socket://", "unix://")
        self.client = (
            redis.Redis.from_url(url)
            if url.startswith(("redis://", "rediss://", "unix://"))
            else None
        )

    def was_reset(self) -> bool:
        """True when our marker key is gone: the broker lost its queues (or is new)."""
        return self.client is not None and not self.client.exists(EPOCH_KEY)

    def mark(self) -> None:
        if self.client is not None:
            self.client.set(EPOCH_KEY, uuid.uuid4().hex, nx=True)

    def waiting_chunk_ids(self, queue: str, every: float) -> set[str] | None:
        """The chunks with a message in the queue (any priority) or held by a worker
        (reserved, or a retry waiting for its countdown: kombu keeps those in its `unacked`
        hash). None when another sweeper read it less than `every` seconds ago, or when there
        are more messages than it is worth reading (SCAN_LIMIT)."""
        if self.client is None:
            return None
        if not self.client.set(f"{SCAN_KEY}:{queue}", 1, nx=True, ex=max(1, int(every))):
            return None
        lists = priority_lists(queue)
        sizes = [self.client.llen(n) for n in lists]
        if sum(sizes) + self.client.hlen(UNACKED) > SCAN_LIMIT:
            log.warning(
                "sweep: %s holds over %d messages; not read for lost ones", queue, SCAN_LIMIT
            )
            return None
        found: set[str] = set()
        # The lists first, then the hash: a message taken meanwhile moves from one to the
        # other, and is seen in the second. (Pushes shift a list's indices up, never past
        # an unread message.)
        for name, size in zip(lists, sizes, strict=True):
            for start in range(0, size, 1000):
                for raw in self.client.lrange(name, start, start + 999):
                    data = raw if isinstance(raw, bytes) else raw.encode()
                    found.update(m.decode() for m in CHUNK_ID.findall(data))
        for _, raw in self.client.hscan_iter(UNACKED, count=1000):
            data = raw if isinstance(raw, bytes) else raw.encode()
            found.update(m.decode() for m in CHUNK_ID.findall(data))
        return found

    def is_empty(self, queue: str) -> bool:
        """No message waits in the queue, at any priority (kombu keeps one list per step)."""
        if self.client is None:
            return False
        return sum(self.client.llen(n) for n in priority_lists(queue)) == 0


OVERDUE_FACTOR = 5  # queued this many times `requeue_after`: re-sent even if its queue is busy


def sweep_once(
    ledger: Ledger, settings: Settings, broker_url: str, send: Send, catalog: Catalog
) -> SweepReport:
    expired = expire_overdue(ledger)  # first: an expired job's chunks are not sent again
    probe = BrokerProbe(broker_url)
    reset = probe.was_reset()
    resend, exhausted = [], []
    empty: dict[str, bool] = {}
    waiting: dict[str, set[str] | None] = {}
    for chunk in ledger.stalled(settings.requeue_after, every_queued=reset):
        if chunk.expired and chunk.attempts >= settings.max_attempts:
            exhausted.append(chunk.chunk_id)
            continue
        try:  # the lane queue the chunk was sent to: the one that may hold its message
            queue = lane_queue(catalog.get(chunk.task).queue, chunk.lane, settings.fair_lanes)
        except UnknownTaskError:  # its queue is unknown here; its attempts still run out
            log.warning(
                "sweep: chunk %s is of task %s, which this worker does not know: set the same "
                "SLUICE_TASK_MODULES (or install the same task packages) on every host",
                chunk.chunk_id,
                chunk.task,
            )
            continue
        if chunk.expired or reset:
            resend.append((chunk.chunk_id, queue, chunk.priority))
        elif chunk.stale:
            # A long backlog is not a lost message: re-send when nothing is waiting, or, long
            # overdue, when the broker holds no message for it (read at most once per
            # `requeue_after` and queue, by any sweeper).
            if queue not in empty:
                empty[queue] = probe.is_empty(queue)
            overdue = chunk.queued_for > settings.requeue_after * OVERDUE_FACTOR
            if overdue and not empty[queue] and queue not in waiting:
                waiting[queue] = probe.waiting_chunk_ids(queue, settings.requeue_after)
            held = waiting.get(queue)
            if empty[queue] or (overdue and held is not None and chunk.chunk_id not in held):
                resend.append((chunk.chunk_id, queue, chunk.priority))
    sent = 0
    for start in range(0, len(resend), SEND_BATCH):
        batch = resend[start : start + SEND_BATCH]
        marked = set(ledger.requeue([cid for cid, _, _ in batch]))
        for chunk_id, queue, priority in batch:
            if chunk_id in marked:
                send(chunk_id, queue, priority)
                sent += 1
    dead = 0
    for chunk_id in exhausted:
        try:
            dead += ledger.dead_letter(
                chunk_id,
                None,
                f"{settings.max_attempts} attempts used up (the worker holding it died each time)",
            )
        except Exception:  # one bad chunk must not stop the sweep of the others
            log.exception("sweep: could not dead-letter chunk %s", chunk_id)
    if reset:
        # Only the sweep that saw the wipe marks the broker again, once everything lost is
        # sent: a sweep that began before a wipe must not hide it from the next one (it would
        # re-create the marker, and the lost chunks would wait `requeue_after` instead).
        probe.mark()
    return SweepReport(resent=sent, dead_lettered=dead, broker_reset=reset, expired=expired)


def expire_overdue(ledger: Ledger) -> int:
    """End every job past its deadline (Ledger.expire); how many ended."""
    n = 0
    for job_id in ledger.overdue():
        try:
            n += ledger.expire(job_id)
        except Exception:  # one job must not stop the sweep of the others
            log.exception("sweep: could not expire job %s", job_id)
    return n


SEND_BATCH = 5_000  # chunks marked in the ledger, then sent, at a time


def sweep_all(
    ledger: Ledger,
    settings: Settings,
    endpoints: Endpoints,
    catalog: Catalog,
    send_chunk: Send,
    send_run: Callable[[str], object],
    send_callback: SendCallback,
) -> dict[str, object]:
    """One sweep of everything: chunks, training runs, and callbacks that are due (queued
    for the callback pool, never sent from here: a slow receiver must not stall sweeps)."""
    broker = require_broker(endpoints)
    report = sweep_once(ledger, settings, broker, send_chunk, catalog)
    report.resent += resend_training(
        settings,
        endpoints.database_url,
        send_run,
        lambda: BrokerProbe(broker).is_empty(TRAIN_QUEUE),
    )
    if report.resent or report.dead_lettered or report.expired:
        log.warning("sweep: %s", report.as_dict())
    removed = remove_abandoned(ledger)
    ledger.receiver.clear_keys()  # the keys of jobs received since: their index is done
    return {
        **report.as_dict(),
        "abandoned_removed": removed,
        "callbacks_queued": enqueue_due(ledger, send_callback),
    }


RECEIVING_IDLE = 3600.0  # seconds without a batch: a `receiving` job's submitter is gone


def remove_abandoned(ledger: Ledger, idle_seconds: float = RECEIVING_IDLE) -> int:
    """Remove the jobs still `receiving` whose submitter died (killed mid-input: it wrote
    no batch for `idle_seconds`). They were never queued, so nothing of them ran."""
    removed = 0
    for job_id in ledger.receiver.abandoned(idle_seconds):
        try:
            if not ledger.receiver.abandon(job_id, if_idle=idle_seconds):
                continue  # it came to life (a batch) or was queued meanwhile
            removed += 1
            log.warning("sweep: removed job %s, abandoned while its input was written", job_id)
        except Exception:  # one job must not stop the sweep
            log.exception("sweep: could not remove abandoned job %s", job_id)
    return removed


def keep_cluster_identity(state: WorkerState) -> None:
    """Each sweep: the ledger's cluster id back into a broker that lost it (a Redis restarted
    without persistence), and, in a process joined to Ray, the Ray binding refreshed, so an
    idle cluster's stays live (storage/cluster_identity.py, workers/cluster_guard.py). A
    mismatch is logged loudly, never acted on here: the chunk task stops a worker joined to
    another Ray before it claims anything, and which ledger is the right one is the
    operator's to say. Nothing here may stop the sweep."""
    for check in (
        lambda: require_same_cluster(state.ledger.engine, state.endpoints.broker_url),
        lambda: state.ray_guard.check(state.ledger.engine),
    ):
        try:
            check()
        except ClusterMismatchError as exc:
            log.error("sweep: %s", exc)
        except Exception:
            log.warning("sweep: the cluster's identity not checked", exc_info=True)


def register_sweep(app: Celery, state: WorkerState) -> None:
    """The periodic sweep, run by the worker started with --beat; it shares the process's
    ledger and catalog with the chunk task."""

    def send_chunk(chunk_id: str, queue: str, priority: int) -> None:
        app.send_task(
            PROCESS_CHUNK, args=[chunk_id], queue=queue, priority=redis_priority(priority)
        )

    @app.task(name=SWEEP, queue=CONTROL_QUEUE)
    def sweep_task() -> dict[str, object]:
        keep_cluster_identity(state)
        return sweep_all(
            state.ledger,
            state.settings,
            state.endpoints,
            state.catalog,
            send_chunk,
            lambda run_id: app.send_task(TRAIN_TASK, args=[run_id], queue=TRAIN_QUEUE),
            callback_sender(app),
        )
