"""The sweeper: re-sends chunks whose message or worker was lost, and dead-letters chunks
that used up their attempts.

Redis is only the transport. If it loses messages (a flush, a restart without persistence),
the ledger still says which chunks are unfinished, and this sends them again.
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

import redis
from celery import Celery

from schemas.catalog import Catalog
from schemas.errors import UnknownTaskError
from schemas.queues import CONTROL_QUEUE, PROCESS_CHUNK, SWEEP, TRAIN_QUEUE, TRAIN_TASK
from schemas.settings import Settings
from schemas.stack import Endpoints, priority_lists, redis_priority, require_broker
from storage.ledger import Ledger, Stalled
from workers.callback_delivery import deliver_due
from workers.chunk_task import WorkerState
from workers.training.run_task import resend_training

log = logging.getLogger("sluice.sweeper")
EPOCH_KEY = "sluice:broker-epoch"
Send = Callable[[str, str, int], None]  # (chunk_id, queue, priority)


@dataclass
class SweepReport:
    resent: int
    dead_lettered: int
    broker_reset: bool

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

    def is_empty(self, queue: str) -> bool:
        """No message waits in the queue, at any priority (kombu keeps one list per step)."""
        if self.client is None:
            return False
        return sum(self.client.llen(n) for n in priority_lists(queue)) == 0


OVERDUE_FACTOR = 5  # queued this many times `requeue_after`: re-sent even if its queue is busy


def sweep_once(
    ledger: Ledger, settings: Settings, broker_url: str, send: Send, catalog: Catalog
) -> SweepReport:
    probe = BrokerProbe(broker_url)
    reset = probe.was_reset()
    resend, exhausted = [], []
    empty: dict[str, bool] = {}
    passed = PassedOver(ledger, catalog)
    for chunk in ledger.stalled(settings.requeue_after, every_queued=reset):
        if chunk.expired and chunk.attempts >= settings.max_attempts:
            exhausted.append(chunk.chunk_id)
            continue
        try:
            queue = catalog.get(chunk.task).queue
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
            # A long backlog is not a lost message: re-send when nothing is waiting, or when
            # the queue has already handed out a message sent after this one.
            if queue not in empty:
                empty[queue] = probe.is_empty(queue)
            overdue = chunk.queued_for > settings.requeue_after * OVERDUE_FACTOR
            if empty[queue] or (overdue and passed.over(chunk, queue)):
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
    return SweepReport(resent=sent, dead_lettered=dead, broker_reset=reset)


SEND_BATCH = 5_000  # chunks marked in the ledger, then sent, at a time


class PassedOver:
    """Whether a queued chunk's message was passed over: its queue already handed a worker
    a message sent after it at the same or a less urgent priority (kombu serves each
    priority first in, first out, the most urgent first), so its own message is lost.
    Asked of the ledger once per sweep, only when a chunk is overdue."""

    def __init__(self, ledger: Ledger, catalog: Catalog) -> None:
        self.ledger, self.catalog = ledger, catalog
        self._latest: dict[tuple[str, int], datetime] | None = None

    def latest(self) -> dict[tuple[str, int], datetime]:
        if self._latest is None:
            self._latest = {}
            for task, priority, sent_at in self.ledger.consumed_sends():
                try:
                    queue = self.catalog.get(task).queue
                except UnknownTaskError:
                    continue
                key = (queue, priority)
                self._latest[key] = max(sent_at, self._latest.get(key, sent_at))
        return self._latest

    def over(self, chunk: Stalled, queue: str) -> bool:
        if chunk.sent_at is None:
            return True
        return any(
            q == queue and priority <= chunk.priority and sent_at > chunk.sent_at
            for (q, priority), sent_at in self.latest().items()
        )


def sweep_all(
    ledger: Ledger,
    settings: Settings,
    endpoints: Endpoints,
    catalog: Catalog,
    send_chunk: Send,
    send_run: Callable[[str], object],
) -> dict[str, object]:
    """One sweep of everything: chunks, training runs, and callbacks that are due."""
    broker = require_broker(endpoints)
    report = sweep_once(ledger, settings, broker, send_chunk, catalog)
    report.resent += resend_training(
        settings,
        endpoints.database_url,
        send_run,
        lambda: BrokerProbe(broker).is_empty(TRAIN_QUEUE),
    )
    if report.resent or report.dead_lettered:
        log.warning("sweep: %s", report.as_dict())
    return {**report.as_dict(), "callbacks": deliver_due(ledger, settings)}


def register_sweep(app: Celery, state: WorkerState) -> None:
    """The periodic sweep, run by the worker started with --beat; it shares the process's
    ledger and catalog with the chunk task."""

    def send_chunk(chunk_id: str, queue: str, priority: int) -> None:
        app.send_task(
            PROCESS_CHUNK, args=[chunk_id], queue=queue, priority=redis_priority(priority)
        )

    @app.task(name=SWEEP, queue=CONTROL_QUEUE)
    def sweep_task() -> dict[str, object]:
        return sweep_all(
            state.ledger,
            state.settings,
            state.endpoints,
            state.catalog,
            send_chunk,
            lambda run_id: app.send_task(TRAIN_TASK, args=[run_id], queue=TRAIN_QUEUE),
        )
