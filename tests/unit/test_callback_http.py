"""Callback sending (issue 12): the address policy, the pinned connection, one deadline for the
whole attempt, failure categories, Standard Webhooks signatures, and what a tenant sees.

No test here reaches the network: host names go through a stubbed resolver, and a guard fails
the test if any socket connects anywhere but 127.0.0.1."""

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from standardwebhooks import Webhook, WebhookVerificationError

from producers import Client
from producers.api import create_app
from schemas.callback_failures import CallbackFailure
from schemas.callback_urls import blocked_reason, check_callback_url
from schemas.errors import SluiceError
from schemas.jobs import Item, JobSpec, Outcome
from schemas.settings import Settings
from schemas.states import ItemStatus
from storage import tables as t
from storage.apikeys import ApiKeys
from storage.callback_ledger import (
    LEGACY_SIGNATURE_HEADER,
    Callbacks,
    message_id,
    sign,
    sign_legacy,
    standard_webhooks_key,
    verify,
)
from storage.ledger import Ledger
from tests.callback_receivers import Receiver, Tarpit
from workers import callback_http
from workers.callback_delivery import attempt_delivery

BLOCKED = {
    "127.0.0.1": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "fc00::1": "private",
    "169.254.10.1": "link-local",
    "fe80::1": "link-local",
    "169.254.169.254": "cloud metadata",
    "fd00:ec2::254": "cloud metadata",
    "100.64.0.1": "carrier-grade NAT",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "240.0.0.1": "reserved",
    "::ffff:127.0.0.1": "loopback (IPv6 form)",
    "::ffff:169.254.169.254": "cloud metadata (IPv6 form)",
    "2002:a9fe:a9fe::1": "cloud metadata (IPv6 form)",  # 6to4 of 169.254.169.254
    "2002:a00:1::1": "private (IPv6 form)",  # 6to4 of 10.0.0.1
    "64:ff9b::a00:1": "private (IPv6 form)",  # NAT64 of 10.0.0.1
}
PUBLIC = ["93.184.215.14", "2606:4700:4700::1111", "::ffff:93.184.215.14", "2002:5db8:d70e::1"]


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every connection any socket makes in these tests; one to anywhere but 127.0.0.1 fails
    the test (recorded, because the sender turns exceptions into failure categories)."""
    made: list[Any] = []
    wrong: list[Any] = []
    connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> None:
        made.append(address)
        if not (isinstance(address, tuple) and address[0] == "127.0.0.1"):
            wrong.append(address)
            raise AssertionError(f"a test tried to connect to {address}")
        connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield made
    assert not wrong, f"connections attempted outside 127.0.0.1: {wrong}"


def stub_resolver(
    monkeypatch: pytest.MonkeyPatch, answer: Callable[[str, int], list[str]]
) -> list[str]:
    """Replace the sender's resolver; returns the list of hosts it was asked about."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answer(host, port)

    monkeypatch.setattr(callback_http, "resolve", resolve)
    return asked


def post(url: str, timeout: float = 5.0, allow_private: bool = True) -> callback_http.Answer:
    return callback_http.post(
        url, b"{}", {"Content-Type": "application/json"}, timeout, allow_private
    )


def finished_job(ledger: Ledger, url: str, key_id: str | None = None, tenant: str = "acme") -> str:
    spec = JobSpec(
        task="embed",
        model="m",
        model_version="v1",
        tenant=tenant,
        api_key_id=key_id,
        callback_url=url,
    )
    job_id, (chunk,) = ledger.create_job(spec, [Item(key="k", text="t")], 10)
    ledger.claim(chunk, "w", 30)
    ledger.complete(chunk, "w", [Outcome(key="k", status=ItemStatus.OK, output={"dim": 1})])
    return job_id


def callback_settings(**extra: Any) -> Settings:
    values = {"callback_allow_private": True, "callback_backoff": 0.0, **extra}
    return Settings(**values)


# -- the address policy -----------------------------------------------------------------------


@pytest.mark.parametrize("address", sorted(BLOCKED))
def test_each_forbidden_address_class_is_refused_before_connecting(
    address: str, monkeypatch: pytest.MonkeyPatch, only_loopback: list[Any]
):
    assert blocked_reason(address) == BLOCKED[address]
    stub_resolver(monkeypatch, lambda host, port: [address])
    answer = post("https://hooks.example.test/sluice", allow_private=False)
    assert answer.failure is CallbackFailure.BLOCKED_ADDRESS and answer.status_code is None
    assert address in answer.detail  # for the operator's log
    assert only_loopback == []  # refused before any socket connected


def test_one_forbidden_address_among_public_ones_is_enough_to_refuse(
    monkeypatch: pytest.MonkeyPatch, only_loopback: list[Any]
):
    stub_resolver(monkeypatch, lambda host, port: ["93.184.215.14", "10.0.0.7"])
    answer = post("http://hooks.example.test/", allow_private=False)
    assert answer.failure is CallbackFailure.BLOCKED_ADDRESS and only_loopback == []


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str):
    assert blocked_reason(address) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://hooks.example.com/x", "must be an http(s) URL"),
        ("http:///no-host", "must be an http(s) URL"),
        ("http://localhost:8000/hook", "is this machine"),
        ("http://127.0.0.1/hook", "loopback address"),
        ("http://[::1]:9000/", "loopback address"),
        ("http://169.254.169.254/latest/meta-data", "cloud metadata address"),
        ("http://[::ffff:10.0.0.1]/", "private (IPv6 form) address"),
        ("http://100.64.1.1/", "carrier-grade NAT address"),
    ],
)
def test_submit_refuses_what_it_can_see_with_the_reason(url: str, says: str):
    with pytest.raises(SluiceError, match=r"callback_url") as refused:
        check_callback_url(url, allow_private=False)
    assert says in str(refused.value)
    if url.startswith("http://") and "no-host" not in url:
        check_callback_url(url, allow_private=True)  # on-premise receivers, tests


def test_host_names_are_left_to_the_worker_check():
    target = check_callback_url("https://Hooks.Example.com/in?x=1", allow_private=False)
    assert (target.host, target.port, target.target) == ("hooks.example.com", 443, "/in?x=1")


# -- the pinned connection and the deadline ----------------------------------------------------


def test_the_connection_goes_to_the_checked_address_with_the_host_name_kept(
    monkeypatch: pytest.MonkeyPatch, only_loopback: list[Any]
):
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])  # a rebinding resolver: safe, then not
    asked = stub_resolver(monkeypatch, lambda host, port: next(answers))
    with Receiver() as receiver:
        answer = post(receiver.url(host="receiver.test"))
        assert answer.ok and answer.status_code == 204
        (call,) = receiver.calls
    assert call.headers["host"] == f"receiver.test:{receiver.port}"
    assert asked == ["receiver.test"]  # resolved once: the second answer never used
    assert only_loopback == [("127.0.0.1", receiver.port)]


def test_a_tarpit_is_cut_at_the_deadline_and_recorded_as_a_timeout(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
):
    """Each byte comes well within any per-read timeout; only the whole-attempt deadline
    (SLUICE_CALLBACK_TIMEOUT=1.5) ends it. A per-read timeout would wait ~30 s here."""
    stub_resolver(monkeypatch, lambda host, port: ["127.0.0.1"])
    settings = callback_settings(callback_timeout=1.5)
    with Tarpit(interval=0.4) as tarpit:
        job_id = finished_job(ledger, tarpit.url(host="receiver.test"))
        started = time.monotonic()
        state = attempt_delivery(ledger, settings, job_id)
        took = time.monotonic() - started
        assert tarpit.started == 1 and tarpit.finished == 0
    assert state == "pending"  # retried later with backoff
    assert 1.4 <= took < 1.5 + 1.0, f"the attempt took {took:.2f}s"
    record = Callbacks(ledger.engine).get(job_id)
    assert record is not None
    assert record["last_error"] == "timeout" and record["last_status_code"] is None


def test_a_resolver_that_hangs_is_cut_at_the_deadline(monkeypatch: pytest.MonkeyPatch):
    release = threading.Event()

    def hang(host: str, port: int) -> list[str]:
        release.wait(10)
        return ["127.0.0.1"]

    stub_resolver(monkeypatch, hang)
    started = time.monotonic()
    try:
        answer = post("http://slow-dns.test/", timeout=0.5)
    finally:
        release.set()
    assert answer.failure is CallbackFailure.TIMEOUT
    assert time.monotonic() - started < 1.5


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_failures_are_recorded_as_categories(monkeypatch: pytest.MonkeyPatch):
    def no_such_host(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    stub_resolver(monkeypatch, no_such_host)
    assert post("http://nowhere.test/").failure is CallbackFailure.DNS
    stub_resolver(monkeypatch, lambda host, port: ["127.0.0.1"])
    assert post(f"http://receiver.test:{closed_port()}/").failure is CallbackFailure.REFUSED
    with Receiver() as plain:  # TLS spoken to a plain HTTP server
        assert post(f"https://receiver.test:{plain.port}/").failure is CallbackFailure.TLS
    for status, category in (
        (302, CallbackFailure.HTTP_3XX),
        (404, CallbackFailure.HTTP_4XX),
        (503, CallbackFailure.HTTP_5XX),
    ):
        with Receiver(status=status) as receiver:
            answer = post(receiver.url(host="receiver.test"))
            assert (answer.status_code, answer.failure) == (status, category)
            assert len(receiver.calls) == 1  # a redirect is not followed


# -- signatures ----------------------------------------------------------------------------


def test_callbacks_carry_standard_webhooks_signatures(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
):
    stub_resolver(monkeypatch, lambda host, port: ["127.0.0.1"])
    key = ApiKeys(ledger.engine).create("acme")
    settings = callback_settings(callback_max_attempts=3)
    with Receiver(status=500) as receiver:
        job_id = finished_job(ledger, receiver.url(host="receiver.test"), key.info.id)
        assert attempt_delivery(ledger, settings, job_id) == "pending"
        receiver.status = 204
        assert attempt_delivery(ledger, settings, job_id) == "delivered"
        assert attempt_delivery(ledger, settings, job_id) is None  # delivered once, never again
        first, second = receiver.calls
    hook = Webhook(standard_webhooks_key(key.secret))
    for call in (first, second):
        assert hook.verify(call.body, call.headers)["job_id"] == job_id
        assert verify(key.secret, call.body, call.headers)
        assert LEGACY_SIGNATURE_HEADER.lower() not in call.headers
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == message_id(job_id)
    assert [json.loads(c.body)["attempt"] for c in (first, second)] == [1, 2]
    with pytest.raises(WebhookVerificationError):
        hook.verify(first.body + b" ", first.headers)  # a changed body
    with pytest.raises(WebhookVerificationError):
        Webhook(standard_webhooks_key("whsec_other")).verify(first.body, first.headers)
    old = int(time.time()) - 600  # a replay: correctly signed, but ten minutes old
    replayed = {
        **first.headers,
        "webhook-timestamp": str(old),
        "webhook-signature": sign(key.secret, message_id(job_id), old, first.body),
    }
    with pytest.raises(WebhookVerificationError, match="too old"):
        hook.verify(first.body, replayed)
    assert not verify(key.secret, first.body, replayed)
    record = Callbacks(ledger.engine).get(job_id)
    assert record and record["state"] == "delivered" and record["attempts"] == 2


def test_the_legacy_signature_only_when_asked(ledger: Ledger, monkeypatch: pytest.MonkeyPatch):
    stub_resolver(monkeypatch, lambda host, port: ["127.0.0.1"])
    key = ApiKeys(ledger.engine).create("acme")
    with Receiver() as receiver:
        job_id = finished_job(ledger, receiver.url(host="receiver.test"), key.info.id)
        attempt_delivery(ledger, callback_settings(callback_legacy_signature=True), job_id)
        (call,) = receiver.calls
    assert call.headers[LEGACY_SIGNATURE_HEADER.lower()] == sign_legacy(key.secret, call.body)


def test_callbacks_give_up_after_max_attempts(ledger: Ledger):
    job_id = finished_job(ledger, f"http://127.0.0.1:{closed_port()}/unreachable")
    settings = callback_settings(callback_max_attempts=2, callback_timeout=2)
    assert attempt_delivery(ledger, settings, job_id) == "pending"
    assert attempt_delivery(ledger, settings, job_id) == "failed"
    assert attempt_delivery(ledger, settings, job_id) is None
    record = Callbacks(ledger.engine).get(job_id)
    assert record and record["state"] == "failed" and record["last_error"] == "refused"


def test_a_scheduled_callback_is_attempted_once_however_often_it_is_sent(ledger: Ledger):
    with Receiver() as receiver:
        job_id = finished_job(ledger, receiver.url())
        callbacks = Callbacks(ledger.engine)
        scheduled = callbacks.schedule(600, [job_id])
        assert scheduled == [(job_id, 0)]
        assert callbacks.schedule(600) == []  # held: the next sweep does not queue it again
        settings = callback_settings()
        assert attempt_delivery(ledger, settings, job_id, 0) == "delivered"
        assert attempt_delivery(ledger, settings, job_id, 0) is None  # a duplicate message
        assert len(receiver.calls) == 1


# -- what the tenant sees ----------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Client]]:
    client = Client(
        Settings(
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            broker_url="redis://127.0.0.1:1/0",
        )
    )
    with TestClient(create_app(client=client)) as http:
        yield http, client


def test_the_job_view_shows_the_category_never_the_socket_error(
    api: tuple[TestClient, Client], monkeypatch: pytest.MonkeyPatch
):
    http, client = api
    ledger = client.ledger
    key = ApiKeys(ledger.engine).create("acme")
    auth = {"Authorization": f"Bearer {key.key}"}
    stub_resolver(monkeypatch, lambda host, port: ["127.0.0.1"])
    settings = callback_settings(callback_timeout=1.0)
    with Tarpit(interval=0.3) as tarpit:
        slow = finished_job(ledger, tarpit.url(host="receiver.test"), key.info.id)
        attempt_delivery(ledger, settings, slow)
    with Receiver(status=503) as receiver:
        failing = finished_job(ledger, receiver.url(host="receiver.test"), key.info.id)
        attempt_delivery(ledger, settings, failing)
    broken = finished_job(ledger, "http://receiver.test/old", key.info.id)
    Callbacks(ledger.engine).claim(broken, 30)
    with ledger.engine.begin() as conn:  # a row written before categories held raw text
        conn.execute(
            update(t.CallbackDelivery)
            .where(t.CallbackDelivery.job_id == broken)
            .values(last_error="ConnectError: [Errno 113] No route to host (10.0.0.9)")
        )
    shown = {
        job: http.get(f"/v1/jobs/{job}", headers=auth).json()["callback"]
        for job in (slow, failing, broken)
    }
    assert (shown[slow]["last_error"], shown[slow]["last_status_code"]) == ("timeout", None)
    assert (shown[failing]["last_error"], shown[failing]["last_status_code"]) == ("http_5xx", 503)
    assert shown[broken]["last_error"] == "connection_error"
    text = json.dumps(shown)
    for leak in ("127.0.0.1", "10.0.0.9", "Error", "Timeout", "Errno"):
        assert leak not in text


def test_the_api_refuses_a_forbidden_callback_url_with_a_clear_400(
    api: tuple[TestClient, Client],
):
    http, client = api
    key = ApiKeys(client.ledger.engine).create("acme")
    r = http.post(
        "/v1/jobs",
        json={"task": "embed", "items": ["x"], "callback_url": "http://169.254.169.254/latest"},
        headers={"Authorization": f"Bearer {key.key}"},
    )
    assert r.status_code == 400
    assert "cloud metadata address" in r.json()["detail"]
    assert "SLUICE_CALLBACK_ALLOW_PRIVATE" in r.json()["detail"]
