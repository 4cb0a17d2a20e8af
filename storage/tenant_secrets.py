"""Each tenant's secret for keyed digests and tokens of its data (HMAC-SHA256; DESIGN:
never plain hashes, which a phone number's enumeration reverses): the result cache's digests
and the `hash` redaction's tokens. Erasing a tenant destroys it (ResultCache.forget_secret):
no token made with it can be matched again."""

import secrets

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from storage import tables as t
from storage.clock import db_now


def stored_secret(s: Session, tenant: str) -> bytes | None:
    """The tenant's secret if one was made, read in session `s` (which may be writing)."""
    stored = s.scalar(select(t.TenantSecret.secret).where(t.TenantSecret.tenant == tenant))
    return bytes.fromhex(stored) if stored is not None else None


def tenant_secret(engine: Engine, tenant: str) -> bytes:
    """The tenant's secret, made on its first use (by whichever process asks first: the
    others read the one that was stored). Read each time, not kept: a secret erased with its
    tenant must not live on in a worker."""
    with sessionmaker(engine.execution_options(readonly=True))() as s:
        found = stored_secret(s, tenant)
    if found is not None:
        return found
    with sessionmaker(engine).begin() as s:
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        s.execute(
            dialect.insert(t.TenantSecret)
            .values(tenant=tenant, secret=secrets.token_hex(32), created_at=db_now(s))
            .on_conflict_do_nothing()
        )
        made = stored_secret(s, tenant)
    assert made is not None
    return made
