"""The beat task that lists the model actors alive, for the console's system view.

The console runs in the API process, which never joins Ray; a worker's child already has.
Every ACTOR_CENSUS_EVERY_S the beat sends this task; it lists the named actors of Sluice's
Ray namespace, asks each for its stats (a busy one that does not answer within a second is
listed as busy), and writes the list to Redis under ACTOR_CENSUS_KEY with a TTL of three
periods: a census no worker has refreshed expires instead of showing actors long gone.
"""

import json
import logging
import time
from typing import Any

from celery import Celery

from schemas.queues import (
    ACTOR_CENSUS,
    ACTOR_CENSUS_KEY,
    ACTOR_CENSUS_TTL_S,
    CONTROL_QUEUE,
)
from storage.cluster_identity import redis_url
from workers.chunk_task import WorkerState

log = logging.getLogger("sluice.census")
STATS_TIMEOUT_S = 1.0


def alive_actors() -> list[dict[str, Any]]:
    import ray

    from workers.runtime.actor_directory import NAMESPACE

    named = ray.util.list_named_actors(all_namespaces=True)
    ours = sorted(a["name"] for a in named if a.get("namespace") == NAMESPACE)
    found: list[dict[str, Any]] = []
    for name in ours:
        try:
            handle = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:  # gone since it was listed
            continue
        entry: dict[str, Any] = {"name": name}
        try:
            stats: Any = ray.get(handle.stats.remote(), timeout=STATS_TIMEOUT_S)
            entry.update(state="alive", **{k: v for k, v in stats.items() if _plain(v)})
        except ray.exceptions.GetTimeoutError:
            entry["state"] = "busy"  # alive, its event loop taken by a batch
        except ray.exceptions.RayError as exc:
            entry.update(state="unreachable", error=type(exc).__name__)
        found.append(entry)
    return found


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def register_census(app: Celery, state: WorkerState) -> None:
    @app.task(name=ACTOR_CENSUS, queue=CONTROL_QUEUE)
    def actor_census() -> int:
        import redis

        url = redis_url(state.endpoints.broker_url)
        if url is None:  # not a Redis broker: nowhere the console reads a census from
            return 0
        state.join_ray()
        actors = alive_actors()
        census = {"at": time.time(), "actors": actors}
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            client.setex(ACTOR_CENSUS_KEY, int(ACTOR_CENSUS_TTL_S), json.dumps(census))
        finally:
            client.close()
        return len(actors)
