"""The system, for operator keys: queue depths and the broker, the workers that answer a
ping, the model actors alive (as the workers' census last found them), and the rows every
tenant's jobs finished in the last minute and five minutes."""

import json
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from ops.console.guard import Visitor
from ops.console.render import page, svc
from producers.api.metrics import QueueCollector
from producers.api.services import Services
from producers.dispatch import CeleryDispatcher
from schemas.queues import ACTOR_CENSUS_KEY
from storage.cluster_identity import redis_url
from storage.job_insight import recent_throughput

router = APIRouter(prefix="/console")
PING_TIMEOUT_S = 1.0


def queues(s: Services) -> tuple[bool, list[tuple[str, int]]]:
    up, depths = False, []
    for metric in QueueCollector(s).collect():
        for sample in metric.samples:
            if sample.name == "sluice_broker_up":
                up = sample.value == 1.0
            elif sample.name == "sluice_queue_depth":
                depths.append((sample.labels["queue"], int(sample.value)))
    return up, depths


def workers(s: Services) -> list[str] | None:
    """The workers that answered a ping (their Celery hostnames); None without a broker."""
    dispatcher = s.client.dispatcher
    if not isinstance(dispatcher, CeleryDispatcher) or dispatcher.broker_url is None:
        return None
    try:
        replies: list[dict[str, Any]] = dispatcher.app.control.ping(timeout=PING_TIMEOUT_S)
    except Exception:  # the broker is down: the queues say so
        return None
    return sorted(name for reply in replies for name in reply)


def actor_census(s: Services) -> dict[str, Any] | None:
    """The model actors alive as the workers last listed them (workers/actor_census.py), or
    None where no census is current (no worker, no Redis broker, or none in 45 s)."""
    import redis

    url = redis_url(s.client.endpoints.broker_url)
    if url is None:
        return None
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        raw = client.get(ACTOR_CENSUS_KEY)
    except redis.RedisError:
        return None
    finally:
        client.close()
    if raw is None:
        return None
    census: dict[str, Any] = json.loads(raw)
    census["age_s"] = max(0.0, time.time() - float(census.get("at", 0)))
    return census


@router.get("/system")
async def system_page(request: Request, signed: Visitor) -> Response:
    if not signed.key.operator:
        raise HTTPException(403, "the system view needs an operator key")
    s = svc(request)
    up, depths = await run_in_threadpool(queues, s)
    alive = await run_in_threadpool(workers, s) if up else None
    census = await run_in_threadpool(actor_census, s) if up else None
    engine = s.client.ledger.engine
    minute = await run_in_threadpool(recent_throughput, engine, 60)
    five = dict(await run_in_threadpool(recent_throughput, engine, 300))
    return page(
        request,
        "system.html",
        signed,
        broker_up=up,
        depths=depths,
        workers=alive,
        census=census,
        throughput=[(task, rows, five.get(task, 0)) for task, rows in minute]
        + [(task, 0, rows) for task, rows in five.items() if task not in dict(minute)],
    )
