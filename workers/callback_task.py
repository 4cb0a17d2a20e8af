"""The Celery task that sends one callback: one attempt, on the sluice.callbacks queue.

It runs in the callback pool (threads, SLUICE_CALLBACK_CONCURRENCY of them; started by
`sluice worker`, see ops/callback_worker.py), never in the inference pool: a receiver that
answers slowly holds one of those threads, for at most SLUICE_CALLBACK_TIMEOUT.
"""

import threading

from celery import Celery

from schemas.queues import CALLBACK_QUEUE, DELIVER_CALLBACK
from storage.ledger import Ledger
from workers.callback_delivery import attempt_delivery
from workers.chunk_task import WorkerState

_first_use = threading.Lock()


def shared_ledger(state: WorkerState) -> Ledger:
    """The process's ledger, made once even when several threads ask at the same moment."""
    with _first_use:
        return state.ledger


def register_callback_task(app: Celery, state: WorkerState) -> None:
    # Acked on receipt: a lost attempt is not lost work, the ledger's hold on it runs out and
    # a sweep schedules it again; a redelivered message would only be refused by the claim.
    @app.task(name=DELIVER_CALLBACK, queue=CALLBACK_QUEUE, acks_late=False, ignore_result=True)
    def deliver_callback(job_id: str, attempts: int | None = None) -> str | None:
        return attempt_delivery(shared_ledger(state), state.settings, job_id, attempts)
