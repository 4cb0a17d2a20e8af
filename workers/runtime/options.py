"""What a model actor is told about its work, typed and frozen: built once from Settings
(`actor_options`), sent to the Ray actor in its JSON form and checked again there."""

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.settings import Settings
from schemas.task_spec import TaskSpec


class ActorOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch_size: int = Field(ge=1)
    max_batch_wait_ms: float = Field(ge=0)
    # Padded tokens per model batch (DynamicBatcher's budget).
    max_batch_tokens: int = Field(default=16_384, ge=1)
    # SLUICE_INFERENCE_DTYPE, resolved on the actor's device (workers/runtime/devices.py).
    inference_dtype: str = "auto"
    explain_batch_size: int = Field(ge=1)
    # Threads torch may use in the actor's process; None: every core of the host.
    torch_threads: int | None = Field(default=None, ge=1)
    # The actor leaves after this long without work; 0 keeps it forever.
    idle_seconds: float = Field(ge=0)
    # Where an object-store model is copied to on the actor's host, and how the store is
    # reached (SLUICE_STORAGE_OPTIONS): the actor's host may share nothing with the worker's.
    model_cache_dir: str = ""
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def max_batch_wait_s(self) -> float:
        return self.max_batch_wait_ms / 1000


def actor_options(settings: Settings, spec: TaskSpec) -> ActorOptions:
    """The options of `spec`'s model actors under `settings`: the one place they are read."""
    return ActorOptions(
        max_batch_size=settings.max_batch_size,
        max_batch_wait_ms=settings.max_batch_wait_ms,
        max_batch_tokens=settings.max_batch_tokens,
        inference_dtype=settings.inference_dtype,
        explain_batch_size=settings.explain_batch_size,
        torch_threads=settings.torch_threads or None,  # 0 meant every core too
        idle_seconds=settings.actor_idle_seconds,
        model_cache_dir=str(settings.model_cache_dir()),
        storage_options=settings.storage_options,
    )


# The options that never change an output (how work is batched and scheduled). Every other
# option, today's (precision) or one added later, tells actors apart and
# is part of the result cache's key: a new option counts until someone shows it changes
# nothing.
OUTPUT_NEUTRAL = frozenset(
    {
        "max_batch_size",
        "max_batch_tokens",
        "max_batch_wait_ms",
        "explain_batch_size",
        "torch_threads",
        "idle_seconds",
        "model_cache_dir",
        "storage_options",
    }
)


def output_options(options: ActorOptions) -> dict[str, object]:
    """The options an actor's outputs may depend on."""
    return options.model_dump(mode="json", exclude=set(OUTPUT_NEUTRAL))


def output_tag(options: ActorOptions) -> str:
    """A short digest of `output_options`: in the actor's name, so that a worker configured
    otherwise (another precision) never uses, or caches the outputs of, an
    actor started with other options (actors are detached: they outlive the worker)."""
    canonical = json.dumps(output_options(options), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]
