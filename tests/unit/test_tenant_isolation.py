"""Two tenants through the REST API: globex cannot read acme's SQL tables, files, model
directories, registry names or jobs by any route, and cannot tell that they exist (a refusal
reads the same for something of acme's as for something that does not exist); acme uses a
`digits@production` the operator shared with it, as the README shows. Operator routes need an
operator key."""

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producers.model_refs import weights_sha256
from schemas.errors import SluiceError
from schemas.tenants import Role
from storage.model_shares import ModelShares
from tests.unit.test_api import Api, make_api
from tests.unit.test_api import model_cache as model_cache  # a fixture this module uses


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    for tenant in ("acme", "globex"):
        (tmp_path / "roots" / tenant).mkdir(parents=True)
    return tmp_path / "roots"


@pytest.fixture
def warehouse(tmp_path: Path) -> str:
    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orders (id TEXT, body TEXT)")
        conn.execute("CREATE TABLE payroll (id TEXT, body TEXT)")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [("o1", "late parcel")])
        conn.executemany("INSERT INTO payroll VALUES (?, ?)", [("p1", "salary 90k")])
    return f"sqlite:///{db}"


@pytest.fixture
def api(
    tmp_path: Path,
    database_url: str,
    model_cache: Path,
    roots: Path,
    warehouse: str,
) -> Iterator[Api]:
    grants = {
        "acme": {
            "sql_sources": {"wh": ["orders"]},
            "input_roots": [str(roots / "acme")],
            "model_dirs": [str(tmp_path / "acme-models")],
        }
    }
    yield from make_api(
        tmp_path,
        database_url,
        model_cache,
        input_roots=str(roots),
        api_sql_sources={"wh": warehouse},
        tenant_grants=grants,
    )


def post_job(api: Api, who: str, body: dict[str, Any]) -> Any:
    return api.http.post("/v1/jobs", json=body, headers=api.auth(who))


def detail(response: Any) -> str:
    return str(response.json()["detail"])


def test_sql_tables_are_read_only_as_granted(api: Api):
    source = {"name": "wh", "table": "orders", "key_column": "id", "text_column": "body"}
    mine = post_job(api, "a", {"task": "embed", "source": source})
    assert mine.status_code == 201, mine.text
    assert mine.json()["counts"]["total"] == 1
    refusals = {
        "acme's table": post_job(api, "b", {"task": "embed", "source": source}),
        "payroll": post_job(api, "a", {"task": "embed", "source": {**source, "table": "payroll"}}),
        "no such source": post_job(
            api, "b", {"task": "embed", "source": {**source, "name": "nope"}}
        ),
    }
    for what, r in refusals.items():
        assert r.status_code == 400, (what, r.text)
        assert "open to you" in detail(r), what
        assert "salary" not in r.text and "p1" not in r.text and "sqlite" not in r.text
    # globex's refusal for acme's real source reads as one for a source that does not exist
    assert detail(refusals["acme's table"]).replace("'wh'", "'nope'") == detail(
        refusals["no such source"]
    )


def test_files_are_read_only_under_the_tenants_own_roots(api: Api, roots: Path, tmp_path: Path):
    from tests.media_files import png_bytes

    (roots / "acme" / "scan.png").write_bytes(png_bytes())
    theirs = api.client.items_from_rows(
        ["key", "path"],
        iter(
            [
                {"key": "x", "path": str(roots / "acme" / "scan.png")},
                {"key": "y", "path": str(roots / "acme" / "missing.png")},
            ]
        ),  # fmt: skip
        "classify-image",
        key_column="key",
        media_column="path",
        tenant="globex",
    )
    assert [i.invalid is not None for i in theirs] == [True, True]
    real, missing = (i.invalid or "" for i in theirs)
    assert real.replace("scan", "missing") == missing  # the same words for both
    assert "no input roots are open to this job" in real
    mine = api.client.items_from_rows(
        ["key", "path"],
        iter([{"key": "x", "path": str(roots / "acme" / "scan.png")}]),
        "classify-image",
        key_column="key",
        media_column="path",
        tenant="acme",
    )
    assert mine[0].invalid is None and mine[0].path


def test_model_directories_and_hub_ids_only_as_granted(api: Api, demo_models: Path, tmp_path: Path):
    digits = demo_models / "digits-classifier"
    mine_dir = tmp_path / "acme-models" / "digits"
    shutil.copytree(digits, mine_dir)
    items = [{"key": "k", "media": "data:image/png;base64,AAAA"}]
    ok = post_job(api, "a", {"task": "classify-image", "model": str(mine_dir), "items": items})
    assert ok.status_code == 201, ok.text
    refused = {
        "a server directory": post_job(
            api, "b", {"task": "classify-image", "model": str(digits), "items": items}
        ),
        "acme's directory": post_job(
            api, "b", {"task": "classify-image", "model": str(mine_dir), "items": items}
        ),
        "a missing directory": post_job(
            api, "b", {"task": "classify-image", "model": str(tmp_path / "nope"), "items": items}
        ),
        "a hub id": post_job(
            api, "b", {"task": "classify-image", "model": "google/vit-base", "items": items}
        ),
    }
    for what, r in refused.items():
        assert r.status_code == 404, (what, r.text)  # one answer: no such model for you
        assert "is not available to you" in detail(r), what
        assert "config.json" not in r.text and "does not exist" not in r.text, what


def test_registry_names_are_the_tenants_own_and_shares_are_explicit(
    api: Api, demo_models: Path, tmp_path: Path
):
    digits = demo_models / "digits-classifier"
    sha = weights_sha256(digits, tmp_path)
    registry = api.client.registry
    registry.register("digits", "classify-image", str(digits), sha, {}, tenant="default")
    registry.promote("digits", 1)
    registry.register("fraud-secret", "classify-image", str(digits), sha, {}, tenant="globex")
    items = [{"key": "k", "media": "data:image/png;base64,AAAA"}]
    body = {"task": "classify-image", "model": "digits@production", "items": items}
    before = post_job(api, "a", body)
    assert before.status_code == 404 and "no model named 'digits'" in detail(before)
    assert "fraud-secret" not in before.text  # globex's names are never listed to acme
    ModelShares(api.client.ledger.engine).share("default", "digits", None, "acme")
    after = post_job(api, "a", body)
    assert after.status_code == 201, after.text
    assert after.json()["model"] == "digits@1"
    listed = api.http.get("/v1/registry", headers=api.auth("a")).json()
    assert [v["ref"] for v in listed] == ["digits@1"] and listed[0]["shared"] is True
    assert "training_run_id" not in listed[0] and "data_fingerprint" not in listed[0]
    assert api.http.get("/v1/registry", headers=api.auth("b")).json()[0]["ref"] == (
        "fraud-secret@1"
    )
    # acme cannot tell globex's name from a name nobody has
    theirs = post_job(api, "a", {**body, "model": "fraud-secret@1"})
    nobody = post_job(api, "a", {**body, "model": "nothing-here@1"})
    assert theirs.status_code == nobody.status_code == 404
    assert detail(theirs).replace("fraud-secret", "nothing-here") == detail(nobody)
    # a share taken back is not reached through a retry of a job that ran under it
    api.finish(after.json()["job_id"], errors=("k",))
    ModelShares(api.client.ledger.engine).unshare("default", "digits", None, "acme")
    retry = api.http.post(f"/v1/jobs/{after.json()['job_id']}/retry", headers=api.auth("a"))
    assert retry.status_code == 404 and "no model named 'digits'" in detail(retry)


def test_reserved_tenants_and_operator_routes(api: Api):
    with pytest.raises(SluiceError, match="reserved"):
        api.keys.create("default")
    with pytest.raises(SluiceError, match="reserved"):
        api.keys.create("Public")
    op = api.keys.create("default", "ops", Role.OPERATOR)
    operator = {"Authorization": f"Bearer {op.key}"}
    job = api.submit(["hello"])
    for path in ("/metrics", "/v1/operator/jobs", "/v1/operator/shares"):
        assert api.http.get(path, headers=api.auth("a")).status_code == 403, path
        assert api.http.get(path).status_code == 401, path
        assert api.http.get(path, headers=operator).status_code == 200, path
    seen = api.http.get("/v1/operator/jobs", headers=operator).json()["jobs"]
    assert [(j["job_id"], j["tenant"]) for j in seen] == [(job["job_id"], "acme")]
    shared = api.http.post(
        "/v1/operator/shares",
        json={"ref": "nothing@1", "tenant": "acme"},
        headers=operator,
    )
    assert shared.status_code == 400 and "has no model named 'nothing'" in detail(shared)
    assert "sluice_jobs" in api.http.get("/metrics", headers=operator).text


def test_a_hub_grant_never_reaches_a_server_directory(api: Api, monkeypatch: pytest.MonkeyPatch):
    """`tests/plugins` reads as a hub id and exists under the server's working directory: a
    tenant granted hub models gets the hub's answer, never that directory."""
    from producers import model_refs
    from schemas.errors import ModelNotFoundError
    from schemas.tenants import TenantGrant

    asked: list[str] = []

    def hub(ref: str) -> Path:
        asked.append(ref)
        raise ModelNotFoundError(f"model {ref!r} is not in the hub cache")

    monkeypatch.setattr(model_refs, "_from_hub", hub)
    api.client.settings.tenant_grants = {"globex": TenantGrant(hub_models=True)}
    items = [{"key": "k", "text": "hello"}]
    r = post_job(api, "b", {"task": "embed", "model": "tests/plugins", "items": items})
    assert r.status_code == 404 and asked == ["tests/plugins"]
    assert str(Path("tests/plugins").resolve()) not in r.text
