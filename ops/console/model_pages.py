"""The model registry in the console: versions with stage, metrics and DP budget; promote and
archive after a confirmation page (a tenant's own versions only: a shared model's stages are
its owner's)."""

from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from ops.console.guard import CheckedAction, Visitor
from ops.console.render import page, svc
from schemas.errors import ModelNotFoundError, RegistryError

router = APIRouter(prefix="/console")
Stage = Literal["promote", "archive"]


@router.get("/models")
def models_page(request: Request, signed: Visitor) -> Response:
    registry = svc(request).client.registry
    tenant = signed.key.tenant
    own = registry.list(tenant=tenant)
    shared = registry.shared_with(tenant)
    return page(request, "models.html", signed, own=own, shared=shared)


@router.get("/models/{name}/{version}/{change}")
def confirm_page(
    request: Request, name: str, version: int, change: Stage, signed: Visitor
) -> Response:
    found = [
        v for v in svc(request).client.registry.list(name, tenant=signed.key.tenant)
        if v.version == version
    ]  # fmt: skip
    if not found:
        raise HTTPException(404, f"no model {name}@{version} of yours")
    return page(request, "confirm.html", signed, model=found[0], change=change)


@router.post("/models/{name}/{version}/{change}")
def change_stage(
    request: Request, name: str, version: int, change: Stage, checked: CheckedAction
) -> Response:
    registry = svc(request).client.registry
    try:
        if change == "promote":
            registry.promote(name, version, checked.key.tenant)
        else:
            registry.archive(name, version, checked.key.tenant)
    except (RegistryError, ModelNotFoundError) as exc:
        raise HTTPException(409, str(exc)) from None
    return RedirectResponse("/console/models", status_code=303)
