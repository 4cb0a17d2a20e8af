"""The console's job list: status, counts, a live progress bar with rows/s and ETA, filters
by status and task; and the progress the page's script polls."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ops.console.guard import Visitor
from ops.console.progress_view import progress_of
from ops.console.render import page, svc
from schemas.errors import JobNotFoundError
from schemas.states import JobStatus

router = APIRouter(prefix="/console")
LISTED = 100


@router.get("/jobs")
def jobs_page(
    request: Request,
    signed: Visitor,
    status: Annotated[str, Query(max_length=32)] = "",
    task: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    s = svc(request)
    chosen = status if status in {v.value for v in JobStatus} else None
    views = s.reads.every_tenants_jobs(signed.key.tenant, LISTED, chosen, task or None)
    return page(
        request,
        "jobs.html",
        signed,
        jobs=[(v, progress_of(v)) for v in views],
        statuses=[v.value for v in JobStatus],
        tasks=sorted(s.client.catalog.names()),
        status=chosen or "",
        task=task,
    )


@router.get("/progress.json")
def progress(
    request: Request,
    signed: Visitor,
    ids: Annotated[list[str], Query(max_length=LISTED)] = [],  # noqa: B006 (FastAPI's idiom)
) -> dict[str, Any]:
    reads = svc(request).reads
    out: dict[str, Any] = {}
    for job_id in ids[:LISTED]:
        try:
            out[job_id] = progress_of(reads.job(signed.key.tenant, job_id))
        except JobNotFoundError:
            continue  # another tenant's, or purged: nothing to say
    return {"jobs": out}
