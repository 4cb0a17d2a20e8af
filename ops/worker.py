"""Running the Celery worker and the sweeper from the CLI."""

import os
import socket
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from schemas.settings import Settings
from schemas.stack import Endpoints, endpoints

if TYPE_CHECKING:
    from workers.runtime.ray_identity import Probe


def run_worker(
    settings: Settings,
    beat: bool = False,
    concurrency: int | None = None,
    queues: list[str] | None = None,
) -> None:
    from schemas.catalog import load_catalog
    from schemas.errors import ConfigError
    from workers.celery_app import consumed_queues, create_app, worker_queues

    where = endpoints(settings)
    ray_probe = start_ray_probe(where, queues)  # runs while the catalog and schema are read
    try:
        catalog = load_catalog(settings.task_modules)
        known = worker_queues(catalog)
        unknown = sorted(set(queues or []) - set(known))
        if unknown:
            raise ConfigError(f"unknown queues {unknown}; Sluice's queues are: {', '.join(known)}")
        from storage.engine import make_engine, require_current_schema

        engine = make_engine(where.database_url)
        try:  # before consuming anything: a worker of another schema version must not start
            require_current_schema(engine)
            app = create_app(settings, where)  # its own settings checked before the cluster's
            check_cluster(settings, where, engine, queues or known, ray_probe)
        finally:
            engine.dispose()
    finally:
        if ray_probe is not None:
            ray_probe.cancel()
    from ops.callback_worker import callback_pool_beside, run_callback_pool
    from schemas.queues import CALLBACK_QUEUE

    beat_argv = []
    if beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        beat_argv = ["--beat", f"--schedule={settings.data_dir / 'beat-schedule'}"]
    # Callbacks have their own pool of threads, so a slow receiver never holds an inference
    # slot: started beside this worker, or alone with `-Q sluice.callbacks`.
    chosen = queues or known
    inference = [q for q in chosen if q != CALLBACK_QUEUE]
    if not inference:
        run_callback_pool(app, settings, beat_argv)
        return
    argv = [
        "worker",
        "--loglevel=INFO",
        "--pool=prefork",
        f"--queues={','.join(consumed_queues(inference, catalog, settings.fair_lanes))}",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--hostname=sluice-{os.getpid()}@{socket.gethostname()}",
        "--without-gossip",
        "--without-mingle",
        *beat_argv,
    ]
    with callback_pool_beside(settings, wanted=CALLBACK_QUEUE in chosen):
        app.worker_main(argv)


def start_ray_probe(where: Endpoints, queues: list[str] | None) -> "Probe | None":
    """The identity of the Ray this worker's processes will join, read by a process started
    now (none for a private Ray, or a worker of the callback pool alone)."""
    from schemas.queues import CALLBACK_QUEUE
    from workers.cluster_guard import PRIVATE
    from workers.runtime.ray_identity import Probe

    if where.ray_address in (None, PRIVATE) or (queues and set(queues) == {CALLBACK_QUEUE}):
        return None
    return Probe(where.ray_address, where.ray_auth_token_path)


def check_cluster(
    settings: Settings,
    where: Endpoints,
    engine: Engine,
    consumed: list[str],
    ray_probe: "Probe | None" = None,
) -> None:
    """Before consuming anything: a worker whose ledger is not the broker's cluster's (no
    SLUICE_DATABASE_URL on this host), or whose Ray is not the one the cluster's models run
    on (no SLUICE_RAY_ADDRESS), must not start (ClusterMismatchError, its message says what
    to set). A worker of the callback pool alone never joins Ray."""
    from schemas.queues import CALLBACK_QUEUE
    from storage.cluster_identity import require_same_cluster
    from workers.cluster_guard import check_at_start

    require_same_cluster(engine, where.broker_url)
    if any(queue != CALLBACK_QUEUE for queue in consumed):
        check_at_start(settings, where, engine, ray_probe)


def sweep_now(settings: Settings) -> dict[str, Any]:
    from producers import Client
    from producers.dispatch import CeleryDispatcher
    from workers.callback_delivery import callback_sender
    from workers.sweeper import sweep_all

    dispatcher = CeleryDispatcher(endpoints(settings).broker_url, settings)
    client = Client(settings, dispatcher)

    def send(chunk_id: str, queue: str, priority: int) -> None:
        dispatcher.send_chunks([chunk_id], queue, priority)

    return sweep_all(
        client.ledger,
        settings,
        client.endpoints,
        client.catalog,
        send,
        dispatcher.send_training,
        callback_sender(dispatcher.app),
    )
