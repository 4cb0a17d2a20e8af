"""/v1/jobs/...: follow a job (status, list, results), cancel it, retry its failed items;
/v1/models and /v1/registry."""

import os
import tempfile
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from producers.api.bodies import JobList, JobOut, ModelOut, ResultsPage
from producers.api.params import IdempotencyKey, Principal
from producers.api.responses import AUTHENTICATED, errors
from producers.api.services import Services, services
from schemas.errors import (
    JobNotFoundError,
    ObjectStoreError,
    PurgeRefusedError,
    RetryRefusedError,
    SluiceError,
)
from storage import export
from storage.ledger import JobView

router = APIRouter(prefix="/v1", tags=["jobs"])
Format = Literal["json", "jsonl", "csv", "parquet"]
MEDIA = {
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "text/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
}
# Job ids are 32 hex digits (jobs.id); anything else names no job.
JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")]
MAX_SEQ = 2**63 - 1  # results.seq is a 64-bit integer
LOCATION = {"Location": {"description": "the new job's URL", "schema": {"type": "string"}}}


def job_out(svc: Services, view: JobView) -> dict[str, Any]:
    d = view.as_dict()
    keep = {k: d[k] for k in JobOut.model_fields if k in d}
    return {
        **keep,
        "parent_job_id": view.parent_job_id,
        "callback": svc.callbacks.get(view.id) if view.callback_url else None,
    }


@router.get("/jobs", response_model=JobList, responses=errors(*AUTHENTICATED))
def list_jobs(
    request: Request, key: Principal, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> dict[str, Any]:
    svc = services(request)
    return {"jobs": [job_out(svc, v) for v in svc.reads.jobs(key.tenant, limit)]}


@router.get("/jobs/{job_id}", response_model=JobOut, responses=errors(*AUTHENTICATED, 404))
def get_job(job_id: JobId, request: Request, key: Principal) -> dict[str, Any]:
    """Status, counts, timestamps, model version (404 for an id of another tenant)."""
    svc = services(request)
    return job_out(svc, svc.reads.job(key.tenant, job_id))


@router.get(
    "/jobs/{job_id}/results",
    response_model=ResultsPage,
    responses={
        200: {
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            }
        },
        **errors(*AUTHENTICATED, 404),
    },
)
def get_results(
    job_id: JobId,
    request: Request,
    key: Principal,
    format: Format | None = None,
    cursor: Annotated[
        int, Query(ge=-1, le=MAX_SEQ, description="`next_cursor` of the page before")
    ] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """A page of results in input order (JSON, `?cursor=` from `next_cursor`), or all of them
    streamed: `Accept: application/x-ndjson` (or `text/csv`, or Parquet), or `?format=`."""
    svc = services(request)
    svc.reads.job(key.tenant, job_id)
    fmt: str = format or next(
        (f for media, f in MEDIA.items() if media in request.headers.get("accept", "")), "json"
    )
    rows = svc.client.ledger.iter_results(job_id, lineage=True)  # exports carry lineage
    if fmt == "jsonl":
        return StreamingResponse(export.iter_jsonl(rows), media_type="application/x-ndjson")
    if fmt == "csv":
        return StreamingResponse(
            export.iter_csv(rows),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{job_id}.csv"'},
        )
    if fmt == "parquet":
        fd, path = tempfile.mkstemp(suffix=".parquet")
        os.close(fd)
        export.write_parquet(rows, path)  # batches to disk, never all rows in memory
        return FileResponse(
            path,
            media_type="application/vnd.apache.parquet",
            filename=f"{job_id}.parquet",
            background=BackgroundTask(os.unlink, path),
        )
    page = svc.reads.results_page(job_id, cursor, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return {
        "job_id": job_id,
        "items": [row for _, row in page],
        "next_cursor": page[-1][0] if more else None,
    }


@router.delete("/jobs/{job_id}", responses=errors(*AUTHENTICATED, 404, 409, 503))
def delete_job(job_id: JobId, request: Request, key: Principal) -> dict[str, Any]:
    """Purge a finished job: its items, results, explanations, callback record, cache
    entries and the exports Sluice stored go, recorded in the erasure audit (by this key's
    id). 409 while it runs: cancel it first."""
    svc = services(request)
    svc.reads.job(key.tenant, job_id)
    try:
        return svc.client.purge(job_id, key.tenant, by=f"api-key:{key.id}").as_dict()
    except PurgeRefusedError as exc:
        raise HTTPException(409, str(exc)) from None
    except JobNotFoundError as exc:  # another request purged it meanwhile
        raise HTTPException(404, str(exc)) from None
    except ObjectStoreError as exc:  # a stored export not reachable: nothing was removed
        raise HTTPException(503, f"not purged: {exc}") from None


@router.get(
    "/jobs/{job_id}/results/{item_key:path}/lineage",
    responses=errors(*AUTHENTICATED, 404),
)
def get_lineage(job_id: JobId, item_key: str, request: Request, key: Principal) -> dict[str, Any]:
    """What made one row (storage/lineage.py): its input's keyed digest (HMAC-SHA256 with
    the tenant's secret), the model, its version and weights' SHA-256, its registry entry and
    DP budget, Sluice's version, the explainer and its steps, the redaction applied."""
    svc = services(request)
    svc.reads.job(key.tenant, job_id)
    try:
        return svc.client.lineage(job_id, item_key, key.tenant)
    except SluiceError as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=errors(*AUTHENTICATED, 404))
def cancel_job(job_id: JobId, request: Request, key: Principal) -> dict[str, Any]:
    svc = services(request)
    svc.reads.job(key.tenant, job_id)
    return job_out(svc, svc.client.cancel(job_id))


@router.post(
    "/jobs/{job_id}/retry",
    status_code=201,
    response_model=JobOut,
    responses={
        201: {"description": "the retry job, recorded and queued", "headers": LOCATION},
        200: {"model": JobOut, "description": "an Idempotency-Key seen before: that job"},
        **errors(*AUTHENTICATED, 404, 409, 429, 503),
    },
)
def retry_job(
    job_id: JobId, request: Request, key: Principal, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Re-run only the items that ended `error`, as a new job (its `parent_job_id` is this
    one), with the same task, model version, parameters and callback."""
    svc = services(request)
    svc.reads.job(key.tenant, job_id)  # 404 for another tenant's job, before anything else
    if idempotency_key and (seen := svc.reads.by_idempotency_key(key.tenant, idempotency_key)):
        return JSONResponse(job_out(svc, svc.reads.job(key.tenant, seen)), status_code=200)
    try:
        new_id = svc.client.retry(job_id, key.tenant, idempotency_key, api_key_id=key.id)
    except RetryRefusedError as exc:
        raise HTTPException(409, str(exc)) from None
    return JSONResponse(
        job_out(svc, svc.reads.job(key.tenant, new_id)),
        status_code=201,
        headers={"Location": f"/v1/jobs/{new_id}"},
    )


@router.get("/models", response_model=list[ModelOut], tags=["models"], responses=errors(401))
def list_models(request: Request, key: Principal) -> list[dict[str, Any]]:
    """The models (and versions) this tenant's jobs have used."""
    return services(request).reads.models(key.tenant)


OWNER_ONLY = ("uri", "tenant", "training_run_id", "data_fingerprint")


@router.get("/registry", tags=["models"], responses=errors(401))
def list_registered(request: Request, key: Principal) -> list[dict[str, Any]]:
    """This tenant's registered model versions (`sluice train --tenant`) and those shared
    with it (`shared: true`): stage, held-out metrics beside the classical baseline's
    (`metrics.baseline`; `below_baseline` says when the model is worse), SHA-256, DP
    budget, and for its own the training run and data fingerprint. Jobs name them
    `NAME@VERSION`, `NAME@production`."""
    registry = services(request).client.registry
    own = registry.list(tenant=key.tenant)
    return [
        {
            **{k: v for k, v in vars(view).items() if k not in hidden},
            "ref": view.ref,
            "below_baseline": view.below_baseline,
            "shared": shared,
            "created_at": view.created_at.isoformat(),
            "updated_at": view.updated_at.isoformat(),
        }
        for view in [*own, *registry.shared_with(key.tenant)]
        for shared in [view.tenant != key.tenant]
        # an owner's run and data stay the owner's business
        for hidden in [OWNER_ONLY if shared else ("uri", "tenant")]
    ]
