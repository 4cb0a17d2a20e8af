"""GET /metrics, Prometheus text format. API servers and workers are different processes, so
nothing is counted in memory here: every scrape asks the ledger and Redis.

From the ledger: `sluice_items_total{task,status}` (job counters), `sluice_jobs{status}`,
`sluice_callbacks{state}`, `sluice_tokens_total{task,kind}` (prompt / completion), and over
the most recent finished chunks (`RECENT_CHUNKS`): `sluice_batch_size` (items per chunk handed
to a model actor),
`sluice_inference_seconds` (chunk claimed → finished: model + explanations + ledger write) and
`sluice_queue_wait_seconds` (chunk enqueued → claimed by a worker).
From Redis: `sluice_queue_depth{queue}` (LLEN of `sluice.<modality>` and its priority lists
`sluice.<modality>:N`, summed over its fair-share lanes), and `sluice_broker_up`.
Per event pipeline: `sluice_pipeline_events_total{pipeline,outcome}`,
`sluice_pipeline_in_flight{pipeline}`, `sluice_pipeline_lag_seconds{pipeline}`.
Per tenant (tenant_usage): `sluice_tenant_items_total{tenant,task,outcome}` and
`sluice_tenant_model_seconds_total{tenant,task}`.
"""

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import Connection, Engine, func, select

from producers.api.auth import operator
from producers.api.problems import Problem
from producers.api.services import Services, services
from schemas.queues import CONTROL_QUEUE
from schemas.stack import lane_priority_lists
from schemas.states import ItemStatus
from storage import tables as t
from storage.apikeys import ApiKeyInfo
from storage.clock import utc
from storage.standing_jobs import pipeline_counts

router = APIRouter(tags=["ops"])
RECENT_CHUNKS = 10_000
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
SECONDS_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]


def histogram(name: str, doc: str, values: list[float], bounds: list[float]) -> Metric:
    buckets = [(str(b), float(sum(v <= b for v in values))) for b in bounds]
    buckets.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=sum(values))


class LedgerCollector:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        engine = self.svc.client.ledger.engine.execution_options(readonly=True)
        with engine.connect() as conn:
            items = CounterMetricFamily(
                "sluice_items", "items processed, by task and status", labels=["task", "status"]
            )
            for task, ok, invalid, error in conn.execute(
                select(
                    t.Job.task, func.sum(t.Job.ok), func.sum(t.Job.invalid), func.sum(t.Job.error)
                ).group_by(t.Job.task)
            ):
                counts = {ItemStatus.OK: ok, ItemStatus.INVALID: invalid, ItemStatus.ERROR: error}
                for outcome in ItemStatus:
                    items.add_metric([task, outcome.value], float(counts[outcome] or 0))
            yield items
            yield token_counts(conn)
            jobs = GaugeMetricFamily("sluice_jobs", "jobs by status", labels=["status"])
            for status, n in conn.execute(
                select(t.Job.status, func.count()).group_by(t.Job.status)
            ):
                jobs.add_metric([status], float(n))
            yield jobs
            callbacks = GaugeMetricFamily(
                "sluice_callbacks", "callback deliveries by state", labels=["state"]
            )
            for state, n in conn.execute(
                select(t.CallbackDelivery.state, func.count()).group_by(t.CallbackDelivery.state)
            ):
                callbacks.add_metric([state], float(n))
            yield callbacks
            yield from tenant_usage(conn)
        yield from pipeline_figures(engine)
        with engine.connect() as conn:
            recent = conn.execute(
                select(t.Chunk.size, t.Chunk.enqueued_at, t.Chunk.claimed_at, t.Chunk.finished_at)
                .where(t.Chunk.finished_at.is_not(None), t.Chunk.claimed_at.is_not(None))
                .order_by(t.Chunk.finished_at.desc())
                .limit(RECENT_CHUNKS)
            ).all()
        sizes = [float(r.size) for r in recent]
        infer, queued = [], []
        for r in recent:
            claimed, finished, enq = (
                utc(r.claimed_at),
                utc(r.finished_at),
                utc(r.enqueued_at),
            )
            if claimed and finished:
                infer.append(max(0.0, (finished - claimed).total_seconds()))
            if claimed and enq:
                queued.append(max(0.0, (claimed - enq).total_seconds()))
        yield histogram(
            "sluice_batch_size",
            f"items per chunk sent to a model actor (last {RECENT_CHUNKS} chunks)",
            sizes,
            [float(b) for b in BATCH_BUCKETS],
        )
        yield histogram(
            "sluice_inference_seconds",
            "chunk claimed to finished (model, explanations, ledger write)",
            infer,
            SECONDS_BUCKETS,
        )
        yield histogram(
            "sluice_queue_wait_seconds",
            "chunk enqueued to claimed by a worker",
            queued,
            SECONDS_BUCKETS,
        )


def pipeline_figures(engine: Engine) -> Iterator[Metric]:
    """Event pipelines (`sluice listen`, storage/standing_jobs.py), per pipeline:
    `sluice_pipeline_events_total{pipeline,outcome}` (recorded, published, dead_lettered),
    `sluice_pipeline_in_flight` (recorded, result not yet published) and
    `sluice_pipeline_lag_seconds` (how long the oldest event in flight has waited)."""
    events = CounterMetricFamily(
        "sluice_pipeline_events", "events by what became of them", labels=["pipeline", "outcome"]
    )
    in_flight = GaugeMetricFamily(
        "sluice_pipeline_in_flight", "events recorded whose result is not yet published",
        labels=["pipeline"],
    )  # fmt: skip
    lag = GaugeMetricFamily(
        "sluice_pipeline_lag_seconds", "age of the oldest event in flight", labels=["pipeline"]
    )
    for c in pipeline_counts(engine):
        for outcome in ("recorded", "published", "dead_lettered"):
            events.add_metric([c.pipeline, outcome], float(getattr(c, outcome)))
        in_flight.add_metric([c.pipeline], float(c.in_flight))
        lag.add_metric([c.pipeline], c.oldest_unpublished_s or 0.0)
    yield from (events, in_flight, lag)


def token_counts(conn: Connection) -> Metric:
    """`sluice_tokens_total{task,kind}`: prompt and completion tokens of the tasks that count
    them (generate), summed over their jobs."""
    tokens = CounterMetricFamily(
        "sluice_tokens", "tokens read and generated, by task", labels=["task", "kind"]
    )
    for task, prompt, completion in conn.execute(
        select(t.Job.task, func.sum(t.Job.prompt_tokens), func.sum(t.Job.completion_tokens))
        .where(t.Job.prompt_tokens.is_not(None))
        .group_by(t.Job.task)
    ):
        tokens.add_metric([task, "prompt"], float(prompt or 0))
        tokens.add_metric([task, "completion"], float(completion or 0))
    return tokens


def tenant_usage(conn: Connection) -> Iterator[Metric]:
    """`sluice_tenant_items_total{tenant,task,outcome}` and
    `sluice_tenant_model_seconds_total{tenant,task}`, all days summed (storage/usage.py)."""
    items = CounterMetricFamily(
        "sluice_tenant_items", "items settled per tenant", labels=["tenant", "task", "outcome"]
    )
    seconds = CounterMetricFamily(
        "sluice_tenant_model_seconds",
        "seconds the model actors spent on a tenant's chunks",
        labels=["tenant", "task"],
    )
    u = t.TenantUsage
    for tenant, task, ok, invalid, error, model_seconds in conn.execute(
        select(
            u.tenant,
            u.task,
            func.sum(u.ok),
            func.sum(u.invalid),
            func.sum(u.error),
            func.sum(u.model_seconds),
        ).group_by(u.tenant, u.task)
    ):
        counts = {ItemStatus.OK: ok, ItemStatus.INVALID: invalid, ItemStatus.ERROR: error}
        for outcome in ItemStatus:
            items.add_metric([tenant, task, outcome.value], float(counts[outcome] or 0))
        seconds.add_metric([tenant, task], float(model_seconds or 0.0))
    yield items
    yield seconds


class QueueCollector:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._redis: Any = None

    def collect(self) -> Iterator[Metric]:
        import redis

        up = GaugeMetricFamily("sluice_broker_up", "1 when Redis answered this scrape")
        depth = GaugeMetricFamily(
            "sluice_queue_depth", "messages waiting, all priorities", labels=["queue"]
        )
        url = self.svc.client.endpoints.broker_url
        try:
            if url is None:
                raise ConnectionError("no broker configured")
            if self._redis is None:
                self._redis = redis.Redis.from_url(
                    url.replace("redis+socket://", "unix://"), socket_timeout=2
                )
            lanes = self.svc.settings.fair_lanes
            for queue in sorted({*self.svc.client.catalog.queues(), CONTROL_QUEUE}):
                with self._redis.pipeline(transaction=False) as pipe:
                    for name in lane_priority_lists(queue, 1 if queue == CONTROL_QUEUE else lanes):
                        pipe.llen(name)
                    depth.add_metric([queue], float(sum(pipe.execute())))
            up.add_metric([], 1.0)
            yield depth
        except Exception:  # the broker is down: say so rather than fail the scrape
            up.add_metric([], 0.0)
        yield up


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}},
        401: {"model": Problem, "description": "no API key, or an unknown or revoked one"},
        403: {"model": Problem, "description": "a tenant's key: metrics need an operator key"},
    },
)
def metrics(request: Request, _key: Annotated[ApiKeyInfo, Depends(operator)]) -> Response:
    """Prometheus metrics for operators (every tenant's totals; no job ids or texts). Scrape
    with an operator key: `authorization: {credentials: <key>}` in Prometheus."""
    svc = services(request)
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(LedgerCollector(svc))  # type: ignore[arg-type]
        registry.register(QueueCollector(svc))  # type: ignore[arg-type]
        request.app.state.metrics_registry = registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
