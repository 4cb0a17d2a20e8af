"""Send Celery tasks by name: producers never import the worker code."""

from collections.abc import Iterable
from functools import cached_property

from celery import Celery

from schemas.errors import ConfigError
from schemas.queues import PROCESS_CHUNK, TRAIN_QUEUE, TRAIN_TASK, lane_queue
from schemas.settings import Settings
from schemas.stack import NO_BROKER, broker_transport_options, redis_priority


class Dispatcher:
    def __init__(self, broker_url: str | None, settings: Settings) -> None:
        self.broker_url = broker_url
        self.settings = settings

    @cached_property
    def app(self) -> Celery:
        if self.broker_url is None:
            raise ConfigError(NO_BROKER)
        app = Celery("sluice-producer", broker=self.broker_url, set_as_current=False)
        app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_transport_options=broker_transport_options(self.settings),
            broker_connection_retry_on_startup=True,
        )
        return app

    def queue_for(self, queue: str, lane: int) -> str:
        """The lane queue a job on `lane` of modality queue `queue` sends to (fair share)."""
        return lane_queue(queue, lane, self.settings.fair_lanes)

    def send_job_chunks(
        self, chunk_ids: Iterable[str], queue: str, lane: int, priority: int = 5
    ) -> int:
        """Send a job's chunks to its lane of `queue` (its modality queue)."""
        return self.send_chunks(chunk_ids, self.queue_for(queue, lane), priority)

    def send_chunks(self, chunk_ids: Iterable[str], queue: str, priority: int = 5) -> int:
        n = 0
        with self.app.producer_or_acquire() as producer:
            for chunk_id in chunk_ids:
                self.app.send_task(
                    PROCESS_CHUNK,
                    args=[chunk_id],
                    queue=queue,
                    priority=redis_priority(priority),
                    producer=producer,
                )
                n += 1
        return n

    def send_training(self, run_id: str) -> None:
        self.app.send_task(TRAIN_TASK, args=[run_id], queue=TRAIN_QUEUE)
