"""/v1/jobs: submit (JSON items, a file upload or a SQL source), follow, results, cancel,
retry; /v1/models."""

import copy
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from producers.adapters import adapter_for
from producers.api.auth import principal
from producers.api.bodies import (
    JobList,
    JobOptions,
    JobOut,
    JobRequest,
    ModelOut,
    RequestBodies,
    ResultsPage,
)
from producers.api.services import Services, services
from producers.readers import capped, detect_format, read_rows
from schemas.catalog import Catalog
from schemas.errors import SluiceError, TooManyItemsError
from schemas.jobs import Item, JobSpec
from schemas.task_spec import field_kind, parse_param_text
from storage import export
from storage.apikeys import ApiKeyInfo
from storage.ledger import JobView
from storage.row_sources import declared_rows

router = APIRouter(prefix="/v1", tags=["jobs"])
Principal = Annotated[ApiKeyInfo, Depends(principal)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]
Format = Literal["json", "jsonl", "csv", "parquet"]
MEDIA = {
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "text/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
}
# The multipart form's own fields; each task parameter of the catalog is a field too.
OPTION_FIELDS = ("task", "model", "explain", "priority", "callback_url")
UPLOAD_FIELDS = (*OPTION_FIELDS, "text_column", "key_column", "media_column")


def job_out(svc: Services, view: JobView) -> dict[str, Any]:
    d = view.as_dict()
    keep = {k: d[k] for k in JobOut.model_fields if k in d}
    return {
        **keep,
        "parent_job_id": view.parent_job_id,
        "callback": svc.callbacks.get(view.id) if view.callback_url else None,
    }


def check_callback_url(url: str | None) -> None:
    if url is None:
        return
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SluiceError(f"callback_url {url!r} must be an http(s) URL")


# -- submit -------------------------------------------------------------------------------------


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobOut,
    responses={200: {"description": "an Idempotency-Key seen before: that job"}},
)
async def create_job(
    request: Request, key: Principal, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """A job from inline items (JSON), a file upload (multipart: `file` plus the options as
    form fields) or a SQL `source`. The body schema is JobRequest (JSON) or the multipart
    form; see the request body below."""
    svc = services(request)
    if idempotency_key:
        seen = await run_in_threadpool(svc.reads.by_idempotency_key, key.tenant, idempotency_key)
        if seen:
            return await _replay(svc, key, seen)
    ctype = request.headers.get("content-type", "application/json")
    if ctype.startswith("multipart/form-data"):
        options, items, source = await _from_upload(request, svc)
    elif ctype.startswith("application/json"):
        try:
            body = svc.bodies.job.model_validate_json(await request.body())
        except ValidationError as exc:
            if any(e["type"] == "too_long" and e["loc"][:1] == ("items",) for e in exc.errors()):
                cap = svc.settings.api_max_items
                raise TooManyItemsError("items", cap, "SLUICE_API_MAX_ITEMS") from None
            raise RequestValidationError(exc.errors()) from None
        options = body
        items, source = await run_in_threadpool(_from_json, body, svc)
    else:
        raise HTTPException(415, "send application/json or multipart/form-data")
    try:
        job_id = await run_in_threadpool(submit, svc, key, options, items, source, idempotency_key)
    except IntegrityError:  # the same Idempotency-Key, submitted concurrently
        seen = svc.reads.by_idempotency_key(key.tenant, idempotency_key or "")
        if not seen:
            raise
        return await _replay(svc, key, seen)
    view = await run_in_threadpool(svc.reads.job, key.tenant, job_id)
    return JSONResponse(
        job_out(svc, view), status_code=201, headers={"Location": f"/v1/jobs/{job_id}"}
    )


async def _replay(svc: Services, key: ApiKeyInfo, job_id: str) -> JSONResponse:
    view = await run_in_threadpool(svc.reads.job, key.tenant, job_id)
    return JSONResponse(
        job_out(svc, view),
        status_code=200,
        headers={"Location": f"/v1/jobs/{job_id}", "Idempotent-Replayed": "true"},
    )


def submit(
    svc: Services,
    key: ApiKeyInfo,
    options: JobOptions,
    items: list[Item],
    source: str,
    idempotency_key: str | None,
    **extra: Any,
) -> str:
    check_callback_url(options.callback_url)
    return svc.client.submit_items(
        items,
        options.task,
        model=options.model,
        explain=options.explain,
        priority=options.priority,
        source=source,
        tenant=key.tenant,
        api_key_id=key.id,
        callback_url=options.callback_url,
        idempotency_key=idempotency_key,
        **options.task_params(svc.client.catalog),
        **extra,
    )


def _from_json(body: JobRequest, svc: Services) -> tuple[list[Item], str]:
    if (body.items is None) == (body.source is None):
        raise SluiceError("give exactly one of `items` (inline) or `source` (a SQL table)")
    if body.source is not None:
        return _from_sql(body, svc)
    raw = [{"text": it} if isinstance(it, str) else it.model_dump() for it in body.items or []]
    keyed = [r.get("key") is not None for r in raw]
    if any(keyed) and not all(keyed):
        raise SluiceError("give every item a `key`, or none (they are then numbered 1, 2, ...)")
    adapter = adapter_for(svc.client.catalog.get(body.task).modality)
    rows = [
        {**adapter.body_fields(r, n), "key": str(r["key"]) if all(keyed) else str(n)}
        for n, r in enumerate(raw, 1)
    ]
    columns = sorted({c for r in rows for c in r}) or ["key", "text"]
    items = svc.client.items_from_rows(
        columns, iter(rows), body.task, model=body.model, key_column="key", source="items"
    )
    return items, "api"


def _from_sql(body: JobRequest, svc: Services) -> tuple[list[Item], str]:
    from producers.enrich import Condition, SourceSpec, read_rows
    from storage.engine import make_engine

    src = body.source
    assert src is not None
    url = svc.settings.api_sql_sources.get(src.name)
    if url is None:
        known = ", ".join(sorted(svc.settings.api_sql_sources)) or "none configured"
        raise SluiceError(f"unknown SQL source {src.name!r} (SLUICE_API_SQL_SOURCES: {known})")
    spec = SourceSpec(
        url=url,
        table=src.table,
        key_column=src.key_column,
        text_column=src.text_column,
        media_column=src.media_column,
        where=[Condition(c, "=", v) for c, v in src.where.items()],
    )
    spec.validate()  # before connecting
    # what the task's modality reads of a row: the text, the media column, or (records) the
    # model's feature columns
    ref = svc.client.resolve_model(body.model, body.task)
    adapter = adapter_for(svc.client.catalog.get(body.task).modality)
    spec.selected = adapter.table_columns(
        src.text_column, src.media_column, ref.path if ref.loads else None
    )
    engine = make_engine(url)
    try:
        cap = svc.settings.api_max_items
        _, rows = read_rows(engine, spec, limit=cap + 1)  # never more than cap + 1 read
        columns = ["key", *(name for _, name, _ in spec.selection())]
        items = svc.client.items_from_rows(
            columns,
            capped(rows, cap, f"table {src.table}"),
            body.task,
            ref=ref,
            key_column="key",
            source=src.table,
        )
    finally:
        engine.dispose()
    return items, f"sql:{src.name}#{src.table}"


async def _from_upload(request: Request, svc: Services) -> tuple[JobOptions, list[Item], str]:
    params = svc.client.catalog.parameters()
    allowed = (*UPLOAD_FIELDS, *params)
    form = await request.form(max_files=1, max_fields=len(allowed))
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise SluiceError("multipart upload needs a `file` part (JSONL, CSV or Parquet)")
    name = Path(upload.filename or "upload.jsonl").name
    suffix = Path(name).suffix
    detect_format(Path(name))
    fields = {k: v for k, v in form.items() if k in allowed and isinstance(v, str)}
    raw: dict[str, Any] = {k: fields[k] for k in OPTION_FIELDS if k in fields}
    raw.update(
        {k: parse_param_text(k, params[k][0].annotation, fields[k]) for k in params if k in fields}
    )
    try:
        options = svc.bodies.options.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            while block := await upload.read(1 << 20):
                out.write(block)

        def parse() -> list[Item]:
            cap = svc.settings.api_max_items
            declared = declared_rows(Path(tmp))  # a Parquet file's count, from its metadata
            if declared is not None and declared > cap:
                raise TooManyItemsError(name, cap, "SLUICE_API_MAX_ITEMS")
            columns, rows = read_rows(Path(tmp), limit=cap + 1, source=name)
            return svc.client.items_from_rows(
                columns,
                capped(rows, cap, name),
                options.task,
                model=options.model,
                key_column=fields.get("key_column"),
                text_column=fields.get("text_column", "text"),
                media_column=fields.get("media_column", "path"),
                source=name,
            )

        items = await run_in_threadpool(parse)
    finally:
        os.unlink(tmp)
    return options, items, f"upload:{name}"


# -- follow -------------------------------------------------------------------------------------


@router.get("/jobs", response_model=JobList)
def list_jobs(
    request: Request, key: Principal, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> dict[str, Any]:
    svc = services(request)
    return {"jobs": [job_out(svc, v) for v in svc.reads.jobs(key.tenant, limit)]}


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, request: Request, key: Principal) -> dict[str, Any]:
    """Status, counts, timestamps, model version (404 for an id of another tenant)."""
    svc = services(request)
    return job_out(svc, svc.reads.job(key.tenant, job_id))


@router.get(
    "/jobs/{job_id}/results",
    response_model=ResultsPage,
    responses={
        200: {
            "content": {
                "application/x-ndjson": {},
                "text/csv": {},
                "application/vnd.apache.parquet": {},
            }
        }
    },
)
def get_results(
    job_id: str,
    request: Request,
    key: Principal,
    format: Format | None = None,
    cursor: int = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """A page of results in input order (JSON, `?cursor=` from `next_cursor`), or all of them
    streamed: `Accept: application/x-ndjson` (or `text/csv`, or Parquet), or `?format=`."""
    svc = services(request)
    svc.reads.job(key.tenant, job_id)
    fmt: str = format or next(
        (f for media, f in MEDIA.items() if media in request.headers.get("accept", "")), "json"
    )
    rows = svc.client.ledger.iter_results(job_id)
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


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, request: Request, key: Principal) -> dict[str, Any]:
    svc = services(request)
    svc.reads.job(key.tenant, job_id)
    return job_out(svc, svc.client.cancel(job_id))


@router.post("/jobs/{job_id}/retry", status_code=201, response_model=JobOut)
def retry_job(
    job_id: str, request: Request, key: Principal, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Re-run only the items that ended `error`, as a new job (its `parent_job_id` is this
    one), with the same task, model version, parameters and callback."""
    svc = services(request)
    parent = svc.reads.job(key.tenant, job_id)
    if idempotency_key and (seen := svc.reads.by_idempotency_key(key.tenant, idempotency_key)):
        return JSONResponse(job_out(svc, svc.reads.job(key.tenant, seen)), status_code=200)
    if not parent.status.finished:
        raise HTTPException(409, f"job {job_id} is still {parent.status}; retry it once it ends")
    items = svc.reads.failed_items(job_id)
    if not items:
        raise HTTPException(409, f"job {job_id} has no item that ended `error`")
    spec = JobSpec(
        task=parent.task,
        model=parent.model,
        model_version=parent.model_version,
        params=parent.params,
        explain=parent.explain_policy,
        priority=parent.priority,
        source=f"retry:{job_id}",
        tenant=key.tenant,
        api_key_id=key.id,
        callback_url=parent.callback_url,
        parent_job_id=job_id,
        idempotency_key=idempotency_key,
    )
    task = svc.client.catalog.get(parent.task)
    chunk_size = svc.settings.chunk_size or task.chunk_size
    new_id, chunk_ids = svc.client.ledger.create_job(spec, items, chunk_size)
    try:
        svc.client.dispatcher.send_chunks(chunk_ids, task.queue, parent.priority)
    except Exception as exc:  # kombu raises several types for an unreachable broker
        raise SluiceError(
            f"retry job {new_id} is recorded but could not be queued "
            f"({type(exc).__name__}); the sweeper sends it once the broker "
            "answers"
        ) from exc
    return JSONResponse(
        job_out(svc, svc.reads.job(key.tenant, new_id)),
        status_code=201,
        headers={"Location": f"/v1/jobs/{new_id}"},
    )


@router.get("/models", response_model=list[ModelOut], tags=["models"])
def list_models(request: Request, key: Principal) -> list[dict[str, Any]]:
    """The models (and versions) this tenant's jobs have used."""
    return services(request).reads.models(key.tenant)


# -- the published request body -----------------------------------------------------------------


def upload_schema(catalog: Catalog) -> dict[str, Any]:
    """The multipart form: the file, the job's options, and every task parameter as text
    (lists comma-separated, objects as JSON)."""
    schema = copy.deepcopy(UPLOAD_SCHEMA)
    for name, (field, tasks) in catalog.parameters().items():
        kind = field_kind(field.annotation)
        how = {list: "; comma-separated", dict: "; JSON"}.get(kind, "")
        schema["properties"][name] = {
            "type": {int: "integer", float: "number", bool: "boolean"}.get(kind, "string"),
            "description": f"{field.description or name} (tasks: {', '.join(tasks)}){how}",
        }
    return schema


UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file", "task"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "a .jsonl, .csv or .parquet file",
        },
        "task": {"type": "string"},
        "model": {"type": "string"},
        "explain": {"type": "string"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 9},
        "callback_url": {"type": "string"},
        "text_column": {"type": "string"},
        "key_column": {"type": "string"},
        "media_column": {
            "type": "string",
            "description": "images/audio: the column of "
            "paths under the server's input roots, file:// or data: URIs",
        },
    },
}


def document_request_bodies(app: FastAPI, bodies: RequestBodies) -> None:
    """POST /v1/jobs and /v1/events read their bodies themselves (their models carry the
    catalog's task parameters); publish their shapes."""
    catalog = app.state.sluice.client.catalog

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, model in (("JobRequest", bodies.job), ("EventRequest", bodies.event)):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[name] = body
        schema["paths"]["/v1/jobs"]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
                "multipart/form-data": {"schema": upload_schema(catalog)},
            },
        }
        schema["paths"]["/v1/events"]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/EventRequest"}}
            },
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


@router.get("/registry", tags=["models"])
def list_registered(request: Request, key: Principal) -> list[dict[str, Any]]:
    """This tenant's registered model versions (`sluice train`): stage, held-out metrics,
    SHA-256, data fingerprint and DP budget. Jobs name them `NAME@VERSION`, `NAME@production`."""
    return [
        {
            **{k: v for k, v in vars(view).items() if k not in ("uri", "tenant")},
            "ref": view.ref,
            "created_at": view.created_at.isoformat(),
            "updated_at": view.updated_at.isoformat(),
        }
        for view in services(request).client.registry.list(tenant=key.tenant)
    ]
