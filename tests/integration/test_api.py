"""The REST API over real HTTP (uvicorn), end to end on the real stack (Redis, Celery, Ray,
SQLite/PostgreSQL): submit, get the signed callback on a local receiver, fetch the results;
an event answered within ?wait; another tenant sees nothing."""

import json
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from producers import Client
from schemas.tenants import Role
from storage.apikeys import ApiKeys
from storage.callback_ledger import verify
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


class Receiver:
    """A local HTTP endpoint that records callbacks and signals each one."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    receiver.calls.append((dict(self.headers), body))
                    receiver.arrived.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, job_id: str, timeout: float) -> tuple[dict[str, str], bytes]:
        def find() -> tuple[dict[str, str], bytes] | None:
            return next((c for c in self.calls if json.loads(c[1])["job_id"] == job_id), None)

        with self.arrived:
            assert self.arrived.wait_for(find, timeout), f"no callback for {job_id}"
            found = find()
            assert found is not None
            return found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def test_submit_callback_results_over_http(
    client: Client, start_worker, receiver: Receiver, api_url: str
):
    keys = ApiKeys(client.ledger.engine)
    acme, globex = keys.create("acme"), keys.create("globex")
    ops = keys.create("ops", "scraper", Role.OPERATOR)
    http = httpx.Client(
        base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {acme.key}"}
    )
    start_worker()
    items = [
        {"key": f"t{i}", "text": text}
        for i, text in enumerate(
            [
                "My parcel has not arrived and tracking has not moved for a week.",
                "I was charged twice on my card for the same invoice.",
                "Where is my order?",
                "Please refund the duplicate payment.",
                "   ",
            ]
        )
    ]
    body = {
        "task": "zero-shot-text",
        "labels": ["shipping", "billing"],
        "explain": "all",
        "items": items,
        "callback_url": receiver.url,
    }
    started = time.perf_counter()
    r = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "batch-1"})
    submit_s = time.perf_counter() - started
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    assert (
        http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "batch-1"}).json()["job_id"]
        == job_id
    )

    headers, raw = receiver.wait_for(job_id, timeout=300)
    assert verify(acme.secret, raw, headers)  # Standard Webhooks: webhook-id/-timestamp/-signature
    assert not verify(globex.secret, raw, headers)
    payload = json.loads(raw)
    assert payload["status"] == "partially_failed"
    assert payload["counts"] == {"total": 5, "ok": 4, "invalid": 1, "error": 0, "cached": 0}

    job = http.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "partially_failed" and job["model_version"]
    assert job["finished_at"] and job["callback"]["url"] == receiver.url
    wait_until(
        lambda: http.get(f"/v1/jobs/{job_id}").json()["callback"]["state"] == "delivered",
        30,
        "the delivery to be recorded",
    )  # it is noted after the POST
    with http.stream(
        "GET", f"/v1/jobs/{job_id}/results", headers={"Accept": "application/x-ndjson"}
    ) as stream:
        rows = [json.loads(line) for line in stream.iter_lines() if line]
    assert [row["key"] for row in rows] == [f"t{i}" for i in range(5)]
    by_key = {row["key"]: row for row in rows}
    assert by_key["t0"]["output"]["label"] == "shipping"
    assert by_key["t1"]["output"]["label"] == "billing"
    assert by_key["t1"]["explanation"]["status"] == "ok"
    assert by_key["t4"]["status"] == "invalid" and by_key["t4"]["error"] == "empty text"
    page = http.get(f"/v1/jobs/{job_id}/results", params={"limit": 3}).json()
    assert len(page["items"]) == 3 and page["next_cursor"] is not None

    other = {"Authorization": f"Bearer {globex.key}"}
    assert http.get(f"/v1/jobs/{job_id}", headers=other).status_code == 404
    assert http.get(f"/v1/jobs/{job_id}/results", headers=other).status_code == 404

    latencies = []
    for n in range(3):
        started = time.perf_counter()
        r = http.post(
            "/v1/events",
            params={"wait": "60s"},
            json={
                "task": "zero-shot-text",
                "labels": ["shipping", "billing"],
                "key": f"e{n}",
                "text": "I was charged twice for one order.",
            },
        )
        latencies.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["output"]["label"] == "billing"
    assert httpx.get(f"{api_url}/metrics").status_code == 401  # operators only
    metrics = httpx.get(f"{api_url}/metrics", headers={"X-API-Key": ops.key}).text
    assert 'sluice_items_total{status="ok",task="zero-shot-text"} 7.0' in metrics
    assert 'sluice_queue_depth{queue="sluice.text"}' in metrics
    assert "sluice_broker_up 1.0" in metrics
    submits = []
    for n in range(5):  # warm: the model's digest is cached, the connections are open
        started = time.perf_counter()
        r = http.post(
            "/v1/jobs", json={"task": "embed", "items": [f"text {n}.{i}" for i in range(10)]}
        )
        submits.append(time.perf_counter() - started)
        assert r.status_code == 201
    each = ", ".join(f"{x * 1000:.0f}" for x in latencies)
    print(
        f"\nAPI submit: first {submit_s * 1000:.0f} ms, then median "
        f"{statistics.median(submits) * 1000:.0f} ms (10 items); event round trip with "
        f"?wait: median {statistics.median(latencies) * 1000:.0f} ms ({each})"
    )


def test_an_event_with_a_callback_gets_202_then_a_signed_result(
    client: Client, start_worker, receiver: Receiver, api_url: str
):
    key = ApiKeys(client.ledger.engine).create("acme")
    http = httpx.Client(base_url=api_url, timeout=60, headers={"X-API-Key": key.key})
    r = http.post(
        "/v1/events", json={"task": "embed", "text": "hello there", "callback_url": receiver.url}
    )
    assert r.status_code == 202  # no wait asked, and no worker yet
    job_id = r.json()["job_id"]
    start_worker()
    headers, raw = receiver.wait_for(job_id, timeout=300)
    assert verify(key.secret, raw, headers)
    result = json.loads(raw)["result"]
    assert result["key"] == "event" and result["status"] == "ok"
    assert len(result["output"]["embedding"]) == 384
