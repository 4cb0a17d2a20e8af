"""The console's rules over HTTP, without a browser (tests/browser drives chromium): the
session cookie and what ends it, CSRF on every action, the security headers, a tenant's own
jobs only, downloads in every export format. SQLite, and PostgreSQL when configured."""

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ops.console.site import create_site
from producers import Client, RecordingDispatcher
from schemas.jobs import Item
from schemas.settings import Settings
from storage.apikeys import ApiKeys
from tests.browser.console_jobs import failing_when, labelled, settle


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Client:
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, broker_url="redis://127.0.0.1:1/0"
    )
    return Client(settings, RecordingDispatcher())


def signed_in(client: Client, key: str) -> TestClient:
    web = TestClient(create_site(client=client), base_url="http://127.0.0.1")
    form = web.get("/console/sign-in").text
    token = re.search(r'name="token" value="([^"]+)"', form)
    assert token
    answer = web.post(
        "/console/sign-in", data={"api_key": key, "token": token.group(1)}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    return web


def csrf_of(web: TestClient) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', web.get("/console/jobs").text)
    assert found
    return found.group(1)


def test_a_revoked_key_closes_its_consoles(client: Client):
    keys = ApiKeys(client.ledger.engine)
    made = keys.create("acme")
    web = signed_in(client, made.key)
    assert web.get("/console/jobs", follow_redirects=False).status_code == 200
    keys.revoke(made.info.id)
    answer = web.get("/console/jobs", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/sign-in"


def test_sign_in_needs_the_forms_own_token(client: Client):
    key = ApiKeys(client.ledger.engine).create("acme").key
    web = TestClient(create_site(client=client), base_url="http://127.0.0.1")
    web.get("/console/sign-in")  # the browser holds the token's cookie, the form lacks it
    answer = web.post("/console/sign-in", data={"api_key": key, "token": "made-up"})
    assert answer.status_code == 403 and "sluice_console=" not in answer.headers.get(
        "set-cookie", ""
    )


def test_every_action_needs_the_sessions_csrf_token(client: Client):
    key = ApiKeys(client.ledger.engine).create("acme").key
    web = signed_in(client, key)
    job = client.submit_items([Item(key="a", text="x")], task="embed", tenant="acme")
    for path in (f"/console/jobs/{job}/cancel", f"/console/jobs/{job}/retry", "/console/sign-out"):
        assert web.post(path, data={"csrf": "guess"}).status_code == 403, path
        assert web.post(path).status_code == 403, path
    assert client.status(job).status == "queued"
    done = web.post(f"/console/jobs/{job}/cancel", data={"csrf": csrf_of(web)})
    assert done.status_code == 200 and client.status(job).status == "cancelled"


def test_pages_carry_a_content_security_policy_and_are_not_cached(client: Client):
    key = ApiKeys(client.ledger.engine).create("acme").key
    web = signed_in(client, key)
    for path in ("/console/sign-in", "/console/jobs", "/console/models"):
        headers = web.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    assert "content-security-policy" not in web.get("/healthz").headers  # the API's own


def test_a_tenant_sees_only_its_own_jobs(client: Client):
    keys = ApiKeys(client.ledger.engine)
    mine = client.submit_items([Item(key="a", text="mine")], task="embed", tenant="acme")
    theirs = client.submit_items([Item(key="b", text="theirs")], task="embed", tenant="umbrella")
    web = signed_in(client, keys.create("acme").key)
    listed = web.get("/console/jobs").text
    assert mine[:12] in listed and theirs[:12] not in listed
    assert web.get(f"/console/jobs/{theirs}").status_code == 404
    assert web.get(f"/console/jobs/{theirs}/download/csv").status_code == 404
    assert web.get(f"/console/progress.json?ids={theirs}&ids={mine}").json()["jobs"].keys() == {
        mine
    }
    assert web.get("/console/system").status_code == 403  # a tenant's key


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "html"])
def test_downloads_in_every_export_format(client: Client, fmt: str):
    key = ApiKeys(client.ledger.engine).create("acme").key
    job = client.submit_items([Item(key="row-1", text="x")], task="embed", tenant="acme")
    settle(client.ledger, job, labelled)
    answer = signed_in(client, key).get(f"/console/jobs/{job}/download/{fmt}")
    assert answer.status_code == 200 and (b"row-1" in answer.content or fmt == "parquet")
    assert f'filename="{job}.{fmt}"' in answer.headers["content-disposition"]


def test_a_signed_out_poll_gets_401_and_leaves_the_sign_in_form_working(client: Client):
    """An old tab polling after its session ended must not renew the sign-in form's token
    under another tab (which would then be refused)."""
    key = ApiKeys(client.ledger.engine).create("acme").key
    web = TestClient(create_site(client=client), base_url="http://127.0.0.1")
    token = re.search(r'name="token" value="([^"]+)"', web.get("/console/sign-in").text)
    assert token
    poll = web.get("/console/progress.json?ids=x", headers={"sec-fetch-mode": "cors"})
    assert poll.status_code == 401
    assert web.get("/console/progress.json?ids=x").status_code == 401  # by its path too
    answer = web.post(
        "/console/sign-in", data={"api_key": key, "token": token.group(1)}, follow_redirects=False
    )
    assert answer.status_code == 303


def test_bounds_are_answered_not_crashed_on(client: Client):
    key = ApiKeys(client.ledger.engine).create("acme").key
    web = signed_in(client, key)
    job = client.submit_items([Item(key="a", text="x")], task="embed", tenant="acme")
    many = "&".join(f"ids={job}" for _ in range(100))  # a list page's worth of bars
    assert web.get(f"/console/progress.json?{many}").json()["jobs"].keys() == {job}
    assert web.get(f"/console/jobs/{job}?after=99999999999999999999").status_code == 422


def test_a_retry_form_sent_twice_makes_one_retry_job(client: Client):
    key = ApiKeys(client.ledger.engine).create("acme").key
    web = signed_in(client, key)
    job = client.submit_items(
        [Item(key=f"k{i}", text=f"BOOM {i}" if i else "fine") for i in range(3)],
        task="embed",
        tenant="acme",
    )
    settle(client.ledger, job, failing_when("BOOM"))
    page = web.get(f"/console/jobs/{job}").text
    once = re.search(r'name="once" value="([^"]+)"', page)
    assert once
    form = {"csrf": csrf_of(web), "once": once.group(1)}
    first = web.post(f"/console/jobs/{job}/retry", data=form, follow_redirects=False)
    again = web.post(f"/console/jobs/{job}/retry", data=form, follow_redirects=False)
    assert first.headers["location"] == again.headers["location"] != f"/console/jobs/{job}"
    retries = [v for v in client.ledger.jobs() if v.parent_job_id == job]
    assert len(retries) == 1 and retries[0].counts.total == 2


def test_the_timeline_names_a_chunk_sent_back_after_a_failed_try_retried(client: Client):
    from sqlalchemy import update

    from storage import tables as t

    key = ApiKeys(client.ledger.engine).create("acme").key
    client.settings.chunk_size = 1
    job = client.submit_items(
        [Item(key=f"k{i}", text="x") for i in range(3)], task="embed", tenant="acme"
    )
    with client.ledger.engine.begin() as c:  # chunk 0 failed once and waits to run again
        c.execute(update(t.Chunk).where(t.Chunk.job_id == job, t.Chunk.seq == 0).values(attempts=1))
    page = signed_in(client, key).get(f"/console/jobs/{job}").text
    assert "retried: 1" in page and "queued: 2" in page
