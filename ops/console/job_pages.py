"""One job in the console: counts and live progress, failures grouped by message, the chunk
timeline, results (filtered by status, label and score, paged) beside their explanations,
downloads in every export format, cancel and retry of the failed rows."""

import os
import secrets
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from markupsafe import Markup
from starlette.background import BackgroundTask

from ops.console.guard import CheckedAction, Visitor
from ops.console.progress_view import progress_of
from ops.console.render import page, svc
from ops.report import drawing_for, items_of, row_html, write_html
from producers.api.job_control import MAX_SEQ
from schemas.errors import RetryRefusedError
from schemas.states import ItemStatus
from storage import export
from storage.job_insight import JobInsight, ResultFilter

router = APIRouter(prefix="/console")
PAGE_ROWS = 25
HTML_REPORT_ROWS = 1000
DOWNLOADS = ("jsonl", "csv", "parquet", "html")
MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


def insight(request: Request) -> JobInsight:
    return request.app.state.console_insight  # type: ignore[no-any-return]


def _number(text: str) -> float | None:
    try:
        return float(text) if text.strip() else None
    except ValueError:
        return None


@router.get("/jobs/{job_id}")
def job_page(
    request: Request,
    job_id: str,
    signed: Visitor,
    status: Annotated[str, Query(max_length=16)] = "",
    label: Annotated[str, Query(max_length=200)] = "",
    score_min: Annotated[str, Query(max_length=32)] = "",
    score_max: Annotated[str, Query(max_length=32)] = "",
    after: Annotated[int, Query(ge=-1, le=MAX_SEQ)] = -1,
) -> Response:
    s = svc(request)
    view = s.reads.job(signed.key.tenant, job_id)  # 404 for another tenant's job
    where = ResultFilter(
        status=status if status in {v.value for v in ItemStatus} else None,
        label=label or None,
        score_min=_number(score_min),
        score_max=_number(score_max),
    )
    found = insight(request).results(job_id, after, PAGE_ROWS, where)
    drawing = drawing_for(s.client, view.task)
    shown = {row["key"] for row in found.rows}
    items = items_of(s.client, job_id, shown) if drawing.needs_items else {}
    rows = [
        Markup(row_html(row, drawing.adapter, items.get(row["key"]), s.client, drawing.shape))
        for row in found.rows
    ]
    phases, chunks = insight(request).timeline(job_id)
    query = {
        "status": where.status or "",
        "label": label,
        "score_min": score_min,
        "score_max": score_max,
    }
    return page(
        request,
        "job.html",
        signed,
        job=view,
        progress=progress_of(view),
        errors=insight(request).error_groups(job_id),
        phases=phases,
        chunks=chunks,
        rows=rows,
        next_cursor=found.next_cursor,
        query=query,
        statuses=[v.value for v in ItemStatus],
        downloads=DOWNLOADS,
        retryable=view.status.finished and view.counts.error > 0,
        once=f"console-retry-{secrets.token_urlsafe(16)}",
    )


@router.get("/jobs/{job_id}/download/{fmt}")
def download(request: Request, job_id: str, fmt: str, signed: Visitor) -> Response:
    s = svc(request)
    s.reads.job(signed.key.tenant, job_id)
    if fmt not in DOWNLOADS:
        raise HTTPException(404, f"no such format: use one of {', '.join(DOWNLOADS)}")
    attachment = {"Content-Disposition": f'attachment; filename="{job_id}.{fmt}"'}
    if fmt in MEDIA:
        rows = s.client.ledger.iter_results(job_id, lineage=True)
        body = export.iter_jsonl(rows) if fmt == "jsonl" else export.iter_csv(rows)
        return StreamingResponse(body, media_type=MEDIA[fmt], headers=attachment)
    fd, path = tempfile.mkstemp(suffix=f".{fmt}")
    os.close(fd)
    if fmt == "parquet":
        export.write_parquet(s.client.ledger.iter_results(job_id, lineage=True), path)
        media = "application/vnd.apache.parquet"
    else:
        write_html(s.client, job_id, Path(path), HTML_REPORT_ROWS)
        media = "text/html"
    return FileResponse(
        path,
        media_type=media,
        filename=f"{job_id}.{fmt}",
        background=BackgroundTask(os.unlink, path),
    )


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str, checked: CheckedAction) -> RedirectResponse:
    s = svc(request)
    s.reads.job(checked.key.tenant, job_id)
    s.client.cancel(job_id)
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303)


@router.post("/jobs/{job_id}/retry")
def retry(
    request: Request,
    job_id: str,
    checked: CheckedAction,
    once: Annotated[str | None, Form(max_length=64)] = None,
) -> RedirectResponse:
    """`once`: the form's own idempotency key, so a form sent twice makes one retry job."""
    s = svc(request)
    s.reads.job(checked.key.tenant, job_id)
    try:
        new_id = s.client.retry(job_id, checked.key.tenant, once or None, api_key_id=checked.key.id)
    except RetryRefusedError as exc:
        raise HTTPException(409, str(exc)) from None
    return RedirectResponse(f"/console/jobs/{new_id}", status_code=303)
