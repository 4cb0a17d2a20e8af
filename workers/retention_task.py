"""The beat task that removes jobs whose retention has passed (issue 22), apart from the
sweep: deleting a large job's rows never delays the resending of lost chunks."""

import logging

from celery import Celery

from schemas.queues import CONTROL_QUEUE, RETENTION
from storage.erasure import Erasure
from storage.openai_files import OpenAIFiles
from workers.chunk_task import WorkerState

log = logging.getLogger("sluice.retention")
BUDGET_S = 30.0  # of removing per run: the next run takes the rest


def register_retention(app: Celery, state: WorkerState) -> None:
    @app.task(name=RETENTION, queue=CONTROL_QUEUE)
    def retention_task() -> dict[str, object]:
        erasure = Erasure(state.ledger.engine, state.store.stamp_if_present, state.store.remove)
        erased = erasure.expire(BUDGET_S)
        if erased.jobs:
            log.info("retention: removed %d jobs (%d rows)", len(erased.jobs), erased.rows)
        # files uploaded for OpenAI batches live for their tenant's period from upload
        files = OpenAIFiles(state.ledger.engine, state.store).expire()
        if files:
            log.info("retention: removed %d uploaded files", files)
        return {**erased.as_dict(), "files": files}
