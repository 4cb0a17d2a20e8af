"""Request and response shapes of the REST API (they are what /openapi.json publishes)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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
    where: dict[str, Scalar] = Field(
        default_factory=dict, description="column = value filters, ANDed; bound values"
    )


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = Field(..., examples=["zero-shot-text"])
    model: str | None = Field(None, description="model directory or hub id; default MiniLM")
    explain: str = Field("none", description="none | all | sample:RATE | low-confidence:T")
    labels: list[str] | None = None
    label_descriptions: dict[str, str] | None = None
    priority: int = Field(5, ge=0, le=9)
    callback_url: str | None = Field(None, description="POSTed a signed payload at the end")


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
