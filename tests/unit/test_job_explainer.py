"""A job's explanation settings are its own (issue 22): chosen at submit through every front
door, recorded on the job, and what its rows are explained with, whatever the worker's
SLUICE_EXPLAIN_STEPS. No worker runs here: the recorded job is what a worker reads."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from ops.cli import main
from producers import Client, RecordingDispatcher
from producers.api import create_app
from producers.job_specs import retry_spec
from schemas.catalog import load_catalog
from schemas.errors import SluiceError
from schemas.explainer_settings import explainer_of
from schemas.settings import Settings
from storage.apikeys import ApiKeys

LABELS = ["billing", "shipping"]


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Client:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url="redis://127.0.0.1:1/0",  # never reached: the dispatcher sends nothing
        explain_steps=12,  # the operator's default, below the catalog's 24
    )
    return Client(settings, RecordingDispatcher())


def submitted(client: Client, **options: object) -> dict[str, object]:
    job = client.submit_texts(["where is my parcel"], "zero-shot-text", labels=LABELS, **options)
    return dict(client.ledger.job(job).params)


def test_the_job_records_its_method_and_steps(client: Client):
    params = submitted(client, explain="all", explain_steps=40)
    assert params["explainer"] == {"method": "layer_integrated_gradients", "steps": 40}


def test_without_steps_the_operators_default_is_recorded_and_nothing_without_explaining(
    client: Client,
):
    assert submitted(client, explain="sample:0.5")["explainer"] == {
        "method": "layer_integrated_gradients",
        "steps": 12,
    }
    assert "explainer" not in submitted(client)  # explains nothing: no explainer recorded


@pytest.mark.parametrize(
    "options, message",
    [
        ({"explain_steps": 8}, "the job explains nothing"),
        ({"explain": "all", "explain_steps": 1}, "between 2 and 512, got 1"),
        ({"explain": "all", "explain_steps": 100_000}, "between 2 and 512, got 100000"),
    ],
)
def test_steps_that_cannot_apply_are_refused_with_the_reason(
    client: Client, options: dict[str, object], message: str
):
    with pytest.raises(SluiceError, match=message):
        submitted(client, **options)


def test_a_worker_explains_a_job_by_its_record_not_by_its_own_setting(client: Client):
    spec = load_catalog().get("zero-shot-text")
    params = submitted(client, explain="all", explain_steps=6)
    other_worker = Settings(explain_steps=30)
    assert explainer_of(params, spec, other_worker)["steps"] == 6
    # a job recorded before jobs chose their steps: the worker's default, as before
    assert explainer_of({}, spec, other_worker)["steps"] == 30
    assert explainer_of({}, spec, Settings())["steps"] == spec.explainer.steps  # type: ignore[union-attr]


def test_a_retry_keeps_the_parents_steps(client: Client):
    job = client.submit_texts(
        ["a"], "zero-shot-text", labels=LABELS, explain="all", explain_steps=9
    )
    parent = client.ledger.job(job)
    assert retry_spec(parent, client.settings).params["explainer"]["steps"] == 9


def test_the_rest_body_takes_steps_where_the_task_explains(client: Client):
    key = ApiKeys(client.ledger.engine).create("acme")
    http = TestClient(create_app(client=client), headers={"X-API-Key": key.key})
    body = {"task": "zero-shot-text", "labels": LABELS, "items": ["where is my parcel"]}
    r = http.post("/v1/jobs", json={**body, "explain": "all", "explain_steps": 16})
    assert r.status_code == 201, r.text
    params = client.ledger.job(r.json()["job_id"]).params
    assert params["explainer"] == {"method": "layer_integrated_gradients", "steps": 16}
    shown = http.get(f"/v1/jobs/{r.json()['job_id']}").json()["explainer"]
    assert shown == {"method": "layer_integrated_gradients", "steps": 16}
    too_many = http.post("/v1/jobs", json={**body, "explain": "all", "explain_steps": 513})
    assert too_many.status_code == 422 and "explain_steps" in too_many.text
    embed = {"task": "embed", "items": ["x"], "explain_steps": 8}
    assert http.post("/v1/jobs", json=embed).status_code == 422  # explains nothing


def test_the_cli_refuses_steps_out_of_range_before_anything_is_read(tmp_path: Path):
    out = CliRunner().invoke(
        main,
        ["submit", str(tmp_path / "none.jsonl"), "--task", "embed", "--explain-steps", "1"],
    )
    assert out.exit_code == 2 and "--explain-steps" in out.output
