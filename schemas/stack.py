"""Where the services are: the SLUICE_* URLs, or the embedded stack's state file."""

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.errors import ConfigError
from schemas.queues import lane_queues
from schemas.settings import Settings


class StackInfo(BaseModel):
    """Written by `sluice stack up` to <data_dir>/stack.json; removed by `stack down`."""

    broker_url: str
    ray_address: str
    ray_auth_token_path: Path | None = None
    pids: dict[str, int] = {}

    @staticmethod
    def path(data_dir: Path) -> Path:
        return data_dir / "stack.json"

    @classmethod
    def load(cls, data_dir: Path) -> "StackInfo | None":
        path = cls.path(data_dir)
        if not path.exists():
            return None
        return cls.model_validate(json.loads(path.read_text()))


NO_BROKER = (
    "no broker: start the embedded stack with `sluice stack up` "
    "or point SLUICE_BROKER_URL at a Redis server"
)


class Endpoints(BaseModel):
    broker_url: str | None  # None: nothing can be sent, but the ledger can still be read
    database_url: str
    ray_address: str | None
    ray_auth_token_path: Path | None = None


def endpoints(settings: Settings) -> Endpoints:
    """Configured services win; otherwise those of a running embedded stack."""
    stack = None if settings.broker_url else StackInfo.load(settings.data_dir)
    broker = settings.broker_url or (stack.broker_url if stack else None)
    ray = settings.ray_address or (stack.ray_address if stack else None)
    token = settings.ray_auth_token_path or (stack.ray_auth_token_path if stack else None)
    return Endpoints(
        broker_url=broker,
        database_url=settings.resolved_database_url(),
        ray_address=ray,
        ray_auth_token_path=token,
    )


def require_broker(endpoints: Endpoints) -> str:
    if endpoints.broker_url is None:
        raise ConfigError(NO_BROKER)
    return endpoints.broker_url


# kombu's own separator for Redis priority lists and bindings (kombu.transport.redis
# Channel.sep). Sluice keeps it, so stock Celery tools (Flower, `celery inspect`) read the
# broker; a test checks it is still kombu's.
KOMBU_SEP = "\x06\x16"


def broker_transport_options(settings: Settings) -> dict[str, object]:
    """Shared by senders and workers: Redis priority queues must be declared the same way.

    `round_robin`, not the `priority` strategy of Celery's Redis-priorities example (which the
    first version copied, for priorities): kombu's BRPOP names every priority list of every
    queue priority-major (kombu.transport.redis Channel._brpop_start), so a message of a more
    urgent step wins over any queue's less urgent ones whatever the strategy; the strategy only
    orders queues within one step. `priority` keeps that order fixed (the first queue with a
    message always wins); `round_robin` moves the queue just served to the back, which is what
    makes the fair-share lanes (schemas/queues.py) take turns."""
    return {
        "visibility_timeout": settings.visibility_timeout,
        "priority_steps": list(range(10)),
        "queue_order_strategy": "round_robin",
    }


def priority_lists(queue: str) -> list[str]:
    """The Redis lists that hold a queue's messages, one per priority step (kombu's names)."""
    return [queue] + [f"{queue}{KOMBU_SEP}{step}" for step in range(1, 10)]


def lane_priority_lists(queue: str, lanes: int) -> list[str]:
    """Every Redis list of every lane of a modality queue."""
    return [name for lane in lane_queues(queue, lanes) for name in priority_lists(lane)]


def redis_priority(priority: int) -> int:
    """Users say 0..9 with 9 most urgent; kombu's Redis transport serves 0 first."""
    return 9 - priority
