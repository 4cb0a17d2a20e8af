"""Training requests as data: what `sluice train` asks for, checked before anything is queued."""

import re
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from schemas.builtin_tasks import BUILTIN_TASKS
from schemas.errors import TrainingError  # noqa: F401  (imported from here before issue 13)
from schemas.modalities import Modality
from schemas.task_spec import Target

STAGES = ("staging", "production", "archived")
CURRENT_DEFAULTS = 2  # issue 17: early stopping, batch by rows, a baseline on every version
RUN_PREFIX = "tr_"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# NAME@VERSION, NAME@production, NAME@staging, NAME@latest
MODEL_SELECTOR_RE = re.compile(r"^([a-z0-9][a-z0-9._-]{0,62})@(\d+|production|staging|latest)$")


class DataSource(BaseModel):
    """Where the training rows come from: a file (JSONL/CSV/Parquet) or a SQL table."""

    file: str | None = None
    url: str | None = None
    table: str | None = None

    def describe(self) -> str:
        if self.file:
            return self.file
        from urllib.parse import urlsplit

        parts = urlsplit(self.url or "")
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{parts.path} table {self.table}"


class DPSpec(BaseModel):
    epsilon: float = Field(gt=0, le=100)
    delta: float = Field(gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)


class TrainSpec(BaseModel):
    """A checked training request: columns, labels and data fingerprint resolved at submit."""

    name: str
    task: str
    # From the task's catalog spec, resolved at submit: Ray Train's workers need no catalog.
    recipe: str = ""  # "module:Class"
    # What the label column holds: class labels, a number, or a target text (a generator's
    # (input, target) pairs). `classifier` is `target is Target.LABEL`, kept for old records.
    target: Target = Target.LABEL
    classifier: bool = True
    input_columns: list[str] = Field(default_factory=list)  # what the model reads, in order
    data: DataSource
    label_column: str
    text_column: str = "text"
    media_column: str = "path"
    key_column: str | None = None
    feature_columns: list[str] = Field(default_factory=list)  # records: --feature-columns
    # classification: the classes, sorted; a tagger: the entity types, in --labels order or
    # sorted (the model's labels are O, B-X, I-X of each)
    labels: list[str] = Field(default_factory=list)
    # a tagger's rows: "spans" (a text and its spans) or "bio" (tokens and their tags), as
    # schemas/entity_spans.py reads them; detected at submit
    annotation: str = ""
    base: str | None = None  # a resolved model directory, or an object-store prefix
    base_ref: str | None = None  # what the user named
    base_version: str | None = None  # its digest: each training host's copy is checked
    # None: chosen by early stopping on a validation split where the recipe carves one, else
    # 10 (workers/training/plan.py); a number is the most epochs, still stopped early
    epochs: int | None = Field(None, ge=1, le=10_000)
    workers: int = Field(1, ge=1, le=256)
    gpus_per_worker: float | None = Field(None, ge=0)  # None: 1 if the cluster has GPUs
    batch_size: int | None = Field(None, ge=1, le=65_536)  # None: by the number of rows
    early_stopping: bool = True  # False: train every epoch and keep the last
    # The defaults the run follows: CURRENT_DEFAULTS, or 1 for a run recorded before issue 17
    # (no early stopping, the records MLP's two layers): one resumed after an upgrade goes on
    # as it started, its checkpoint's shapes and all.
    defaults: int = CURRENT_DEFAULTS
    learning_rate: float | None = Field(None, gt=0)
    train_encoder: bool = False
    dp: DPSpec | None = None
    holdout_fraction: float = Field(0.2, gt=0, lt=0.9)
    seed: int = 0
    n_rows: int = 0
    data_fingerprint: str = ""
    media_base_dir: str | None = None  # relative media paths resolve against this

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(
                "model names are lower-case letters, digits, '.', '_' and '-', "
                "starting with a letter or digit (at most 63 characters)"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _recorded_before_the_catalog(cls, data: Any) -> Any:
        """A run recorded before specs carried their recipe (an upgrade while it was queued
        or running) resumes: its recipe, target and input columns come from what it named;
        one recorded before specs carried `target` has it from `classifier`."""
        if not isinstance(data, dict):
            return data
        spec = next((s for s in BUILTIN_TASKS if s.name == data.get("task")), None)
        if not data.get("recipe") and spec is not None and spec.training is not None:
            inputs = {
                Modality.TEXT: [data.get("text_column") or "text"],
                Modality.IMAGE: [data.get("media_column") or "path"],
                Modality.AUDIO: [data.get("media_column") or "path"],
            }.get(spec.modality, list(data.get("feature_columns") or []))
            data = {
                "classifier": spec.training.target is Target.LABEL,
                "target": spec.training.target,
                "input_columns": inputs,
                **data,
                "recipe": spec.training.recipe,
            }
        if "target" not in data:
            data = {
                **data,
                "target": Target.LABEL if data.get("classifier", True) else Target.VALUE,
            }
        if "defaults" not in data:  # recorded before issue 17 (build_spec always sets it)
            data = {**data, "defaults": 1, "early_stopping": False}
        return data

    @property
    def is_classifier(self) -> bool:
        return self.classifier

    @property
    def is_generator(self) -> bool:
        """(input, target) text pairs: the label column holds the target text."""
        return self.target is Target.TEXT

    @property
    def is_tagger(self) -> bool:
        """Labelled character spans of a text (or BIO-tagged tokens) in the label column."""
        return self.target is Target.SPANS

    def used_columns(self) -> list[str]:
        """The columns training reads, in a fixed order: what the data fingerprint covers."""
        return [*self.input_columns, self.label_column]


def progress_line(progress: dict[str, Any]) -> str:
    """One line for `sluice status`: epoch, loss and the held-out metric."""
    if not progress:
        return "waiting for a training worker"
    epoch, epochs = progress.get("epoch", 0), progress.get("epochs", "?")
    parts = [f"epoch {epoch}/{epochs}"]
    if (loss := progress.get("loss")) is not None:
        parts.append(f"loss {loss:.4f}")
    if (metric := progress.get("metric")) and progress.get("metric_value") is not None:
        parts.append(f"{metric} {progress['metric_value']:.4f}")
    if progress.get("early_stopping") and progress.get("best_epoch"):
        best, patience = progress["best_epoch"], progress["early_stopping"]
        parts.append(f"best epoch {best} (stops after {patience} without gain)")
    if progress.get("epsilon") is not None:
        parts.append(f"ε {progress['epsilon']:.2f}")
    if progress.get("resumed_from_epoch"):
        parts.append(f"resumed after epoch {progress['resumed_from_epoch']}")
    return ", ".join(parts)
