"""The model registry: numbered versions of each named model, and which one serves.

Names belong to a tenant: `acme`'s `digits` and `globex`'s `digits` are two models, with their
own versions and stages. A name belongs to one task. Versions count up from 1 and are never
reused or deleted, so an old job naming `NAME@3` stays reproducible even after version 3 is
archived. At most one version of a (tenant, name) is in production. A tenant sees its own names
and the ones shared with it (storage/model_shares.py), never that another's exist. Each public
method is one transaction.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from schemas.errors import RegistryError, UnknownRegisteredModelError
from schemas.tenants import DEFAULT_TENANT
from schemas.training import MODEL_SELECTOR_RE, NAME_RE, STAGES
from storage import tables as t
from storage.clock import host_now, utc
from storage.model_shares import shared_rows, visible_names

SELECTORS = ("production", "staging", "latest")
_REGISTER_TRIES = 5
_LOCK_SPACE = 727712  # advisory lock keys: (this, hash of the model name)


@dataclass(frozen=True)
class ModelVersionView:
    name: str
    version: int
    task: str
    tenant: str
    uri: str
    sha256: str
    metrics: dict[str, Any]
    training_run_id: str | None
    data_fingerprint: str | None
    dp: dict[str, Any] | None
    stage: str
    created_at: datetime
    updated_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def baseline(self) -> dict[str, Any] | None:
        """The classical baseline fitted on the same split at train time (issue 17):
        {"method", "metric", "value"}, or {"method", "error"} when it could not be fitted."""
        found = self.metrics.get("baseline")
        return found if isinstance(found, dict) else None

    @property
    def below_baseline(self) -> str | None:
        """A warning when the model's held-out figure is worse than its baseline's."""
        base = self.baseline
        if base is None or not isinstance(base.get("value"), float):
            return None
        mine = self.metrics.get(base["metric"])
        if not isinstance(mine, float) or mine >= base["value"]:
            return None
        what = str(base["metric"]).removeprefix("heldout_")
        return (
            f"{self.ref} is worse than its baseline: held-out {what} {mine:.4f} vs "
            f"{base['value']:.4f} for {base['method']} on the same split"
        )


def _view(row: t.ModelVersion) -> ModelVersionView:
    return ModelVersionView(
        name=row.name,
        version=row.version,
        task=row.task,
        tenant=row.tenant or DEFAULT_TENANT,
        uri=row.uri,
        sha256=row.sha256,
        metrics=dict(row.metrics or {}),
        training_run_id=row.training_run_id,
        data_fingerprint=row.data_fingerprint,
        dp=dict(row.dp) if row.dp is not None else None,
        stage=row.stage,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
    )


class Registry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def register(
        self,
        name: str,
        task: str,
        uri: str,
        sha256: str,
        metrics: dict[str, Any],
        training_run_id: str | None = None,
        data_fingerprint: str | None = None,
        dp: dict[str, Any] | None = None,
        tenant: str = DEFAULT_TENANT,
        stage: str = "staging",
    ) -> ModelVersionView:
        """Add the next version of the tenant's `name` (1 for a new name)."""
        if not NAME_RE.match(name):
            raise RegistryError(
                f"bad model name {name!r}: use lower-case letters, digits, "
                "'.', '_' and '-', starting with a letter or digit"
            )
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        for attempt in range(_REGISTER_TRIES):
            try:
                return self._register(
                    name,
                    task,
                    uri,
                    sha256,
                    metrics,
                    training_run_id,
                    data_fingerprint,
                    dp,
                    tenant,
                    stage,
                )
            except IntegrityError:
                # Another writer took the number first (a database without the lock above).
                if attempt == _REGISTER_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _register(
        self,
        name: str,
        task: str,
        uri: str,
        sha256: str,
        metrics: dict[str, Any],
        training_run_id: str | None,
        data_fingerprint: str | None,
        dp: dict[str, Any] | None,
        tenant: str,
        stage: str,
    ) -> ModelVersionView:
        now = host_now()
        with self._session.begin() as s:
            rows = _rows(s, tenant, name, lock=True)
            if rows and rows[0].task != task:
                raise RegistryError(
                    f"model {name!r} is a {rows[0].task} model; it cannot take a {task} "
                    "version. Choose another name for this model."
                )
            if stage == "production":
                _demote(rows, now)
            row = t.ModelVersion(
                name=name,
                version=max((r.version for r in rows), default=0) + 1,
                task=task,
                tenant=tenant,
                uri=uri,
                sha256=sha256,
                metrics=metrics,
                training_run_id=training_run_id,
                data_fingerprint=data_fingerprint,
                dp=dp,
                stage=stage,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            return _view(row)

    def get(self, name: str, selector: str | int, tenant: str = DEFAULT_TENANT) -> ModelVersionView:
        """`selector`: a version number, "production", "staging" (the newest staging version)
        or "latest" (the newest version not archived). Archived versions are still found by
        number. The tenant's own `name` first, else one shared with it."""
        with self._reader() as s:
            rows = _rows(s, tenant, name) or shared_rows(s, tenant, name)
            if not rows:
                raise _unknown_name(s, tenant, name)
            return _view(_select(name, rows, selector))

    def resolve(self, ref: str, tenant: str = DEFAULT_TENANT) -> ModelVersionView:
        """A "NAME@SELECTOR" reference, e.g. `spam@3` or `spam@production`."""
        match = MODEL_SELECTOR_RE.match(ref)
        if not match:
            raise RegistryError(
                f"bad model reference {ref!r}: use NAME@VERSION, "
                "NAME@production, NAME@staging or NAME@latest"
            )
        return self.get(match.group(1), match.group(2), tenant)

    def promote(self, name: str, version: int, tenant: str = DEFAULT_TENANT) -> ModelVersionView:
        """Make `version` the production one; the previous production version is archived.
        Promoting an archived version is how a bad release is rolled back. Only the tenant's
        own versions: a shared model's stages belong to its owner."""
        return self._set_stage(tenant, name, version, "production")

    def archive(self, name: str, version: int, tenant: str = DEFAULT_TENANT) -> ModelVersionView:
        return self._set_stage(tenant, name, version, "archived")

    def _set_stage(self, tenant: str, name: str, version: int, stage: str) -> ModelVersionView:
        now = host_now()
        with self._session.begin() as s:
            # Writers of one name take turns: two promotions at once must not leave two
            # production versions behind.
            rows = _rows(s, tenant, name, lock=True)
            if not rows:
                if shared_rows(s, tenant, name):
                    raise RegistryError(
                        f"model {name!r} is shared with you; only its owner changes its stages"
                    )
                raise _unknown_name(s, tenant, name)
            row = _select(name, rows, version)
            if stage == "production":
                _demote([r for r in rows if r is not row], now)
            row.stage = stage
            row.updated_at = now
            s.flush()
            return _view(row)

    def names(self, tenant: str = DEFAULT_TENANT) -> list[str]:
        """The names the tenant can use: its own and those shared with it."""
        with self._reader() as s:
            return visible_names(s, tenant)

    def shared_with(self, tenant: str) -> list[ModelVersionView]:
        """Other tenants' versions this tenant may use (whole names or single versions)."""
        with self._reader() as s:
            names = [n for n in visible_names(s, tenant) if not _rows(s, tenant, n)]
            return [_view(r) for n in names for r in shared_rows(s, tenant, n)]

    # Last: inside the class body, `list` names this method from here on.
    def list(self, name: str | None = None, tenant: str | None = None) -> list[ModelVersionView]:
        """Registered versions, by name; only `tenant`'s own when given (None: every tenant's,
        for operators)."""
        query = select(t.ModelVersion).order_by(
            t.ModelVersion.tenant, t.ModelVersion.name, t.ModelVersion.version
        )
        if name is not None:
            query = query.where(t.ModelVersion.name == name)
        if tenant is not None:
            query = query.where(t.ModelVersion.tenant == tenant)
        with self._reader() as s:
            return [_view(r) for r in s.scalars(query)]


def _rows(s: Session, tenant: str, name: str, lock: bool = False) -> list[t.ModelVersion]:
    """All versions of the tenant's `name`, oldest first. With `lock`, writers of the same
    name take turns (SQLite's BEGIN IMMEDIATE already serialises all writers). On PostgreSQL
    a per-name advisory lock, unlike FOR UPDATE, also covers a name with no rows yet, and the
    SELECT after it sees what the previous holder committed."""
    if lock and s.get_bind().dialect.name == "postgresql":
        s.execute(
            text("SELECT pg_advisory_xact_lock(:space, hashtext(:name))"),
            {"space": _LOCK_SPACE, "name": f"{tenant}/{name}"},
        )
    query = (
        select(t.ModelVersion)
        .where(t.ModelVersion.tenant == tenant, t.ModelVersion.name == name)
        .order_by(t.ModelVersion.version)
    )
    if lock:
        query = query.execution_options(populate_existing=True)
    return list(s.scalars(query))


def _demote(rows: list[t.ModelVersion], now: datetime) -> None:
    for r in rows:
        if r.stage == "production":
            r.stage = "archived"
            r.updated_at = now


def _select(name: str, rows: list[t.ModelVersion], selector: str | int) -> t.ModelVersion:
    """The version `selector` picks among `rows` (all versions of `name`, oldest first)."""
    if isinstance(selector, str) and selector.isdigit():
        selector = int(selector)
    if isinstance(selector, int):
        for r in rows:
            if r.version == selector:
                return r
        raise UnknownRegisteredModelError(
            f"model {name!r} has no version {selector}; its versions: {_listing(rows)}"
        )
    if selector not in SELECTORS:
        raise RegistryError(
            f"bad version {selector!r} for model {name!r}: use a version "
            f"number or one of {', '.join(SELECTORS)}"
        )
    wanted = {
        "production": ("production",),
        "staging": ("staging",),
        "latest": ("production", "staging"),
    }[selector]
    found = [r for r in rows if r.stage in wanted]
    if found:
        return found[-1]
    if selector == "production":
        raise RegistryError(
            f"model {name!r} has no production version; promote one: "
            f"sluice models promote {name} VERSION"
        )
    what = "no staging version" if selector == "staging" else "only archived versions"
    raise RegistryError(
        f"model {name!r} has {what} (versions: {_listing(rows)}); name one "
        f"by number, e.g. {name}@{rows[-1].version}, or promote one: "
        f"sluice models promote {name} VERSION"
    )


def _listing(rows: list[t.ModelVersion]) -> str:
    return ", ".join(f"{r.version} ({r.stage})" for r in rows)


def _unknown_name(s: Session, tenant: str, name: str) -> UnknownRegisteredModelError:
    """Names only what the tenant may use: another tenant's models are never mentioned."""
    known = visible_names(s, tenant)
    if not known:
        return UnknownRegisteredModelError(
            f"no model named {name!r}: you have no registered models; train one with `sluice train`"
        )
    more = f" (and {len(known) - 10} more)" if len(known) > 10 else ""
    return UnknownRegisteredModelError(
        f"no model named {name!r}; known models: {', '.join(known[:10])}{more}"
    )
