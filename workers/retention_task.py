"""The beat task that removes jobs whose retention has passed (issue 22), apart from the
sweep: deleting a large job's rows never delays the resending of lost chunks."""

import logging

from celery import Celery

from schemas.errors import ObjectStoreError
from schemas.queues import CONTROL_QUEUE, RETENTION
from storage.erasure import Erasure
from workers.chunk_task import WorkerState

log = logging.getLogger("sluice.retention")
BUDGET_S = 30.0  # of removing per run: the next run takes the rest


def export_stamp(state: WorkerState, uri: str) -> str | None:
    try:
        return state.store.info(uri).stamp
    except ObjectStoreError:
        if state.store.exists(uri):
            raise
        return None


def register_retention(app: Celery, state: WorkerState) -> None:
    @app.task(name=RETENTION, queue=CONTROL_QUEUE)
    def retention_task() -> dict[str, object]:
        erasure = Erasure(
            state.ledger.engine, lambda uri: export_stamp(state, uri), state.store.remove
        )
        erased = erasure.expire(BUDGET_S)
        if erased.jobs:
            log.info("retention: removed %d jobs (%d rows)", len(erased.jobs), erased.rows)
        return erased.as_dict()
