"""SQLAlchemy 2.0 typed tables. Change them only together with a migration in migrations/."""

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.clock import host_now

JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("uq_jobs_tenant_idempotency", "tenant", "idempotency_key", unique=True),
        # GET /v1/jobs: a tenant's newest jobs, read from the index in order (0010)
        Index("ix_jobs_tenant_created", "tenant", "created_at"),
        Index("ix_jobs_created", "created_at"),  # the operator's view of every tenant's
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    explain_policy: Mapped[str] = mapped_column(String(64), default="none")
    priority: Mapped[int] = mapped_column(Integer, default=5)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    total: Mapped[int] = mapped_column(Integer)
    ok: Mapped[int] = mapped_column(Integer, default=0)
    invalid: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[int] = mapped_column(Integer, default=0)
    chunks_total: Mapped[int] = mapped_column(Integer)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Front doors (migration 0002): the owning tenant, the API key that submitted it, where
    # to report its end, the job it retries, and the client's Idempotency-Key.
    tenant: Mapped[str] = mapped_column(
        String(64), default="default", server_default=text("'default'"), index=True
    )
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    parent_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Fair share (0007): the lane of its modality queue its chunks go to (storage/admission).
    lane: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Tokens (0009), summed from ok rows' outputs; null for tasks that count none.
    prompt_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The result cache (0011): how many of the `ok` rows were taken from it.
    cached: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # What made its rows, as of submit (0014, storage/lineage.py): Sluice's version, the
    # model's full weights SHA-256, its registry entry and DP budget
    lineage: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # When its data goes (0015, storage/erasure.py): its end plus its retention period
    expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    # Its retention period in seconds (the job's or its tenant's), until it ends
    retention_s: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # A pipeline's job (0017, storage/standing_jobs.py): open for more events; it does not
    # end, even with every chunk done, until its pipeline closes it
    standing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Its deadline (0018, storage/deadlines.py): unfinished then, its open rows end `expired`
    deadline_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        Index("ix_chunks_state_lease", "state", "lease_expires_at"),
        Index("ix_chunks_state_enqueued", "state", "enqueued_at"),  # the sweeper's look
        Index("ix_chunks_job_finished", "job_id", "finished_at"),  # a job's ETA (0016)
    )

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    first_item: Mapped[int] = mapped_column(Integer)  # index in the job of the chunk's first item
    state: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(Integer)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # For metrics (0002): when a worker last took it, and when it ended.
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The worker that made its rows (0014, storage/lineage.py): its Sluice version, the
    # digest of the code that makes outputs, the options that can change them
    made_by: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class JobKey(Base):
    """The item keys of a job written in batches while it is `receiving` (0010): the
    primary key keeps them unique across batches, so a key repeated a million rows later
    fails the submit by the database's index, not by a set of every key held in memory.
    No foreign key: checking one per key would double the cost of writing them. Rows go with
    their job when a submit fails (storage/receiving.py), and the sweeper clears the keys of
    jobs received since (their chunks and results hold the keys from then on)."""

    __tablename__ = "job_keys"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(512), primary_key=True)


class Result(Base):
    __tablename__ = "results"
    # results pages and exports read a job's rows in input order (keyset on seq, 0010)
    __table_args__ = (Index("ix_results_job_seq", "job_id", "seq"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    chunk_id: Mapped[str] = mapped_column(String(48))
    seq: Mapped[int] = mapped_column(Integer)  # input order, for exports
    status: Mapped[str] = mapped_column(String(16))
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)
    # schemas.states.RowMark.CACHED (0011): taken from the result cache, not the model
    cached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # What PII redaction found in the item and its output (0013, schemas/redaction.py)
    redactions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    # HMAC-SHA256 of the input as the model read it, with the tenant's secret (0014): the
    # same input gives the same digest within a tenant; the value cannot be guessed back
    input_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Explanation(Base):
    __tablename__ = "explanations"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    method: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(Text, nullable=True)
    tokens: Mapped[list[str]] = mapped_column(JSONType)
    attributions: Mapped[list[float]] = mapped_column(JSONType)
    convergence_delta: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class ApiKey(Base):
    """An API key: only its SHA-256 is kept. `secret` signs callbacks, so it is kept as is."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    secret: Mapped[str] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(Text, nullable=True)
    role: Mapped[str] = mapped_column(  # schemas.tenants.Role
        String(16), default="tenant", server_default=text("'tenant'")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CallbackDelivery(Base):
    """One callback per finished job that asked for one, and how its delivery went."""

    __tablename__ = "callback_deliveries"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EnrichWatermark(Base):
    """`sluice enrich --since-column`: the newest value already enriched, per source."""

    __tablename__ = "enrich_watermarks"

    source: Mapped[str] = mapped_column(String(512), primary_key=True)  # URL, no password
    table_name: Mapped[str] = mapped_column(String(256), primary_key=True)
    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    since_column: Mapped[str] = mapped_column(String(128))
    value: Mapped[dict[str, Any]] = mapped_column(JSONType)  # {"type": ..., "value": ...}
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)


class EnrichRun(Base):
    """`sluice enrich`: the run of one spec (its fingerprint) that has not finished yet, or
    the last one that did. An invocation whose spec has an unfinished run resumes it (waits
    for its job, writes back the results it has not written) instead of starting over."""

    __tablename__ = "enrich_runs"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of spec
    id: Mapped[str] = mapped_column(String(32))  # the job's idempotency key is enrich:<id>
    source: Mapped[str] = mapped_column(String(512))  # URL, no password
    table_name: Mapped[str] = mapped_column(String(256))
    task: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # schemas.states.EnrichRunState
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    watermark_before: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    watermark_after: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    rows_retried: Mapped[int] = mapped_column(Integer, default=0)
    results_done: Mapped[int] = mapped_column(Integer, default=0)  # write-back cursor
    rows_written: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)


class EnrichRetry(Base):
    """`sluice enrich --since-column`: a source row (by its item key) whose last result was
    `error`. The watermark moves past it; the next incremental runs read it again by key,
    while `attempts` (consecutive runs it failed in) is at most their --max-retries."""

    __tablename__ = "enrich_retries"

    source: Mapped[str] = mapped_column(String(512), primary_key=True)
    table_name: Mapped[str] = mapped_column(String(256), primary_key=True)
    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)


class TrainingRun(Base):
    """One `sluice train` request. Leased like a chunk: the ledger says what is still to do."""

    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # "tr_" + 24 hex
    name: Mapped[str] = mapped_column(String(64), index=True)  # the model it will register
    task: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(
        String(64), default="default", server_default=text("'default'")
    )
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the TrainSpec, dumped
    progress: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ModelVersion(Base):
    """The model registry: one row per (tenant, name, version), with where its weights are."""

    __tablename__ = "model_versions"

    tenant: Mapped[str] = mapped_column(
        String(64), primary_key=True, default="default", server_default=text("'default'")
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    task: Mapped[str] = mapped_column(String(64))
    uri: Mapped[str] = mapped_column(Text)  # the artifact directory
    sha256: Mapped[str] = mapped_column(String(64))  # of the weights files
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # unique: a run registers at most one version, even if two attempts of it overlapped
    training_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    data_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dp: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    stage: Mapped[str] = mapped_column(String(16))  # staging | production | archived
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)


class ModelShare(Base):
    """An owner's registered name (version 0: every version) usable by a grantee tenant
    ("*": every tenant). See storage/model_shares.py."""

    __tablename__ = "model_shares"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    grantee: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)


# The results "UNIQUE(job_id, item_key)" of the design is the primary key of results and
# explanations: one row per item, whatever the number of deliveries.


class ResultCacheEntry(Base):
    """A tenant's stored result (0011, storage/result_cache.py): the output (and the
    explanation, if the row was explained) of an `ok` row, under a digest keyed with the
    tenant's secret over what makes the result (input, model digest, task parameters,
    explanation settings, redaction). It goes with the job that stored it (the foreign key):
    retention and erasure of that job remove it."""

    __tablename__ = "result_cache"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # HMAC-SHA256, hex
    output: Mapped[dict[str, Any]] = mapped_column(JSONType)
    explanation: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # the policy it was explained under: a low-confidence policy's choice is its own
    explain_policy: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)


class TenantSecret(Base):
    """A tenant's secret for keyed digests of its data (HMAC-SHA256; DESIGN: never plain
    hashes), made on first use. Replacing it forgets every digest made with it."""

    __tablename__ = "tenant_secrets"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(64))  # 32 random bytes, hex
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)


class TenantUsage(Base):
    """What a tenant used, per UTC day and task (0007): items by outcome, seconds of model
    actor time, and tokens fed to the model (null where the task does not count them).
    Added to in the transaction that settles each chunk (storage/usage.py)."""

    __tablename__ = "tenant_usage"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    ok: Mapped[int] = mapped_column(BigInteger, default=0)
    invalid: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[int] = mapped_column(BigInteger, default=0)
    model_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Export(Base):
    """An export Sluice stored itself (0015: `sluice results -o s3://...`): removed with its
    job, if the object there is still the one written (its stamp)."""

    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    uri: Mapped[str] = mapped_column(Text)
    stamp: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)


class ErasureAudit(Base):
    """Every erasure (0015, storage/erasure.py): a purge, a retention expiry, a key
    forgotten. It names the job, never a key: a forgotten key is held as its keyed digest
    (HMAC-SHA256 with the tenant's secret), which the tenant can recompute to prove it."""

    __tablename__ = "erasure_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # purge | retention | forget
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    key_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rows: Mapped[int] = mapped_column(Integer)  # results removed
    exports: Mapped[int] = mapped_column(Integer)  # stored exports removed
    by: Mapped[str] = mapped_column(String(128))  # cli, an API key's id, the sweeper


class ClusterIdentity(Base):
    """Which Sluice cluster this ledger is (0012, storage/cluster_identity.py): one row, made
    on first use. Its id is written to the broker, so a process whose ledger is another one
    (a host without SLUICE_DATABASE_URL) is refused at start; and the Ray cluster the workers
    run models on (Ray's own session name and GCS address, last seen by a worker), so a worker
    joined to another Ray (a private one: SLUICE_RAY_ADDRESS unset) is refused too."""

    __tablename__ = "cluster_identity"
    __table_args__ = (CheckConstraint("slot = 1", name="ck_cluster_identity_one_row"),)

    slot: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1: one row
    id: Mapped[str] = mapped_column(String(32))  # uuid4 hex
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=host_now)
    ray_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    ray_address: Mapped[str | None] = mapped_column(Text, nullable=True)
    ray_bound_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ray_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ConsoleSession(Base):
    """A console sign-in (0016, storage/console_sessions.py): an API key exchanged for a
    session cookie. Only the cookie's SHA-256 is kept; the session dies with its key."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))  # the form token of every action
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class PipelineJob(Base):
    """Each event pipeline's open standing job (0017, storage/standing_jobs.py)."""

    __tablename__ = "pipeline_jobs"

    pipeline: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # messages sent to the dead-letter destination (unreadable, unmappable, too large)
    dead_lettered: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))


class PipelineEvent(Base):
    """An event a pipeline recorded, by its key (0017): a redelivery of it is recognised and
    acknowledged without work; `published_at` is set once its result is on every sink."""

    __tablename__ = "pipeline_inbox"
    __table_args__ = (Index("ix_pipeline_inbox_unpublished", "pipeline", "published_at"),)

    pipeline: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OpenAIFile(Base):
    """A file uploaded through the OpenAI-compatible API (0018, storage/openai_files.py): its
    bytes in `openai_file_parts`, or an object under SLUICE_OPENAI_FILES_URI (`uri`)."""

    __tablename__ = "openai_files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # its tenant's retention from upload (schemas/retention.py); None: kept until deleted
    expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    # `uploading` until its last part is in (storage/openai_files.py), then `processed`
    status: Mapped[str] = mapped_column(String(16))


class OpenAIFilePart(Base):
    """A file's bytes in the ledger, in parts of at most 1 MiB (streamed in and out)."""

    __tablename__ = "openai_file_parts"

    file_id: Mapped[str] = mapped_column(
        ForeignKey("openai_files.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class OpenAIBatch(Base):
    """An OpenAI-compatible batch (0018, storage/openai_batches.py): the job that runs its
    requests (every line one item or more, a bad line an `invalid` one), removed with it."""

    __tablename__ = "openai_batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    input_file_id: Mapped[str] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(Text)
    batch_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    requests: Mapped[int] = mapped_column(Integer)  # the lines of its input file
    # (completed, failed) requests once its job ended: counted once, then read
    completed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    failed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
