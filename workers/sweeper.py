"""The sweeper: re-sends chunks whose message or worker was lost, and settles finished jobs.

Redis is only the transport. If it loses messages (a flush, a restart without persistence),
the ledger still says which chunks are unfinished, and this sends them again.
"""

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis

from schemas.settings import Settings
from schemas.tasks import task_info
from storage.ledger import Ledger

EPOCH_KEY = "sluice:broker-epoch"
Send = Callable[[str, str, int], None]  # (chunk_id, queue, priority)


@dataclass
class SweepReport:
    resent: int
    dead_lettered: int
    finalised: int
    broker_lost: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def broker_was_reset(broker_url: str) -> bool:
    """True when the broker no longer holds our marker key: its queues were wiped since the
    last sweep (or this is a new broker), so every queued chunk must be sent again."""
    if not broker_url.startswith(("redis://", "rediss://", "redis+socket://", "unix://")):
        return False
    client = redis.Redis.from_url(broker_url.replace("redis+socket://", "unix://"))
    try:
        return bool(client.set(EPOCH_KEY, uuid.uuid4().hex, nx=True))
    finally:
        client.close()


def sweep_once(ledger: Ledger, settings: Settings, broker_url: str, send: Send) -> SweepReport:
    lost = broker_was_reset(broker_url)
    resend, exhausted = ledger.sweep(settings.requeue_after, settings.max_attempts, lost)
    for chunk_id, task, priority in resend:
        send(chunk_id, task_info(task).queue, priority)
    for chunk_id in exhausted:
        ledger.dead_letter(chunk_id, None, f"{settings.max_attempts} attempts used up "
                           "(the worker holding it died each time)")
    finalised = ledger.finalise_stuck_jobs()
    return SweepReport(len(resend), len(exhausted), finalised, lost)
