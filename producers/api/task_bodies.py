"""The request bodies of POST /v1/jobs and /v1/events, one shape per task of the catalog.

Each task's body names the task (`task` is the discriminator), takes that task's own parameters
(required ones required: a zero-shot job without `labels` is invalid), the item shape of its
modality and only the options it honours (`explain` only for explainable tasks, `model` only
for tasks with a model, required where there is no default). The server validates a body with
the same model it publishes, so the schema and the server agree on what is well formed; what a
JSON Schema cannot say (keys unique within a job, descriptions only for given labels) is in the
descriptions, and the server answers it with 422 too.
"""

import functools
import operator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)

from schemas.catalog import Catalog, unknown_task_message
from schemas.errors import SluiceError, UnknownTaskError
from schemas.explainer_settings import MAX_EXPLAIN_STEPS, MIN_EXPLAIN_STEPS
from schemas.modalities import Modality
from schemas.redaction import MODEL_TYPES
from schemas.settings import Settings
from schemas.task_spec import ModelKind, TaskSpec, field_kind
from storage.pii import PATTERN_TYPES

# Text a database can store: no NUL (lone surrogates never get past the JSON parser).
STORABLE = r"^[^\x00]*$"
EXPLAIN_POLICY = (
    r"^(all|none|(sample|low-confidence):(0(\.[0-9]{1,6})?|1(\.0{1,6})?|\.[0-9]{1,6}))$"
)
# What the API checks of a callback URL at submit (schemas/callback_urls.py, the worker checks
# the addresses its host resolves to): http(s), a host name of DNS labels, an optional port.
HOST_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
CALLBACK_URL = rf"^https?://{HOST_LABEL}(\.{HOST_LABEL})*(:{PORT})?(/[!#-;=?-~]*)?$"
MAX_KEY_CHARS = 512  # results.item_key

Key = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY_CHARS, pattern=STORABLE)]


def whole_number(value: Any) -> Any:
    """JSON Schema's integer: 3.0 is one (bodies are parsed strictly, so `true` is not)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


ItemKey = Key | Annotated[int, Field(ge=-(2**63), le=2**63 - 1), BeforeValidator(whole_number)]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=STORABLE)]
ExplainPolicy = Annotated[str, StringConstraints(pattern=EXPLAIN_POLICY)]
CallbackUrl = Annotated[str, StringConstraints(max_length=2048, pattern=CALLBACK_URL)]
Priority = Annotated[
    int, Field(ge=0, le=9, description="0 (lowest) to 9; default 5"), BeforeValidator(whole_number)
]
Text = Annotated[str, Field(description="the text to process")]
Media = Annotated[
    str,
    StringConstraints(min_length=1, pattern=STORABLE),
    Field(description="a path under the server's input roots, a file:// or a data: URI"),
]
Record = Annotated[dict[str, Any], Field(description="{feature: value}, as the model's schema")]

DUPLICATE_KEYS = '`key`s are unique within a job (1 and "1" are the same key)'


NoNul = Annotated[str, StringConstraints(pattern="^[^\\x00]*$")]
# A name with a NUL is refused: patternProperties alone would admit any value under such a
# name in the published schema, so it also says no other property is allowed.
ItemFields = Annotated[
    dict[NoNul, NoNul | int | float | bool],
    Field(json_schema_extra={"additionalProperties": False}),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# A text or media item's input may be missing or unusable: that item ends `invalid`, saying
# why, and the rest of the job goes on. A records item needs its record.
class TextItem(Strict):
    text: Text | None = None
    fields: ItemFields | None = Field(
        None,
        description="the item's other fields, by name: what a prompt template's {name} reads "
        "(generate), the `question` and `context` (answer-question; other names with the "
        "job's `question` and `context` templates)",
    )


class KeyedTextItem(TextItem):
    key: ItemKey


class MediaItem(Strict):
    media: Media | None = None


class KeyedMediaItem(MediaItem):
    key: ItemKey


class RecordItem(Strict):
    record: Record


class KeyedRecordItem(RecordItem):
    key: ItemKey


# Per modality: (an item without a key, the same with one). A job's items all have a `key`, or
# none has (they are then numbered 1, 2, ...).
ITEM_SHAPES: dict[Modality, tuple[Any, type[Strict]]] = {
    Modality.TEXT: (str | TextItem, KeyedTextItem),
    Modality.IMAGE: (MediaItem, KeyedMediaItem),
    Modality.AUDIO: (MediaItem, KeyedMediaItem),
    Modality.RECORDS: (RecordItem, KeyedRecordItem),
}


class SqlSource(Strict):
    """Rows of a table in a named SQL source (the server's SLUICE_API_SQL_SOURCES)."""

    name: str = Field(..., description="a name from SLUICE_API_SQL_SOURCES")
    table: str
    key_column: str
    text_column: str = "text"
    media_column: str | None = Field(
        None, description="images/audio: the column of paths under the input roots or URIs"
    )
    where: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="column = value filters, ANDed; bound values"
    )


# The PII types a job's redaction may name (schemas/redaction.py; storage/pii).
PiiTypeName = Literal.__getitem__((*PATTERN_TYPES, *MODEL_TYPES))


Retention = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,4}[smhdw]$")]


class JobOptions(Strict):
    """What every job of a task takes: the task's own parameters are fields of its subclass
    (`task_params` hands them to the submit)."""

    task: str
    priority: Priority = 5
    callback_url: CallbackUrl | None = Field(
        None, description="POSTed a signed payload when the job ends"
    )
    model: str | None = None
    explain: str = "none"
    explain_steps: int | None = None
    retention: Retention | None = Field(
        None,
        description="how long the job's data is kept after it ends (90m, 12h, 30d, 2w); at "
        "most the tenant's limit, which is the default; then it is removed as by DELETE",
    )
    deadline: Retention | None = Field(
        None,
        description="end the job this long after submit (90m, 12h, 2d): rows not finished "
        "by then end `error` with the reason `expired`; finished ones are kept",
    )
    cache: bool = Field(
        True,
        description="false: run the model for every item, even those this tenant's result "
        "cache holds (rows taken from it are marked `cached` and counted on the job)",
    )
    redact: Literal["detect", "mask", "hash"] | None = Field(
        None,
        description="PII before anything is stored: detect (each row records what was "
        "found), mask (values become <EMAIL>, <PERSON>) or hash (a keyed token per value); "
        "left out: none, or detect when `redact_types` is given",
    )
    redact_types: list[PiiTypeName] | None = Field(  # type: ignore[valid-type]
        None,
        min_length=1,
        description="the PII types to act on (default: all): EMAIL, PHONE, CREDIT_CARD, IBAN, "
        "IP_ADDRESS, national IDs, CN_MOBILE, CN_RESIDENT_ID, and PERSON, PLACE, ORG (found by "
        "the server's SLUICE_PII_MODEL)",
    )

    def task_params(self, catalog: Catalog) -> dict[str, Any]:
        spec = catalog.get(self.task)
        return {
            k: getattr(self, k) for k in spec.params.model_fields if getattr(self, k) is not None
        }


def _one_of_inputs(schema: dict[str, Any]) -> None:
    """`items` or `source`, never both, never neither; and neither may be null."""
    schema["oneOf"] = [{"required": ["items"]}, {"required": ["source"]}]
    for name in ("items", "source"):
        schema["properties"][name].pop("default", None)


class Inputs(Strict):
    """A job's items (each task's subclass types them; the server may also take `source`)."""

    items: Any

    @model_validator(mode="after")
    def _unique_keys(self) -> "Inputs":
        keys = [str(item.key) for item in self.items or [] if hasattr(item, "key")]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate keys: {DUPLICATE_KEYS}")
        return self


class ItemsOrSource(Inputs):
    """Exactly one of `items` or `source`; neither may be null (leave the field out)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_of_inputs)
    items: Any = None
    source: SqlSource = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _one_input(self) -> "ItemsOrSource":
        if (self.items is None) == (self.source is None):
            raise ValueError("give exactly one of `items` (inline) or `source` (a SQL table)")
        return self


def _inputs(settings: Settings) -> type[Inputs]:
    """The base of a job body and its `source` field. With no SQL source configured
    (SLUICE_API_SQL_SOURCES) a job's input is its items; the names of those configured are
    not published (a tenant learns only those granted to it, from a refusal)."""
    return ItemsOrSource if settings.api_sql_sources else Inputs


@dataclass(frozen=True)
class TaskBodies:
    """The request models of one app: a body per task, and the unions the routes parse."""

    jobs: dict[str, type[JobOptions]]  # POST /v1/jobs, JSON
    events: dict[str, type[JobOptions]]  # POST /v1/events
    options: dict[str, type[JobOptions]]  # the options of a multipart upload
    job: TypeAdapter[Any]
    event: TypeAdapter[Any]


def task_bodies(catalog: Catalog, settings: Settings) -> TaskBodies:
    jobs: dict[str, type[JobOptions]] = {}
    events: dict[str, type[JobOptions]] = {}
    options: dict[str, type[JobOptions]] = {}
    base = _inputs(settings)
    for spec in catalog:
        common = _common_fields(spec, settings)
        name = "".join(part.title() for part in spec.name.split("-"))
        options[spec.name] = create_model(f"{name}Options", __base__=JobOptions, **common)
        keyless, keyed = ITEM_SHAPES[spec.modality]
        cap = Field(min_length=1, max_length=settings.api_max_items)
        items = Annotated[list[keyless], cap] | Annotated[list[keyed], cap]  # type: ignore[valid-type]
        about = f"the items, in order; every item has a `key` or none has; {DUPLICATE_KEYS}"
        required = ... if base is Inputs else None
        jobs[spec.name] = create_model(
            f"{name}Job",
            __base__=_bases(JobOptions, base),
            __doc__=f"A {spec.name} job: {spec.description}.",
            items=(items, Field(required, description=about)),
            **common,
        )
        events[spec.name] = create_model(
            f"{name}Event",
            __base__=_bases(JobOptions, keyed),
            __doc__=f"One {spec.name} item: {spec.description}.",
            key=(Key, Field("event", description="the item's key in the results")),
            **common,
        )
    return TaskBodies(jobs, events, options, _union(jobs), _union(events))


def _bases(*classes: type[BaseModel]) -> Any:
    """A job's options and its input as the bases of one model."""
    return classes


def _union(models: dict[str, type[JobOptions]]) -> TypeAdapter[Any]:
    members = list(models.values())
    if len(members) == 1:
        return TypeAdapter(members[0])
    union = functools.reduce(operator.or_, members)  # the bodies' union, told apart by `task`
    tagged: Any = Annotated[union, Discriminator("task")]
    return TypeAdapter(tagged)


def _common_fields(spec: TaskSpec, settings: Settings) -> dict[str, Any]:
    fields: dict[str, Any] = {"task": (Literal[spec.name], ...)}  # type: ignore[valid-type]
    if spec.model.kind is ModelKind.NONE:
        fields["model"] = (None, Field(None, description="this task uses no model"))
    else:
        about = spec.model.description
        if spec.model.uses_default_model:
            fields["model"] = (ModelName | None, Field(None, description=f"{about}; default "
                                                       "the server's default model"))  # fmt: skip
        else:
            fields["model"] = (ModelName, Field(..., description=about))
    if spec.explainable:
        fields["explain"] = (
            ExplainPolicy,
            Field("none", description="none | all | sample:RATE | low-confidence:THRESHOLD"),
        )
        fields["explain_steps"] = (
            Annotated[
                int,
                Field(ge=MIN_EXPLAIN_STEPS, le=MAX_EXPLAIN_STEPS),
                BeforeValidator(whole_number),
            ]
            | None,
            Field(
                None,
                description="the explainer's steps for this job, only with an explain policy "
                "other than none (recorded on the job and on every row's lineage); default "
                "the server's SLUICE_EXPLAIN_STEPS, else the "
                f"catalog's ({spec.explainer.steps if spec.explainer else 0})",
            ),
        )
    else:
        fields["explain"] = (
            Literal["none"],
            Field("none", description="this task explains nothing"),
        )
        fields["explain_steps"] = (None, Field(None, description="this task explains nothing"))
    stricter = spec.params.api_fields(settings)
    for name, field in spec.params.model_fields.items():
        annotation: Any = field.annotation
        if field_kind(annotation) is int:  # JSON Schema's integer: 3.0 is one
            annotation = Annotated[annotation, BeforeValidator(whole_number)]
        fields[name] = stricter.get(name, (annotation, field))
    return {**fields, "__validators__": {"_params": _params_check(spec, settings)}}


def _params_check(spec: TaskSpec, settings: Settings) -> Any:
    """The task's own checks (its validators, with the deployment's caps) while the body is
    parsed: a bad parameter is a 422 like any other malformed body."""

    def check(body: JobOptions) -> JobOptions:
        if body.explain_steps is not None and body.explain == "none":
            raise ValueError("explain_steps needs an explain policy other than none")
        given = {name: getattr(body, name) for name in spec.params.model_fields}
        try:
            spec.check_params(given, settings)
        except SluiceError as exc:
            raise ValueError(str(exc)) from None
        return body

    return model_validator(mode="after")(check)


def parse_body(adapter: TypeAdapter[Any], raw: bytes, known: list[str]) -> Any:
    """A JSON body as its task's model (strictly: `"5"` is not a priority). An unknown task
    gets the catalog's message, as at every front door (400); anything else malformed, 422."""
    try:
        return adapter.validate_json(raw, strict=True)
    except ValidationError as exc:
        tags = [e["ctx"]["tag"] for e in exc.errors() if e["type"] == "union_tag_invalid"]
        if tags and isinstance(tags[0], str):
            raise UnknownTaskError(unknown_task_message(tags[0], known)) from None
        raise


def validation_error(exc: ValidationError) -> RequestValidationError:
    """A 422 naming each problem, without echoing the input back (it may be large, or hold
    text that does not encode)."""
    return RequestValidationError(
        exc.errors(include_url=False, include_context=False, include_input=False)
    )
