"""The model actors alive, listed for the console's system view.

The console runs in the API process, which never joins Ray. Every worker process that has
joined Ray (a Celery child that ran a chunk) keeps a thread that, every ACTOR_CENSUS_EVERY_S,
lists the named actors of Sluice's Ray namespace, asks each for its stats (one that does not
answer within a second is listed as busy) and writes the list to Redis under ACTOR_CENSUS_KEY
with a TTL of three periods: a census nobody refreshes expires instead of showing actors long
gone. A process that never joined Ray (a control-only worker) takes none, and starts no Ray.
"""

import json
import logging
import threading
import time
from typing import Any

from schemas.queues import ACTOR_CENSUS_EVERY_S, ACTOR_CENSUS_KEY, ACTOR_CENSUS_TTL_S
from storage.cluster_identity import redis_url

log = logging.getLogger("sluice.census")
STATS_TIMEOUT_S = 1.0
_started: set[int] = set()  # the processes (pids) whose census thread runs
_lock = threading.Lock()


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


def take_census(url: str) -> int:
    import redis

    actors = alive_actors()
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        census = json.dumps({"at": time.time(), "actors": actors})
        client.setex(ACTOR_CENSUS_KEY, int(ACTOR_CENSUS_TTL_S), census)
    finally:
        client.close()
    return len(actors)


def report_actors(broker_url: str | None) -> None:
    """Start this process's census thread, once; called once it has joined Ray."""
    import os

    url = redis_url(broker_url)
    if url is None:  # not a Redis broker: nowhere the console reads a census from
        return
    with _lock:
        if os.getpid() in _started:
            return
        _started.add(os.getpid())

    def every_period() -> None:
        while True:
            try:
                take_census(url)
            except Exception as exc:  # Redis or Ray away for a while: the next round tries
                log.debug("actor census skipped: %s", exc)
            time.sleep(ACTOR_CENSUS_EVERY_S)

    threading.Thread(target=every_period, name="sluice-actor-census", daemon=True).start()
