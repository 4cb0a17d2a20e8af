"""The system, for operator keys: queue depths and the broker, the workers that answer a
ping, and the rows every tenant's jobs finished in the last minute and five minutes."""

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from ops.console.guard import Visitor
from ops.console.render import page, svc
from producers.api.metrics import QueueCollector
from producers.api.services import Services
from producers.dispatch import CeleryDispatcher
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


@router.get("/system")
async def system_page(request: Request, signed: Visitor) -> Response:
    if not signed.key.operator:
        raise HTTPException(403, "the system view needs an operator key")
    s = svc(request)
    up, depths = await run_in_threadpool(queues, s)
    alive = await run_in_threadpool(workers, s) if up else None
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
        throughput=[(task, rows, five.get(task, 0)) for task, rows in minute]
        + [(task, 0, rows) for task, rows in five.items() if task not in dict(minute)],
    )
