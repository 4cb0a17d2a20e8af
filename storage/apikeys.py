"""API keys: each bound to one tenant. Only a key's SHA-256 is stored; the per-key secret
that signs callbacks is stored as is (the server must sign with it)."""

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import sessionmaker

from schemas.errors import SluiceError
from storage import tables as t

TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_TENANT = "default"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT.match(tenant):
        raise SluiceError(
            f"bad tenant name {tenant!r}: use 1-64 letters, digits, '_', '.' "
            "or '-', starting with a letter or digit"
        )
    return tenant


@dataclass(frozen=True)
class ApiKeyInfo:
    id: str
    tenant: str
    name: str | None
    created_at: datetime
    revoked: bool


@dataclass(frozen=True)
class NewKey:
    """What `create` hands back, once: the key and the callback signing secret."""

    info: ApiKeyInfo
    key: str
    secret: str


def _info(row: t.ApiKey) -> ApiKeyInfo:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return ApiKeyInfo(row.id, row.tenant, row.name, created, row.revoked_at is not None)


class ApiKeys:
    def __init__(self, engine: Engine) -> None:
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def create(self, tenant: str, name: str | None = None) -> NewKey:
        key_id = uuid.uuid4().hex[:16]
        key = f"sk_{key_id}_{secrets.token_urlsafe(32)}"
        secret = f"whsec_{secrets.token_hex(32)}"
        row = t.ApiKey(
            id=key_id,
            tenant=check_tenant(tenant),
            key_hash=hash_key(key),
            secret=secret,
            name=name,
            created_at=datetime.now(UTC),
        )
        with self._session.begin() as s:
            s.add(row)
        return NewKey(_info(row), key, secret)

    def authenticate(self, key: str) -> ApiKeyInfo | None:
        """The live key with this value, or None. Looked up by hash: the key is never stored."""
        with self._reader() as s:
            row = s.scalar(select(t.ApiKey).where(t.ApiKey.key_hash == hash_key(key)))
            if row is None or row.revoked_at is not None:
                return None
            return _info(row)

    def secret(self, key_id: str) -> str | None:
        with self._reader() as s:
            return s.scalar(select(t.ApiKey.secret).where(t.ApiKey.id == key_id))

    def list(self, tenant: str | None = None) -> list[ApiKeyInfo]:
        query = select(t.ApiKey).order_by(t.ApiKey.created_at)
        if tenant is not None:
            query = query.where(t.ApiKey.tenant == tenant)
        with self._reader() as s:
            return [_info(r) for r in s.scalars(query)]

    def revoke(self, key_id: str) -> bool:
        with self._session.begin() as s:
            res = s.execute(
                update(t.ApiKey)
                .where(t.ApiKey.id == key_id, t.ApiKey.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]
