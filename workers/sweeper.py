"""The sweeper: re-sends chunks whose message or worker was lost, and dead-letters chunks
that used up their attempts.

Redis is only the transport. If it loses messages (a flush, a restart without persistence),
the ledger still says which chunks are unfinished, and this sends them again.
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis

from schemas.settings import Settings
from schemas.tasks import task_info
from storage.ledger import Ledger

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
        names = [queue] + [f"{queue}:{p}" for p in range(1, 10)]
        return sum(self.client.llen(n) for n in names) == 0


def sweep_once(ledger: Ledger, settings: Settings, broker_url: str, send: Send) -> SweepReport:
    probe = BrokerProbe(broker_url)
    reset = probe.was_reset()
    resend, exhausted = [], []
    empty: dict[str, bool] = {}
    for chunk in ledger.stalled(settings.requeue_after):
        queue = task_info(chunk.task).queue
        if chunk.expired and chunk.attempts >= settings.max_attempts:
            exhausted.append(chunk.chunk_id)
        elif chunk.expired or reset:
            resend.append((chunk.chunk_id, queue, chunk.priority))
        elif chunk.stale:
            # A long backlog is not a lost message: only re-send when nothing is waiting.
            if queue not in empty:
                empty[queue] = probe.is_empty(queue)
            if empty[queue]:
                resend.append((chunk.chunk_id, queue, chunk.priority))
    marked = set(ledger.requeue([cid for cid, _, _ in resend]))
    sent = 0
    for chunk_id, queue, priority in resend:
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
    probe.mark()  # only once everything lost is sent again
    return SweepReport(resent=sent, dead_lettered=dead, broker_reset=reset)
