"""The result cache's flag and counts at the REST door: `"cache": false` in a JSON body or an
upload's form turns it off for that job; a job's view counts its cached rows."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_api import Api, make_api


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    yield from make_api(tmp_path, database_url, tmp_path / "models")


def test_a_job_may_turn_the_cache_off_at_the_rest_door(api: Api):
    on = api.submit(["hello", "world"])
    off = api.submit(["hello", "world"], cache=False)
    assert "result_cache" not in api.client.ledger.job(on["job_id"]).params
    assert api.client.ledger.job(off["job_id"]).params["result_cache"] is False
    assert on["counts"]["cached"] == 0
    r = api.http.post(
        "/v1/jobs",
        headers=api.auth(),
        files={"file": ("in.csv", "id,text\nr1,first row\n")},
        data={"task": "embed", "key_column": "id", "cache": "false"},
    )
    assert r.status_code == 201, r.text
    assert api.client.ledger.job(r.json()["job_id"]).params["result_cache"] is False
    body = {"task": "embed", "items": ["a"], "cache": "no"}
    assert api.http.post("/v1/jobs", headers=api.auth(), json=body).status_code == 422
