"""Tenants, key roles and what each tenant may read (its grants).

Every job, model and key belongs to a tenant. `default` is the operator's own tenant: the CLI
on the server runs as it and may read everything the server can. A tenant reached through an
API key reads only what an operator granted it in `SLUICE_TENANT_GRANTS`, e.g.

    SLUICE_TENANT_GRANTS='{"acme": {"sql_sources": {"warehouse": ["orders"]},
                                    "input_roots": ["/data/acme"],
                                    "model_dirs": ["/models/acme"],
                                    "object_prefixes": ["s3://media/acme/"]}}'

A tenant with no entry reads no SQL source, no file under the input roots and no model
directory: only inline items, uploads, packaged models and registry names it owns or that
were shared with it.
"""

import re
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import MediaRefError, SluiceError
from schemas.object_refs import is_object_uri, parse_prefixes, under_prefixes

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_TENANT = "default"
PUBLIC = "*"  # the grantee of a model shared with every tenant
# Names no API key may take: the operator's tenant, and words that read as "everyone".
RESERVED_TENANTS = frozenset({DEFAULT_TENANT, "system", "operator", "admin", "public", "all"})


class Role(StrEnum):
    TENANT = "tenant"  # its own tenant's jobs, results, models
    OPERATOR = "operator"  # /metrics, every tenant's jobs, sharing models, purges


def check_tenant(tenant: str, *, for_key: bool = False) -> str:
    """A well-formed tenant name; with `for_key`, also not one of the reserved names."""
    if not TENANT_RE.match(tenant):
        raise SluiceError(
            f"bad tenant name {tenant!r}: use 1-64 letters, digits, '_', '.' "
            "or '-', starting with a letter or digit"
        )
    if for_key and tenant.lower() in RESERVED_TENANTS:
        raise SluiceError(
            f"tenant name {tenant!r} is reserved ({', '.join(sorted(RESERVED_TENANTS))}); "
            "choose another (an operator key is made with --role operator)"
        )
    return tenant


class TenantGrant(BaseModel):
    """What one tenant may read beyond its own jobs and models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sql_sources: dict[str, list[str]] = Field(
        default_factory=dict,
        description="source name (SLUICE_API_SQL_SOURCES) -> tables it may read ('*': all)",
    )
    input_roots: list[str] = Field(
        default_factory=list, description="directories (under SLUICE_INPUT_ROOTS) it may read"
    )
    model_dirs: list[str] = Field(
        default_factory=list, description="directories whose model folders it may name"
    )
    hub_models: bool = Field(False, description="may name Hugging Face hub ids")
    object_prefixes: list[str] = Field(
        default_factory=list,
        description="object-store prefixes (under SLUICE_OBJECT_PREFIXES) it may read media from",
    )
    retention_days: float | None = Field(
        None,
        gt=0,
        le=36_500,  # a century (schemas.settings.MAX_RETENTION_DAYS)
        description="its jobs' data goes this long after they end (a job may ask for less); "
        "default SLUICE_RETENTION_DAYS",
    )

    def may_read_table(self, source: str, table: str) -> bool:
        tables = self.sql_sources.get(source)
        return tables is not None and ("*" in tables or table in tables)

    def roots_within(self, server_roots: list[Path]) -> list[Path]:
        """Its roots, each only if it lies under one of the server's input roots."""
        mine = [Path(r).expanduser().resolve() for r in self.input_roots]
        return [r for r in mine if any(r == s or r.is_relative_to(s) for s in server_roots)]

    def may_load_object(self, uri: str) -> bool:
        """An object-store model under one of its model_dirs that is a prefix (s3://...)."""
        prefixes = parse_prefixes([d for d in self.model_dirs if is_object_uri(d)])
        try:
            return under_prefixes(uri, prefixes)
        except MediaRefError:
            return False

    def may_load_from(self, path: Path) -> bool:
        real = path.resolve()
        dirs = [Path(d).expanduser().resolve() for d in self.model_dirs if not is_object_uri(d)]
        return any(real == d or real.is_relative_to(d) for d in dirs)


NO_GRANT = TenantGrant()
