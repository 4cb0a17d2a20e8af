"""One typed Settings object, read once from SLUICE_* variables and passed down."""

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.media_refs import MediaLimits
from schemas.object_refs import is_object_uri, normalised_uri, parse_prefixes, prefixes_within
from schemas.tenants import DEFAULT_TENANT, NO_GRANT, TenantGrant

MAX_RETENTION_DAYS = 36_500  # a century: any end date plus it is still a date


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="ignore")

    data_dir: Path = Path(".sluice")
    # Unset URLs mean "use the embedded stack" (see ops/stack.py).
    broker_url: str | None = None
    database_url: str | None = None
    ray_address: str | None = None
    # Token file of a Ray cluster with token authentication (the embedded stack makes one).
    ray_auth_token_path: Path | None = None

    # Items per chunk; unset means the task's own default (256 texts, 32 images, 16 clips...).
    chunk_size: int | None = Field(None, ge=1, le=10_000)
    max_text_chars: int = Field(20_000, ge=1)

    # Media. Files are read only under these directories (os.pathsep-separated), by the
    # producer and again by the worker; inline base64 and file sizes are capped.
    input_roots: str = ""
    # Object-store prefixes media and list files may be read from (comma-separated,
    # s3://bucket/media/), by the producer and again by the worker; like input_roots.
    object_prefixes: str = ""
    # fsspec options per scheme for every object-store location (models, checkpoints, media,
    # exports), e.g. {"s3": {"endpoint_url": "http://minio:9000", "key": "...", "secret": "..."}};
    # unset, s3fs reads the usual AWS_* variables and credential files.
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    max_media_bytes: int = Field(50 * 2**20, ge=1)
    max_inline_bytes: int = Field(512 * 2**10, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_audio_seconds: float = Field(600.0, gt=0)
    # Audio is refused before decoding when its samples would take more than this (float32,
    # all channels): a long high-rate many-channel file is a memory bomb.
    max_audio_channels: int = Field(8, ge=1)
    max_audio_decoded_bytes: int = Field(256 * 2**20, ge=1)
    default_model: str = "all-MiniLM-L6-v2"
    # zero-shot-text: how many labels a job may give, and how long each may be
    zero_shot_max_labels: int = Field(100, ge=2)
    zero_shot_max_label_chars: int = Field(200, ge=1)
    # Tasks from outside the package: modules with a SLUICE_TASKS list of TaskSpec,
    # comma-separated (read alike by the CLI, the API and every worker).
    task_modules: str = ""

    # Delivery. visibility_timeout must outlast the longest chunk (checked at worker start).
    chunk_time_limit: int = Field(600, ge=1, description="hard limit for one chunk, seconds")
    visibility_timeout: int = Field(3600, ge=1)
    lease_seconds: float = Field(30.0, gt=0, description="chunk lease, renewed while it runs")
    requeue_after: float = Field(
        120.0,
        gt=0,
        description="re-send a queued chunk after this if its queue is empty, or after 5x this "
        "if its queue has handed out messages sent after it",
    )
    sweep_interval: float = Field(15.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    ledger_patience: float = Field(
        60.0, ge=0, description="seconds a worker waits out a ledger outage before a retry"
    )
    retry_backoff: float = Field(2.0, ge=0)
    worker_concurrency: int = Field(2, ge=1)

    # Fair share (issue 12): lanes per modality queue (the same on every host: a worker
    # consumes lanes 0..N-1), and the items a tenant's unfinished jobs may hold.
    fair_lanes: int = Field(8, ge=1, le=64)
    tenant_max_in_flight: int = Field(100_000, ge=1)

    # Ray runtime.
    max_batch_size: int = Field(64, ge=1)
    max_batch_wait_ms: float = Field(5.0, ge=0)
    # A model batch padded to its longest input holds at most this many tokens (text tasks;
    # items of other tasks count 1): 64 short messages run together, long texts in fewer.
    max_batch_tokens: int = Field(16_384, ge=1)
    # The precision models run in (workers/runtime/devices.py): auto is bfloat16 on a GPU
    # that supports it, float32 on the CPU; float16 is for GPUs only.
    inference_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    replicas: int = Field(1, ge=1)
    gpu_fraction: float = Field(1.0, gt=0, le=1)
    # Models share the node's cores by default (torch uses them all); set it on a cluster to
    # make Ray spread actors over nodes.
    actor_num_cpus: float = Field(0.0, ge=0)
    torch_threads: int | None = None
    # An actor idle this long leaves, freeing its GPU share; 0 keeps actors forever.
    actor_idle_seconds: float = Field(900.0, ge=0)

    # Retention (schemas/retention.py): job data goes this many days after the job ends,
    # unless the job or its tenant's grant says less; unset: kept until purged.
    retention_days: float | None = Field(None, gt=0, le=MAX_RETENTION_DAYS)
    retention_interval: float = Field(60.0, gt=0)  # seconds between the beat's expiry runs

    # Explanations.
    # Integration steps; unset: the task's explainer default in the catalog (24).
    explain_steps: int | None = Field(None, ge=2)
    explain_batch_size: int = Field(8, ge=1)

    # Front doors (issue 5): the REST API, callbacks and warehouse sources.
    api_max_body_bytes: int = Field(20_000_000, ge=1, description="request size cap")
    api_max_items: int = Field(100_000, ge=1, description="items in one inline/uploaded job")
    api_max_wait: float = Field(60.0, ge=0, description="the longest ?wait= an event may ask")
    # The OpenAI-compatible API (issue 25, /openai/v1): OpenAI's own caps by default.
    openai_max_file_bytes: int = Field(200 * 2**20, ge=1)
    openai_max_requests: int = Field(50_000, ge=1)
    # A batch line longer than this is that line's error, refused unread (a file without
    # line ends must not be read whole into memory).
    openai_max_line_bytes: int = Field(8 * 2**20, ge=1)
    # A batch's deadline in seconds: its completion window, `24h` (the only one OpenAI
    # takes), unless this shortens it (a test of expiry; a server that must answer sooner).
    openai_completion_window_s: int | None = Field(None, ge=1)
    # Where uploaded files are kept: an object-store prefix (s3://bucket/openai/); unset,
    # in the ledger (openai_file_parts).
    openai_files_uri: str = ""
    # Named SQL sources POST /v1/jobs may read from: {"warehouse": "postgresql://..."}.
    api_sql_sources: dict[str, str] = Field(default_factory=dict)
    # What each API tenant may read beyond its own jobs (schemas/tenants.py): SQL tables, input
    # roots, model directories. A tenant without an entry reads none of them.
    tenant_grants: dict[str, TenantGrant] = Field(default_factory=dict)
    callback_timeout: float = Field(10.0, gt=0, description="seconds for a whole attempt")
    callback_max_attempts: int = Field(8, ge=1)
    callback_backoff: float = Field(2.0, ge=0, description="first retry delay, doubled each time")
    # Callbacks run in their own thread pool (`sluice worker` starts it beside the inference
    # pool), each attempt bounded as a whole by callback_timeout (issue 12).
    callback_concurrency: int = Field(16, ge=1, description="callbacks sent at once per worker")
    callback_allow_private: bool = Field(
        False, description="let callbacks reach loopback/private/reserved addresses (on-prem)"
    )
    callback_legacy_signature: bool = Field(
        False, description="also send the old X-Sluice-Signature header"
    )

    # Training (issue 4): Ray Train workers, checkpoints and the registry's artifacts. Either a
    # directory every host shares, or an object-store location (s3://bucket/prefix) that needs
    # nothing shared (issue 20). Workers keep the models they serve in model_cache, by digest.
    train_storage: str | None = Field(
        None, description="checkpoints: a directory or s3://...; default DATA_DIR/training"
    )
    model_store: str | None = Field(
        None, description="models: a directory or s3://...; default DATA_DIR/registry"
    )
    model_cache: Path | None = Field(None, description="local copies of object-store models")
    max_model_bytes: int = Field(20 * 2**30, ge=1, description="an object-store model's size cap")
    pii_model: str | None = Field(
        None,
        description="the entity model (extract-entities) the workers run to redact PERSON, "
        "PLACE and ORG: a directory, registry name or hub id",
    )
    train_cpus_per_worker: float = Field(1.0, gt=0)
    train_time_limit: int = Field(6 * 3600, ge=1, description="hard limit for one training run")
    train_max_attempts: int = Field(3, ge=1, description="worker deaths before a run fails")
    train_checkpoint_seconds: float = Field(
        30.0, ge=0, description="at most one checkpoint per this many seconds (and the last)"
    )
    train_max_failures: int = Field(1, ge=0, description="Ray Train restarts within one attempt")

    def training_location(self) -> str:
        """Where checkpoints go: a resolved directory or a normalised object-store URI."""
        return _location(self.train_storage, self.data_dir / "training")

    def model_store_location(self) -> str:
        return _location(self.model_store, self.data_dir / "registry")

    def model_cache_dir(self) -> Path:
        return (self.model_cache or self.data_dir / "model-cache").expanduser().resolve()

    def object_prefix_list(self) -> tuple[str, ...]:
        return parse_prefixes(self.object_prefixes)

    def tenant_prefixes(self, tenant: str | None) -> tuple[str, ...] | None:
        """The object-store prefixes `tenant` may read (its grant's, within the server's);
        None for the operator's own tenant."""
        grant = self.grant_for(tenant)
        if grant is None:
            return None
        return prefixes_within(grant.object_prefixes, self.object_prefix_list())

    def input_root_paths(self) -> list[Path]:
        parts = self.input_roots.replace(",", os.pathsep).split(os.pathsep)
        return [Path(p).expanduser().resolve() for p in parts if p.strip()]

    def grant_for(self, tenant: str | None) -> TenantGrant | None:
        """What `tenant` may read; None for the operator's own tenant (the CLI on the server),
        which reads everything the server can."""
        if tenant is None or tenant == DEFAULT_TENANT:
            return None
        return self.tenant_grants.get(tenant, NO_GRANT)

    def tenant_roots(self, tenant: str | None) -> list[Path] | None:
        """The input roots `tenant` may read (its grant's, within the server's); None for the
        operator's own tenant, which reads every root the server has."""
        grant = self.grant_for(tenant)
        return None if grant is None else grant.roots_within(self.input_root_paths())

    def for_tenant(self, tenant: str | None) -> "Settings":
        """These settings as `tenant` reads files: its own input roots only."""
        roots = self.tenant_roots(tenant)
        prefixes = self.tenant_prefixes(tenant)
        if roots is None or prefixes is None:
            return self
        return self.model_copy(
            update={
                "input_roots": os.pathsep.join(str(r) for r in roots),
                "object_prefixes": ",".join(prefixes),
            }
        )

    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            roots=tuple(str(p) for p in self.input_root_paths()),
            prefixes=self.object_prefix_list(),
            max_bytes=self.max_media_bytes,
            max_inline_bytes=self.max_inline_bytes,
            max_image_pixels=self.max_image_pixels,
            max_audio_seconds=self.max_audio_seconds,
            max_audio_channels=self.max_audio_channels,
            max_audio_decoded_bytes=self.max_audio_decoded_bytes,
        )

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "sluice.db"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path.resolve()}"


def _location(value: str | None, default: Path) -> str:
    if value and is_object_uri(value):
        return normalised_uri(value).rstrip("/")
    return str(Path(value or default).expanduser().resolve())
