"""Sharing a registered model with other tenants: `sluice models share NAME[@V]` and the
operator's POST /v1/operator/shares come here."""

import re
from typing import Any

from sqlalchemy import Engine

from schemas.errors import SluiceError
from schemas.tenants import PUBLIC, check_tenant
from schemas.training import NAME_RE
from storage.model_shares import ModelShares, ShareView

SHARED_REF = re.compile(r"^(?P<name>[^@]+)(@(?P<version>\d+))?$")


def parse_shared_ref(ref: str) -> tuple[str, int | None]:
    """NAME (every version) or NAME@VERSION (that one): stages are the owner's to move."""
    match = SHARED_REF.match(ref)
    if not match or not NAME_RE.match(match["name"]):
        raise SluiceError(
            f"bad model reference {ref!r}: share NAME (every version) or NAME@VERSION"
        )
    return match["name"], int(match["version"]) if match["version"] else None


def share_ref(
    engine: Engine,
    ref: str,
    owner: str,
    grantee: str | None,
    public: bool = False,
    revoke: bool = False,
) -> dict[str, Any]:
    if public == (grantee is not None):
        raise SluiceError("name exactly one of --tenant T or --public")
    who = PUBLIC if public else check_tenant(grantee or "")
    name, version = parse_shared_ref(ref)
    shares = ModelShares(engine)
    if revoke:
        return {"revoked": shares.unshare(owner, name, version, who), "ref": ref, "tenant": who}
    return share_as_dict(shares.share(owner, name, version, who))


def share_as_dict(view: ShareView) -> dict[str, Any]:
    return {
        "owner": view.owner,
        "ref": view.ref,
        "tenant": view.grantee,
        "created_at": view.created_at.isoformat(),
    }
