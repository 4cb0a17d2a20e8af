"""Usage and the in-flight limit at the front doors: GET /v1/usage (the caller's tenant only),
the per-tenant series on /metrics, `sluice usage`, and a refused submission over REST."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ops.cli import main
from schemas.tenants import Role
from tests.unit.test_api import Api, make_api


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def api(tmp_path: Path, database_url: str, model_cache: Path) -> Iterator[Api]:
    yield from make_api(tmp_path, database_url, model_cache, tenant_max_in_flight=5)


def test_usage_is_reported_per_tenant_on_the_api_metrics_and_cli(
    api: Api, database_url: str, monkeypatch: pytest.MonkeyPatch
):
    job = api.submit([{"key": "1", "text": "a"}, {"key": "2", "text": "b"}, {"key": "3"}])
    api.finish(job["job_id"], errors=("2",))
    mine = api.http.get("/v1/usage", headers=api.auth("a"))
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert body["tenant"] == "acme" and body["total_items"] == {"ok": 1, "invalid": 1, "error": 1}
    (day,) = body["days"]
    assert day["task"] == "embed" and day["tokens"] is None
    theirs = api.http.get("/v1/usage", headers=api.auth("b")).json()
    assert theirs["days"] == [] and theirs["total_items"] == {"ok": 0, "invalid": 0, "error": 0}
    later = api.http.get("/v1/usage?start=2099-01-01", headers=api.auth("a"))
    assert later.status_code == 200 and later.json()["days"] == []  # an empty range
    assert api.http.get("/v1/usage?end=0", headers=api.auth("a")).status_code == 422
    assert api.http.get("/v1/usage").status_code == 401

    assert api.http.get("/v1/usage?tenant=acme", headers=api.auth("b")).status_code == 403
    operator = api.keys.create("ops", role=Role.OPERATOR).key
    seen = api.http.get("/v1/usage?tenant=acme", headers={"Authorization": f"Bearer {operator}"})
    assert seen.json()["total_items"]["ok"] == 1
    metrics = api.http.get("/metrics", headers={"Authorization": f"Bearer {operator}"}).text
    assert 'sluice_tenant_items_total{outcome="ok",task="embed",tenant="acme"} 1.0' in metrics
    assert 'sluice_tenant_model_seconds_total{task="embed",tenant="acme"}' in metrics

    monkeypatch.setenv("SLUICE_DATABASE_URL", database_url)
    monkeypatch.setenv("SLUICE_BROKER_URL", "redis://127.0.0.1:1/0")
    out = CliRunner().invoke(main, ["usage", "--tenant", "acme", "--json"])
    assert out.exit_code == 0, out.output
    (row,) = [json.loads(line) for line in out.output.splitlines()]
    assert row["items"] == {"ok": 1, "invalid": 1, "error": 1} and row["tenant"] == "acme"


def test_a_submission_over_the_tenants_limit_is_refused_over_rest(api: Api):
    api.submit([{"key": str(i), "text": "t"} for i in range(4)])
    r = api.http.post(
        "/v1/jobs",
        json={"task": "embed", "items": [{"key": "x", "text": "t"}, {"key": "y", "text": "t"}]},
        headers=api.auth("a"),
    )
    assert r.status_code == 429 and "SLUICE_TENANT_MAX_IN_FLIGHT" in r.json()["detail"]
    assert 5 <= int(r.headers["Retry-After"]) <= 3600
    api.submit([{"key": "z", "text": "t"}], who="b")  # another tenant is not held back
