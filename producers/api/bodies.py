"""The response shapes of the REST API (as /openapi.json publishes them). The request bodies,
one shape per task of the catalog, are in task_bodies.py."""

from typing import Any

from pydantic import BaseModel, Field


class Counts(BaseModel):
    total: int
    ok: int
    invalid: int
    error: int
    cached: int = Field(0, description="of the ok items, those taken from the result cache")


class Tokens(BaseModel):
    prompt: int
    completion: int
    total: int


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
    tokens: Tokens | None = Field(
        None, description="prompt and completion tokens, for tasks that count them (generate)"
    )
    explainer: dict[str, Any] | None = Field(
        None, description="how its rows are explained: the method and its steps; null: not"
    )
    rows_per_s: float | None = Field(
        None, description="rows per second, weighted over the last minute; null until known"
    )
    eta_seconds: float | None = Field(
        None,
        description="seconds until it should end, from that rate; null until 1 % of its rows "
        "are done and two chunks have ended in the last minute, and once it has ended",
    )
    parent_job_id: str | None = None
    callback: dict[str, Any] | None = None
    deadline_at: str | None = Field(
        None, description="its deadline: unfinished rows then end `expired`; null: none"
    )


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
