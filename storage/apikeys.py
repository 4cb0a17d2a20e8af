"""API keys: each bound to one tenant, with a role (schemas/tenants.py). Only a key's SHA-256
is stored; the per-key secret that signs callbacks is stored as is (the server must sign with
it)."""

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import sessionmaker

from schemas.tenants import RESERVED_TENANTS, Role, check_tenant
from storage import tables as t
from storage.clock import host_now, utc


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeyInfo:
    id: str
    tenant: str
    name: str | None
    created_at: datetime
    revoked: bool
    role: Role = Role.TENANT

    @property
    def operator(self) -> bool:
        return self.role is Role.OPERATOR


@dataclass(frozen=True)
class NewKey:
    """What `create` hands back, once: the key and the callback signing secret."""

    info: ApiKeyInfo
    key: str
    secret: str


def key_info(row: t.ApiKey) -> ApiKeyInfo:
    created = utc(row.created_at)
    return ApiKeyInfo(
        row.id, row.tenant, row.name, created, row.revoked_at is not None, Role(row.role)
    )


class ApiKeys:
    def __init__(self, engine: Engine) -> None:
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def create(self, tenant: str, name: str | None = None, role: Role = Role.TENANT) -> NewKey:
        """A new key. A tenant key may not take a reserved tenant name (`default` is the
        operator's: its key would see every CLI job)."""
        check_tenant(tenant, for_key=role is Role.TENANT)
        key_id = uuid.uuid4().hex[:16]
        key = f"sk_{key_id}_{secrets.token_urlsafe(32)}"
        secret = f"whsec_{secrets.token_hex(32)}"
        row = t.ApiKey(
            id=key_id,
            tenant=tenant,
            key_hash=hash_key(key),
            secret=secret,
            name=name,
            role=role.value,
            created_at=host_now(),
        )
        with self._session.begin() as s:
            s.add(row)
        return NewKey(key_info(row), key, secret)

    def authenticate(self, key: str) -> ApiKeyInfo | None:
        """The live key with this value, or None. Looked up by hash: the key is never stored."""
        with self._reader() as s:
            row = s.scalar(select(t.ApiKey).where(t.ApiKey.key_hash == hash_key(key)))
            if row is None or row.revoked_at is not None:
                return None
            if row.role == Role.TENANT and row.tenant.lower() in RESERVED_TENANTS:
                return None  # made before names were reserved: it would see operator jobs
            return key_info(row)

    def secret(self, key_id: str) -> str | None:
        with self._reader() as s:
            return s.scalar(select(t.ApiKey.secret).where(t.ApiKey.id == key_id))

    def list(self, tenant: str | None = None) -> list[ApiKeyInfo]:
        query = select(t.ApiKey).order_by(t.ApiKey.created_at)
        if tenant is not None:
            query = query.where(t.ApiKey.tenant == tenant)
        with self._reader() as s:
            return [key_info(r) for r in s.scalars(query)]

    def revoke(self, key_id: str) -> bool:
        with self._session.begin() as s:
            res = s.execute(
                update(t.ApiKey)
                .where(t.ApiKey.id == key_id, t.ApiKey.revoked_at.is_(None))
                .values(revoked_at=host_now())
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]
