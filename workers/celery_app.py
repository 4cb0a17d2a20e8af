"""The Celery application, configured for at-least-once delivery with an idempotent effect."""

import logging

from celery import Celery

from schemas.catalog import Catalog
from schemas.errors import ConfigError
from schemas.queues import (
    CALLBACK_QUEUE,
    CONTROL_QUEUE,
    DELIVER_CALLBACK,
    RETENTION,
    SWEEP,
    TRAIN_QUEUE,
    lane_queues,
)
from schemas.settings import Settings
from schemas.stack import Endpoints, broker_transport_options, require_broker
from workers.callback_task import register_callback_task
from workers.chunk_task import WorkerState, register_chunk_task
from workers.retention_task import register_retention
from workers.sweeper import register_sweep
from workers.training.run_task import register_training
from workers.vanished_broker import tolerate_a_vanished_broker

log = logging.getLogger("sluice.worker")


def worker_queues(catalog: Catalog) -> list[str]:
    """Every queue a worker may consume: one per modality the catalog's tasks use, the
    control queue (sweeps), training and callbacks (their own thread pool consumes those).
    (Each modality queue is consumed with all its fair share lanes: consumed_queues.)"""
    return sorted({*catalog.queues(), CONTROL_QUEUE, TRAIN_QUEUE, CALLBACK_QUEUE})


def consumed_queues(named: list[str], catalog: Catalog, lanes: int) -> list[str]:
    """The queues a worker asked for `named` consumes: a modality queue with every lane of it
    (`sluice.text` -> `sluice.text`, `sluice.text.1`, ...), so a job on any lane is served."""
    modality = set(catalog.queues())
    out: list[str] = []
    for queue in named:
        for name in lane_queues(queue, lanes) if queue in modality else [queue]:
            if name not in out:
                out.append(name)
    return out


def check_delivery(settings: Settings) -> None:
    """Fail fast: a visibility timeout shorter than a chunk may run makes Redis hand a
    running chunk to a second worker."""
    if settings.visibility_timeout <= settings.chunk_time_limit:
        raise ConfigError(
            f"SLUICE_VISIBILITY_TIMEOUT ({settings.visibility_timeout}s) must be longer than "
            f"SLUICE_CHUNK_TIME_LIMIT ({settings.chunk_time_limit}s); raise the timeout or "
            "lower the limit"
        )


def create_app(settings: Settings, endpoints: Endpoints) -> Celery:
    check_delivery(settings)
    tolerate_a_vanished_broker()
    app = Celery("sluice", broker=require_broker(endpoints), set_as_current=True)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=True,  # the ledger is the result store
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.chunk_time_limit,
        task_soft_time_limit=max(1, settings.chunk_time_limit - 5),
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=CONTROL_QUEUE,
        task_routes={DELIVER_CALLBACK: {"queue": CALLBACK_QUEUE}},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,  # Ray needs real file descriptors
        beat_schedule={
            "sluice-sweep": {
                "task": SWEEP,
                "schedule": settings.sweep_interval,
                "options": {"queue": CONTROL_QUEUE, "expires": settings.sweep_interval},
            },
            "sluice-retention": {
                "task": RETENTION,
                "schedule": settings.retention_interval,
                "options": {"queue": CONTROL_QUEUE, "expires": settings.retention_interval},
            },
        },
    )
    state = WorkerState(settings, endpoints)  # one ledger and catalog per process
    register_chunk_task(app, state)
    register_training(app, settings, endpoints)
    register_sweep(app, state)
    register_retention(app, state)
    register_callback_task(app, state)
    return app
