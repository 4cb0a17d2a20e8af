"""Sharing registered models across tenants: an owner's whole name (every version, stages as
the owner sets them) or one version, with one tenant or with every tenant (`*`).

A grantee resolves a shared name exactly like its own (`digits@production` is the owner's
production version, when that version is shared with it), but cannot change its stages. A
tenant's own name always wins over a shared one of the same name.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from schemas.errors import ModelError, RegistryError
from schemas.tenants import PUBLIC, check_tenant
from storage import tables as t
from storage.clock import host_now, utc

ALL_VERSIONS = 0  # the version column of a share of the whole name


@dataclass(frozen=True)
class ShareView:
    owner: str
    name: str
    version: int | None  # None: every version
    grantee: str  # a tenant, or "*" for every tenant
    created_at: datetime

    @property
    def ref(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


def _grantees(tenant: str) -> list[str]:
    return [tenant, PUBLIC]


def shared_rows(s: Session, tenant: str, name: str) -> list[t.ModelVersion]:
    """The versions of `name` other tenants share with `tenant`, oldest first. Several owners
    sharing one name with the same tenant is refused when the second share is made."""
    shares = list(
        s.scalars(
            select(t.ModelShare).where(
                t.ModelShare.name == name,
                t.ModelShare.grantee.in_(_grantees(tenant)),
                t.ModelShare.owner != tenant,
            )
        )
    )
    if not shares:
        return []
    owners = sorted({sh.owner for sh in shares})
    if len(owners) > 1:  # refused when shared; possible only if two shares raced
        raise RegistryError(
            f"model {name!r} is shared with you by {' and '.join(owners)}; ask an operator "
            "to unshare one"
        )
    owner = owners[0]
    versions = {sh.version for sh in shares if sh.owner == owner}
    query = select(t.ModelVersion).where(
        t.ModelVersion.tenant == owner, t.ModelVersion.name == name
    )
    if ALL_VERSIONS not in versions:
        query = query.where(t.ModelVersion.version.in_(versions))
    return list(s.scalars(query.order_by(t.ModelVersion.version)))


def visible_names(s: Session, tenant: str) -> list[str]:
    """The names a tenant may use: its own and those shared with it."""
    own = select(t.ModelVersion.name).where(t.ModelVersion.tenant == tenant)
    shared = select(t.ModelShare.name).where(
        t.ModelShare.grantee.in_(_grantees(tenant)), t.ModelShare.owner != tenant
    )
    return sorted(set(s.scalars(own)) | set(s.scalars(shared)))


class ModelShares:
    def __init__(self, engine: Engine) -> None:
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def share(self, owner: str, name: str, version: int | None, grantee: str) -> ShareView:
        """Let `grantee` (a tenant, or "*") use the owner's `name` (one version, or all)."""
        if grantee != PUBLIC:
            check_tenant(grantee)
        if grantee == owner:
            raise ModelError(f"{owner!r} owns {name!r} already; share it with another tenant")
        with self._session.begin() as s:
            query = select(t.ModelVersion.version).where(
                t.ModelVersion.tenant == owner, t.ModelVersion.name == name
            )
            versions = set(s.scalars(query))
            if not versions:
                raise ModelError(f"tenant {owner!r} has no model named {name!r}")
            if version is not None and version not in versions:
                raise ModelError(f"model {name!r} of {owner!r} has no version {version}")
            clash = (
                t.ModelShare.name == name,
                t.ModelShare.owner != owner,
                *(
                    ()
                    if grantee == PUBLIC  # every tenant: any other owner's share of it clashes
                    else (or_(t.ModelShare.grantee == grantee, t.ModelShare.grantee == PUBLIC),)
                ),
            )
            other = s.scalar(select(t.ModelShare.owner).where(*clash).limit(1))
            if other is not None:
                who = "every tenant" if grantee == PUBLIC else repr(grantee)
                raise ModelError(
                    f"{who} already may use a model {name!r} shared by {other!r}; "
                    "unshare that one first"
                )
            key = (owner, name, version or ALL_VERSIONS, grantee)
            row = s.get(t.ModelShare, key)
            if row is None:
                row = t.ModelShare(
                    owner=owner,
                    name=name,
                    version=version or ALL_VERSIONS,
                    grantee=grantee,
                    created_at=host_now(),
                )
                s.add(row)
                s.flush()
            return _view(row)

    def unshare(self, owner: str, name: str, version: int | None, grantee: str) -> bool:
        with self._session.begin() as s:
            res = s.execute(
                delete(t.ModelShare).where(
                    t.ModelShare.owner == owner,
                    t.ModelShare.name == name,
                    t.ModelShare.version == (version or ALL_VERSIONS),
                    t.ModelShare.grantee == grantee,
                )
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def list(self, owner: str | None = None) -> list[ShareView]:
        query = select(t.ModelShare).order_by(
            t.ModelShare.owner, t.ModelShare.name, t.ModelShare.version, t.ModelShare.grantee
        )
        if owner is not None:
            query = query.where(t.ModelShare.owner == owner)
        with self._reader() as s:
            return [_view(r) for r in s.scalars(query)]


def _view(row: t.ModelShare) -> ShareView:
    version = None if row.version == ALL_VERSIONS else row.version
    return ShareView(row.owner, row.name, version, row.grantee, utc(row.created_at))
