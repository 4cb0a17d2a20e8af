"""/v1/operator: what only an operator key may do: see every tenant's jobs and share
registered models across tenants. A tenant's key gets 403 here."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from producers.api.auth import operator
from producers.api.problems import Problem
from producers.api.services import services
from producers.model_sharing import share_as_dict, share_ref
from schemas.tenants import DEFAULT_TENANT, TENANT_RE
from storage.apikeys import ApiKeyInfo
from storage.model_shares import ModelShares

router = APIRouter(
    prefix="/v1/operator",
    tags=["operator"],
    responses={
        401: {"model": Problem, "description": "no API key, or an unknown or revoked one"},
        403: {"model": Problem, "description": "a tenant's key: this needs an operator key"},
    },
)
Operator = Annotated[ApiKeyInfo, Depends(operator)]
TENANT_PATTERN = TENANT_RE.pattern


class SystemJob(BaseModel):
    job_id: str
    tenant: str
    status: str
    task: str
    model: str
    total: int
    processed: int
    created_at: str
    finished_at: str | None


class SystemJobs(BaseModel):
    jobs: list[SystemJob]


class ShareRequest(BaseModel):
    ref: str = Field(..., description="NAME (every version) or NAME@VERSION", max_length=80)
    owner: str = Field(DEFAULT_TENANT, pattern=TENANT_PATTERN, description="whose model")
    tenant: str | None = Field(
        None, pattern=TENANT_PATTERN, description="who may use it (or `public`)"
    )
    public: bool = Field(False, description="every tenant may use it")
    revoke: bool = Field(False, description="take the share back")


class ShareOut(BaseModel):
    owner: str
    ref: str
    tenant: str
    created_at: str


@router.get("/jobs", response_model=SystemJobs)
def system_jobs(
    request: Request,
    _key: Operator,
    tenant: Annotated[str | None, Query(pattern=TENANT_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """The newest jobs of every tenant (or of one), with their tenant."""
    views = services(request).reads.every_tenants_jobs(tenant, limit)
    return {"jobs": [{**v.as_dict(), "tenant": v.tenant} for v in views]}


@router.get("/shares", response_model=list[ShareOut])
def list_shares(
    request: Request,
    _key: Operator,
    owner: Annotated[str | None, Query(pattern=TENANT_PATTERN)] = None,
) -> list[dict[str, Any]]:
    shares = ModelShares(services(request).client.ledger.engine)
    return [share_as_dict(v) for v in shares.list(owner)]


@router.post(
    "/shares",
    response_model=dict[str, Any],
    responses={400: {"model": Problem, "description": "no such model or version, or a clash"}},
)
async def share_model(body: ShareRequest, request: Request, _key: Operator) -> dict[str, Any]:
    """Let a tenant (or every tenant) use an owner's registered model, like
    `sluice models share NAME[@V] --tenant T`."""
    engine = services(request).client.ledger.engine
    return await run_in_threadpool(
        share_ref, engine, body.ref, body.owner, body.tenant, body.public, body.revoke
    )
