"""POST /v1/jobs: a job from inline items (JSON), a file upload (multipart, see uploads.py) or a
SQL `source`; the one submit path /v1/events shares. Following a job: job_control.py."""

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from producers.adapters import adapter_for
from producers.api.bodies import JobOut
from producers.api.job_control import job_out
from producers.api.params import IdempotencyKey, Principal
from producers.api.responses import AUTHENTICATED, SUBMITTING, errors
from producers.api.services import Services, services
from producers.api.task_bodies import JobOptions, parse_body, validation_error
from producers.api.uploads import from_upload
from producers.job_specs import table_selection
from producers.readers import capped
from producers.sql_access import sql_source_url
from schemas import callback_urls
from schemas.errors import TooManyItemsError
from schemas.jobs import Item
from storage.apikeys import ApiKeyInfo

router = APIRouter(prefix="/v1", tags=["jobs"])
LOCATION = {"Location": {"description": "the job's URL", "schema": {"type": "string"}}}
REPLAYED = {"Idempotent-Replayed": {"description": "true", "schema": {"type": "string"}}}


def check_callback_url(url: str | None, allow_private: bool = False) -> None:
    """Refuse (400) what is wrong before any DNS lookup: not http(s), or a literal private
    address or `localhost` (schemas/callback_urls.py); the worker checks the rest at send."""
    if url is not None:
        callback_urls.check_callback_url(url, allow_private)


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobOut,
    responses={
        201: {"description": "the job, recorded and queued", "headers": LOCATION},
        200: {
            "model": JobOut,
            "description": "an Idempotency-Key seen before: that job",
            "headers": {**LOCATION, **REPLAYED},
        },
        **errors(*AUTHENTICATED, *SUBMITTING, 415),
    },
)
async def create_job(
    request: Request, key: Principal, idempotency_key: IdempotencyKey = None
) -> Any:
    """A job from inline items (JSON), a file upload (multipart: `file` plus the options as
    form fields) or a SQL `source`. The body's shape depends on its `task` (below)."""
    svc = services(request)
    ctype = request.headers.get("content-type", "application/json")
    if ctype.startswith("multipart/form-data"):
        options, items, source = await from_upload(request, svc, key.tenant)
    elif ctype.startswith("application/json"):
        body = _parse_json(svc, await request.body())
        options = body
        items, source = await run_in_threadpool(_from_json, body, svc, key.tenant)
    else:
        raise HTTPException(415, "send application/json or multipart/form-data")
    if idempotency_key:  # a replay still needs a well-formed request
        seen = await run_in_threadpool(svc.reads.by_idempotency_key, key.tenant, idempotency_key)
        if seen:
            return await _replay(svc, key, seen)
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


def _parse_json(svc: Services, raw: bytes) -> Any:
    try:
        return parse_body(svc.bodies.job, raw, svc.client.catalog.names())
    except ValidationError as exc:
        if any(e["type"] == "too_long" and "items" in e["loc"][:2] for e in exc.errors()):
            cap = svc.settings.api_max_items
            raise TooManyItemsError("items", cap, "SLUICE_API_MAX_ITEMS") from None
        raise validation_error(exc) from None


async def _replay(svc: Services, key: ApiKeyInfo, job_id: str) -> Any:
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
    check_callback_url(options.callback_url, svc.settings.callback_allow_private)
    return svc.client.submit_items(
        items,
        options.task,
        model=options.model,
        explain=options.explain,
        explain_steps=options.explain_steps,
        retention=options.retention,
        deadline=options.deadline,
        priority=options.priority,
        source=source,
        tenant=key.tenant,
        api_key_id=key.id,
        callback_url=options.callback_url,
        idempotency_key=idempotency_key,
        cache=options.cache,
        redact=options.redact,
        redact_types=options.redact_types,
        **options.task_params(svc.client.catalog),
        **extra,
    )


def _from_json(body: Any, svc: Services, tenant: str) -> tuple[list[Item], str]:
    if getattr(body, "source", None) is not None:  # only where SQL sources are configured
        return _from_sql(body, svc, tenant)
    raw = [{"text": it} if isinstance(it, str) else it.model_dump() for it in body.items]
    keyed = all(r.get("key") is not None for r in raw)
    adapter = adapter_for(svc.client.catalog.get(body.task).modality)
    rows = [
        {**adapter.body_fields(r, n), "key": str(r["key"]) if keyed else str(n)}
        for n, r in enumerate(raw, 1)
    ]
    columns = sorted({c for r in rows for c in r}) or ["key", "text"]
    items = svc.client.items_from_rows(
        columns,
        iter(rows),
        body.task,
        model=body.model,
        key_column="key",
        source="items",
        tenant=tenant,
    )
    return items, "api"


def options_of(body: Any) -> dict[str, Any]:
    return body.model_dump() if hasattr(body, "model_dump") else dict(body)


def _from_sql(body: Any, svc: Services, tenant: str) -> tuple[list[Item], str]:
    from producers.enrich import Condition, SourceSpec, read_rows
    from storage.engine import make_engine

    src = body.source
    url = sql_source_url(svc.settings, tenant, src.name, src.table)  # or a refusal
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
    ref = svc.client.resolve_model(body.model, body.task, tenant)
    task = svc.client.catalog.get(body.task)
    adapter = adapter_for(task.modality)
    spec.selected = table_selection(
        task,
        adapter.table_columns(src.text_column, src.media_column, ref.path if ref.loads else None),
        options_of(body),
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
            tenant=tenant,
        )
    finally:
        engine.dispose()
    return items, f"sql:{src.name}#{src.table}"
