"""Request and response shapes of the REST API (they are what /openapi.json publishes). The
request bodies gain one field per task parameter of the catalog (`request_bodies`)."""

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from schemas.catalog import Catalog

Scalar = str | int | float | bool | None


class JobItem(BaseModel):
    """One item: `text` for text tasks, `media` for images and audio, `record` for records."""

    model_config = ConfigDict(extra="forbid")
    key: str | int | None = Field(None, description="unique per job; default: 1, 2, ...")
    text: Any = Field(None, description="the text to process (text tasks)")
    media: Any = Field(
        None,
        description="images/audio: a path under the server's input "
        "roots, a file:// URI or a data: URI",
    )
    record: dict[str, Any] | None = Field(None, description="records: {feature: value}")


class SqlSource(BaseModel):
    """Rows of a table in a named SQL source (the server's SLUICE_API_SQL_SOURCES)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., description="a name from SLUICE_API_SQL_SOURCES")
    table: str
    key_column: str
    text_column: str = "text"
    media_column: str | None = Field(
        None, description="images/audio: the column of paths under the input roots or URIs"
    )
    where: dict[str, Scalar] = Field(
        default_factory=dict, description="column = value filters, ANDed; bound values"
    )


class JobOptions(BaseModel):
    """What every job takes; each task's own parameters are added by `request_bodies`."""

    model_config = ConfigDict(extra="forbid")
    task: str = Field(..., examples=["zero-shot-text"])
    model: str | None = Field(None, description="model directory or hub id; default MiniLM")
    explain: str = Field("none", description="none | all | sample:RATE | low-confidence:T")
    priority: int = Field(5, ge=0, le=9)
    callback_url: str | None = Field(None, description="POSTed a signed payload at the end")

    def task_params(self, catalog: Catalog) -> dict[str, Any]:
        """The task parameters this body gives (checked by the task's model at submit)."""
        return {
            name: getattr(self, name)
            for name in catalog.parameters()
            if getattr(self, name, None) is not None
        }


class JobRequest(JobOptions):
    """Exactly one of `items` (inline) or `source` (a SQL table)."""

    items: list[JobItem | str] | None = None
    source: SqlSource | None = None


class EventRequest(JobOptions):
    """One item: `text`, `media` or `record`, as the task needs (see JobItem)."""

    key: str = "event"
    text: Any = Field(None, description="the text to process (text tasks)")
    media: Any = Field(None, description="images/audio: path, file:// or data: URI")
    record: dict[str, Any] | None = Field(None, description="records: {feature: value}")


class Counts(BaseModel):
    total: int
    ok: int
    invalid: int
    error: int


class JobOut(BaseModel):
    job_id: str
    status: str
    task: str
    model: str
    model_version: str
    explain: str
    counts: Counts
    processed: int
    chunks_total: int
    chunks_done: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    elapsed_s: float | None
    parent_job_id: str | None = None
    callback: dict[str, Any] | None = None


class JobList(BaseModel):
    jobs: list[JobOut]


class ResultsPage(BaseModel):
    job_id: str
    items: list[dict[str, Any]]
    next_cursor: int | None = Field(None, description="pass as ?cursor= for the next page")


class EventOut(BaseModel):
    job_id: str
    status: str
    result: dict[str, Any] | None = None
    status_url: str
    results_url: str


class ModelOut(BaseModel):
    task: str
    model: str
    model_version: str
    jobs: int


@dataclass(frozen=True)
class RequestBodies:
    """The request models of one app, with the catalog's task parameters as fields."""

    options: type[JobOptions]
    job: type[JobRequest]
    event: type[EventRequest]


def request_bodies(catalog: Catalog, max_items: int) -> RequestBodies:
    """`max_items`: the item cap, checked while the body is parsed (not once it is built)."""
    fields: dict[str, Any] = {}
    for name, (field, tasks) in catalog.parameters().items():
        description = f"{field.description or name} (tasks: {', '.join(tasks)})"
        fields[name] = (field.annotation | None, Field(None, description=description))
    return RequestBodies(
        options=create_model("JobOptions", __base__=JobOptions, **fields),
        job=create_model(
            "JobRequest",
            __base__=JobRequest,
            items=(list[JobItem | str] | None, Field(None, max_length=max_items)),
            **fields,
        ),
        event=create_model("EventRequest", __base__=EventRequest, **fields),
    )
