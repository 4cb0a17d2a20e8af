"""What a task is: the shape of one catalog entry (`TaskSpec`) and its parts. The catalog
(schemas/catalog.py) holds the specs; schemas/builtin_tasks.py declares Sluice's own."""

import dataclasses
import importlib
import json
import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.errors import ConfigError, SluiceError
from schemas.jobs import Item
from schemas.modalities import Modality

# How many labels a classifier's `scores` lists (the most likely first).
TOP_K = 5


class OutputShape(StrEnum):
    """What one `ok` row's `output` holds; exports and write-backs read these keys."""

    CLASSIFICATION = "classification"  # label, score, scores: the TOP_K best {label: prob}
    EMBEDDING = "embedding"  # embedding (L2-normalised floats), dim (images: image_size)
    REGRESSION = "regression"  # value (in the target's units), target (its name)
    TRANSCRIPT = "transcript"  # text, seconds
    FIELDS = "fields"  # a task's own JSON object (tasks from outside the package)
    # text, prompt_tokens, completion_tokens, finish_reason (stop / stop_string / length),
    # flags (RowFlag values), json (the parsed output, with a json_schema), notes
    GENERATION = "generation"
    # answer (null where the context holds none), score, start, end (characters of the
    # context; null with no answer), null_score (the model's no-answer score)
    ANSWER = "answer"
    # entities: [{text, label, start, end, score}], start and end characters of the text
    ENTITIES = "entities"
    # objects: [{label, score, box: [xmin, ymin, xmax, ymax]}], the most confident first,
    # boxes in the input image's pixels; count; image_size [width, height]
    DETECTIONS = "detections"


class ModelKind(StrEnum):
    """What a model directory must hold for a task."""

    TRANSFORMERS = "transformers"  # config.json + safetensors (+ tokenizer or processor)
    RECORDS_MLP = "records-mlp"  # a Sluice records model (config, safetensors, features.json)
    NONE = "none"  # the task needs no model


class ModelFiles(StrEnum):
    TOKENIZER = "tokenizer"  # tokenizer.json, vocab.txt or tokenizer_config.json
    PROCESSOR = "processor"  # preprocessor_config.json or processor_config.json
    NONE = "none"


def coerce(owner: object, field: str, kind: type[StrEnum]) -> None:
    """A spec written with a plain string ("text") holds the enum member; anything else is
    refused as the spec is made, naming the field and the values it takes."""
    value = getattr(owner, field)
    try:
        object.__setattr__(owner, field, kind(value))
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ConfigError(
            f"{type(owner).__name__}.{field} {value!r} is not one of: {allowed}"
        ) from None


@dataclass(frozen=True)
class ModelNeeds:
    kind: ModelKind = ModelKind.TRANSFORMERS
    # Class-name suffixes of config.json's `architectures`, one of which must match (the
    # transformers Auto class the handler loads with); empty accepts any.
    architectures: tuple[str, ...] = ()
    files: ModelFiles = ModelFiles.TOKENIZER
    description: str = "a Hugging Face model directory"
    # With no --model, use SLUICE_DEFAULT_MODEL (MiniLM); otherwise a model is required.
    uses_default_model: bool = False

    def __post_init__(self) -> None:
        coerce(self, "kind", ModelKind)
        coerce(self, "files", ModelFiles)


@dataclass(frozen=True)
class ExplainerSpec:
    method: str  # recorded on every explanation
    steps: int = 24  # integration steps unless SLUICE_EXPLAIN_STEPS says otherwise
    note: str = ""  # why this method (and what was measured)


class Target(StrEnum):
    LABEL = "label"  # a classifier: a label column, stratified splits
    VALUE = "value"  # a regressor: a numeric target column
    TEXT = "text"  # a generator: a target text column, (input, target) pairs
    SPANS = "spans"  # a tagger: labelled character spans of a text, or BIO-tagged tokens


@dataclass(frozen=True)
class TrainingSupport:
    recipe: str  # "module:Class" under workers/
    target: Target = Target.LABEL
    dp: bool = False
    dp_refusal: str = ""  # why DP-SGD cannot train this task, shown when asked for
    # The task a --base must fit when it is not a registered version of this task (a text
    # head trains on any encoder: "embed"); None: this task itself.
    base_task: str | None = None
    # With no --base, start from SLUICE_DEFAULT_MODEL (a head on MiniLM).
    base_defaults_to_default_model: bool = False

    def __post_init__(self) -> None:
        coerce(self, "target", Target)


class TaskParams(BaseModel):
    """A task's own parameters. Subclass it; each field becomes `--name` in `sluice submit`
    and `sluice enrich`, a keyword argument of the SDK and a field of the REST bodies.
    Field types: str, int, float, bool, list[str] (comma-separated on the command line),
    dict[str, str] (a JSON file on the command line); give each a description."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Whether items carry their row's other fields (`Item.fields`) besides the text column,
    # for `prepare_items` to read (a prompt template over the row's columns).
    reads_item_fields: ClassVar[bool] = False
    # Whether rows need a text column; False: the task builds its inputs from the fields its
    # parameters name (row_fields), and reads_item_fields must be True.
    reads_text_column: ClassVar[bool] = True

    @classmethod
    def row_fields(cls, given: dict[str, Any]) -> list[str]:
        """Columns a table's row must be read with besides the text (`sluice enrich`, SQL
        sources), for the parameters given; unchecked values read as none."""
        return []

    @classmethod
    def prepare_items(cls, params: dict[str, Any], items: list[Item]) -> list[Item]:
        """The items as the job records them, given the checked parameters, all at once:
        `check_input` over them, then `prepare_batch`. A large input is read in batches, so
        the submit path calls the two itself (producers/submit_batches.py)."""
        cls.check_input(params, InputSeen.of(items))
        return cls.prepare_batch(params, items)

    @classmethod
    def prepare_batch(cls, params: dict[str, Any], items: list[Item]) -> list[Item]:
        """One batch of the input as the job records it: items may be marked `invalid`, each
        on its own (a batch says nothing of the rest of the input)."""
        return items

    @classmethod
    def check_input(cls, params: dict[str, Any], seen: "InputSeen") -> None:
        """At the end of the input (before the job is queued): refuse the whole submit by
        raising ValueError, said to the user, from what was seen of every item."""

    @classmethod
    def api_fields(cls, settings: Any) -> dict[str, tuple[Any, Any]]:
        """Fields the REST API takes in a stricter shape than this model (as `create_model`
        takes them: (type, pydantic Field)), so that its published JSON Schema says all the
        model's validators check, with `settings`' caps. The API still runs this model."""
        return {}


class NoParams(TaskParams):
    pass


@dataclass
class InputSeen:
    """What a task's `check_input` may know of a whole input read in batches: how many items
    were usable (not already `invalid`) and the union of their field names."""

    usable: int = 0
    fields: set[str] = dataclasses.field(default_factory=set)

    @classmethod
    def of(cls, items: list[Item]) -> "InputSeen":
        seen = cls()
        seen.add(items)
        return seen

    def add(self, items: list[Item]) -> None:
        for it in items:
            if not it.invalid:
                self.usable += 1
                if it.fields:
                    self.fields.update(it.fields)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    modality: Modality
    handler: str  # "module:Class", a workers.handlers.base.Handler
    description: str
    output: OutputShape
    params: type[TaskParams] = NoParams
    model: ModelNeeds = ModelNeeds()
    explainer: ExplainerSpec | None = None
    training: TrainingSupport | None = None
    chunk_size: int = 256  # items per chunk (one Celery message) unless SLUICE_CHUNK_SIZE
    # items per chunk when the job explains every row, where an explanation costs so much
    # more than the prediction that the general cap (producers/job_specs.py) is too many
    explained_chunk_size: int | None = None

    def __post_init__(self) -> None:
        coerce(self, "modality", Modality)
        coerce(self, "output", OutputShape)
        if not (isinstance(self.params, type) and issubclass(self.params, TaskParams)):
            raise ConfigError(f"TaskSpec {self.name!r}: params must be a TaskParams subclass")
        for field, kind in (
            ("model", ModelNeeds),
            ("explainer", ExplainerSpec),
            ("training", TrainingSupport),
        ):
            value = getattr(self, field)
            if value is not None and not isinstance(value, kind):
                raise ConfigError(f"TaskSpec {self.name!r}: {field} must be a {kind.__name__}")

    @property
    def queue(self) -> str:
        return self.modality.queue

    @property
    def explainable(self) -> bool:
        return self.explainer is not None

    @property
    def trainable(self) -> bool:
        return self.training is not None

    def check_params(self, given: dict[str, Any], settings: Any = None) -> dict[str, Any]:
        """The task's parameters, validated and as stored on the job (unset ones left out);
        a clear SluiceError for a parameter the task does not take or a bad value. Validators
        read the deployment's limits from `settings` (pydantic's validation context)."""
        given = {k: v for k, v in given.items() if v is not None}
        try:
            params = self.params.model_validate(given, context={"settings": settings})
        except ValidationError as exc:
            raise SluiceError(f"task {self.name!r}: {params_message(exc, self.params)}") from None
        return params.model_dump(mode="json", exclude_none=True)


def params_message(exc: ValidationError, model: type[TaskParams]) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "parameters"
        if error["type"] == "extra_forbidden":
            takes = ", ".join(model.model_fields) or "none"
            parts.append(f"takes no parameter {field!r} (its parameters: {takes})")
        elif error["type"] == "missing":
            parts.append(f"needs {field!r} ({model.model_fields[field].description or ''})")
        else:
            parts.append(f"{field}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def split_path(path: str) -> tuple[str, str]:
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"{path!r} is not a 'module:Class' path")
    return module, name


def import_object(path: str) -> Any:
    """The object a 'module:Name' path names (workers use it for handlers and recipes)."""
    module, name = split_path(path)
    return getattr(importlib.import_module(module), name)


def field_kind(annotation: Any) -> Any:
    """A parameter's type without Optional: str, int, float, bool, list or dict."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and args:
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:  # constraints: the type beneath
        annotation = typing.get_args(annotation)[0]
    return typing.get_origin(annotation) or annotation


def parse_param_text(name: str, annotation: Any, raw: str) -> Any:
    """A parameter given as text (a form field, a command-line option): a list is
    comma-separated, a dict is JSON; other types are left to the parameters model."""
    kind = field_kind(annotation)
    if kind is list:
        return [part for part in raw.split(",") if part.strip()]
    if kind is dict:
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SluiceError(f"{name} is not JSON: {exc}") from exc
    return raw
