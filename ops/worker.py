"""Running the Celery worker and the sweeper from the CLI."""

import os
import socket
from typing import Any

from schemas.settings import Settings
from schemas.stack import endpoints, require_broker


def run_worker(
    settings: Settings,
    beat: bool = False,
    concurrency: int | None = None,
    queues: list[str] | None = None,
) -> None:
    from schemas.errors import ConfigError
    from workers.celery_app import create_app, worker_queues

    known = worker_queues()
    unknown = sorted(set(queues or []) - set(known))
    if unknown:
        raise ConfigError(f"unknown queues {unknown}; Sluice's queues are: {', '.join(known)}")
    app = create_app(settings, endpoints(settings))
    argv = [
        "worker",
        "--loglevel=INFO",
        "--pool=prefork",
        f"--queues={','.join(queues or known)}",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--hostname=sluice-{os.getpid()}@{socket.gethostname()}",
        "--without-gossip",
        "--without-mingle",
    ]
    if beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={settings.data_dir / 'beat-schedule'}"]
    app.worker_main(argv)


def sweep_now(settings: Settings) -> dict[str, Any]:
    from producers import Client
    from workers.sweeper import sweep_once

    client = Client(settings)

    def send(chunk_id: str, queue: str, priority: int) -> None:
        client.dispatcher.send_chunks([chunk_id], queue, priority)

    report = sweep_once(client.ledger, settings, require_broker(client.endpoints), send)
    from schemas.training import TRAIN_QUEUE
    from workers.sweeper import BrokerProbe
    from workers.training.task import resend_training

    broker = require_broker(client.endpoints)
    report.resent += resend_training(
        settings,
        client.endpoints.database_url,
        client.dispatcher.send_training,
        lambda: BrokerProbe(broker).is_empty(TRAIN_QUEUE),
    )
    from workers.callbacks import deliver_due

    return {**report.as_dict(), "callbacks": deliver_due(client.ledger, settings)}
