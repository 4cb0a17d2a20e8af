"""How producers hand work to the workers: the Dispatcher interface, and the Celery one that
sends tasks by name (producers never import the worker code). A test, or a program that sends
no message, gives Client a RecordingDispatcher (producers/dispatch_recording.py) instead."""

from collections.abc import Iterable
from functools import cached_property
from typing import Protocol

from celery import Celery

from schemas.errors import ConfigError
from schemas.queues import PROCESS_CHUNK, TRAIN_QUEUE, TRAIN_TASK, lane_queue
from schemas.settings import Settings
from schemas.stack import NO_BROKER, broker_transport_options, redis_priority


class Dispatcher(Protocol):
    """What a Client sends through. A send that fails raises (any exception): the job or run
    is already recorded, and the sweeper sends it later."""

    def send_job_chunks(
        self, chunk_ids: Iterable[str], queue: str, lane: int, priority: int = 5
    ) -> int:
        """Send a new job's chunks on its fair-share `lane` of modality queue `queue`;
        returns how many were sent."""
        ...

    def send_chunks(self, chunk_ids: Iterable[str], queue: str, priority: int = 5) -> int:
        """Send chunks to exactly `queue` (a lane queue already: the sweeper's re-sends)."""
        ...

    def send_training(self, run_id: str) -> None:
        """Send a recorded training run to the training queue."""
        ...


class CeleryDispatcher:
    """The Dispatcher of a running system: Celery messages by task name, JSON only."""

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
