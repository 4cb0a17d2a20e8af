"""GET /v1/usage: what the caller's tenant used, per UTC day and task (storage/usage.py)."""

import re
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, BeforeValidator, Field

from producers.api.auth import principal
from producers.api.problems import Problem
from producers.api.services import services
from storage.apikeys import ApiKeyInfo
from storage.clock import host_now
from storage.usage import Usage

router = APIRouter(prefix="/v1", tags=["usage"])
ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def iso_day(value: Any) -> Any:
    """Only YYYY-MM-DD: pydantic would also read `0` as a Unix time."""
    if isinstance(value, str) and not ISO_DAY.match(value):
        raise ValueError("a UTC day as YYYY-MM-DD")
    return value


Day = Annotated[date | None, BeforeValidator(iso_day)]


class ItemCounts(BaseModel):
    ok: int
    invalid: int
    error: int


class UsageDay(BaseModel):
    day: date = Field(description="UTC day")
    task: str
    items: ItemCounts = Field(description="items settled that day, by outcome")
    model_seconds: float = Field(description="seconds the model actors spent on its chunks")
    tokens: int | None = Field(description="tokens fed to the model; null: not counted")


class UsageOut(BaseModel):
    tenant: str
    start: date
    end: date
    days: list[UsageDay]
    total_items: ItemCounts
    total_model_seconds: float


@router.get(
    "/usage",
    response_model=UsageOut,
    responses={
        401: {"model": Problem, "description": "missing, unknown or revoked API key"},
        403: {"model": Problem, "description": "?tenant= of another tenant, with a tenant's key"},
    },
)
def get_usage(
    request: Request,
    key: Annotated[ApiKeyInfo, Depends(principal)],
    start: Annotated[Day, Query(description="first UTC day; default end - 29 days")] = None,
    end: Annotated[Day, Query(description="last UTC day; default today")] = None,
    tenant: Annotated[
        str | None, Query(max_length=64, description="operator keys: any tenant's usage")
    ] = None,
) -> UsageOut:
    """The caller's tenant's usage (an operator's key: `tenant`'s), one row per UTC day and
    task, oldest first. A `start` after `end` is an empty range."""
    if tenant is not None and tenant != key.tenant and not key.operator:
        raise HTTPException(403, "a tenant's key reads only its own usage; drop ?tenant=")
    whose = tenant or key.tenant
    end = end or host_now().date()
    if start is None:
        start = end - timedelta(days=29) if end - date.min > timedelta(days=29) else date.min
    engine = services(request).client.ledger.engine
    rows = Usage(engine).rows(whose, start, end)
    days = [
        UsageDay(
            day=r.day,
            task=r.task,
            items=ItemCounts(ok=r.ok, invalid=r.invalid, error=r.error),
            model_seconds=round(r.model_seconds, 6),
            tokens=r.tokens,
        )
        for r in rows
    ]
    return UsageOut(
        tenant=whose,
        start=start,
        end=end,
        days=days,
        total_items=ItemCounts(
            ok=sum(r.ok for r in rows),
            invalid=sum(r.invalid for r in rows),
            error=sum(r.error for r in rows),
        ),
        total_model_seconds=round(sum(r.model_seconds for r in rows), 6),
    )
