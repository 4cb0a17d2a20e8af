"""The one submit path, seen through a RecordingDispatcher: what a submit sends (chunk ids,
queue and lane, priority), what a user is told when the broker does not take a job (it stays
recorded), and retries of the items that ended `error` (Client.retry, `sluice retry`, REST)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

import producers
from producers import ChunkSend, Client, RecordingDispatcher
from producers.api import create_app
from schemas.errors import JobNotFoundError, NotQueuedError, RetryRefusedError
from schemas.jobs import Outcome
from schemas.settings import Settings
from schemas.states import ItemStatus
from storage.apikeys import ApiKeys

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"  # text-stats: a task with no model
TASK = "text-stats"  # chunks of 4 items
NOT_QUEUED = "is recorded but could not be queued"


class CompletingDispatcher(RecordingDispatcher):
    """Records each send, then completes its chunks through the ledger as a worker would
    (unless `hold`): the items keyed in `error_keys` end `error`, the others `ok`."""

    def __init__(self) -> None:
        super().__init__()
        self.client: Client | None = None
        self.error_keys: set[str] = set()
        self.hold = False

    def on_send(self, send: ChunkSend) -> None:
        if self.hold or self.client is None:
            return
        ledger = self.client.ledger
        for chunk_id in send.chunk_ids:
            claim = ledger.claim(chunk_id, "inline", 30)
            assert claim.items is not None
            ledger.complete(
                chunk_id,
                "inline",
                [
                    Outcome(key=i.key, status=ItemStatus.ERROR, error="RuntimeError: boom")
                    if i.key in self.error_keys
                    else Outcome(key=i.key, status=ItemStatus.OK, output={"words": 1})
                    for i in claim.items
                ],
            )


@pytest.fixture
def dispatcher() -> CompletingDispatcher:
    return CompletingDispatcher()


@pytest.fixture
def client(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dispatcher: CompletingDispatcher,
) -> Client:
    monkeypatch.syspath_prepend(str(PLUGINS))
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url="redis://127.0.0.1:1/0",  # never reached: the dispatcher sends nothing
        task_modules="sluice_text_stats",
    )
    made = Client(settings, dispatcher)
    dispatcher.client = made
    return made


def texts(n: int) -> dict[str, str]:
    return {str(k): f"text number {k}" for k in range(1, n + 1)}


def keys_sent(client: Client, send: ChunkSend) -> list[str]:
    """The item keys of the chunks of one send, read back from the ledger."""
    return [
        item.key
        for chunk_id in send.chunk_ids
        for item in client.ledger.claim(chunk_id, "test", 30).items or []
    ]


def test_a_submit_sends_every_chunk_on_its_lane_with_its_priority(
    client: Client, dispatcher: CompletingDispatcher
):
    dispatcher.hold = True
    job_id = client.submit_texts(texts(10), TASK, priority=7, min_word_length=3)
    view = client.status(job_id)
    chunk_ids = tuple(client.ledger.chunk_ids(job_id))
    assert len(chunk_ids) == 3  # 10 items in chunks of 4
    queue = client.catalog.get(TASK).queue
    assert dispatcher.sends == [ChunkSend(chunk_ids, queue, view.lane, 7)]
    assert sorted(dispatcher.chunk_ids) == sorted(chunk_ids)
    assert view.status == "queued" and view.counts.total == 10


def test_a_broker_that_does_not_answer_leaves_the_job_recorded_for_the_sweeper(
    client: Client, dispatcher: CompletingDispatcher
):
    dispatcher.fail()
    with pytest.raises(NotQueuedError, match=NOT_QUEUED) as refused:
        client.submit_texts(texts(5), TASK)
    assert "the sweeper sends it" in str(refused.value)
    assert "ConnectionError" in str(refused.value)
    recorded = client.status(refused.value.record_id)
    assert recorded.status == "queued" and recorded.counts.total == 5
    assert len(client.ledger.chunk_ids(recorded.id)) == 2
    assert dispatcher.sends == []  # a failed send records nothing


def test_the_rest_api_answers_503_and_the_job_is_listed(
    client: Client, dispatcher: CompletingDispatcher
):
    key = ApiKeys(client.ledger.engine).create("acme").key
    dispatcher.fail()
    with TestClient(create_app(client=client)) as http:
        auth = {"Authorization": f"Bearer {key}"}
        r = http.post("/v1/jobs", json={"task": TASK, "items": ["a b", "c d"]}, headers=auth)
        assert r.status_code == 503 and NOT_QUEUED in r.json()["detail"]
        listed = http.get("/v1/jobs", headers=auth).json()["jobs"]
    assert [j["status"] for j in listed] == ["queued"]
    assert listed[0]["job_id"] in r.json()["detail"]


def test_a_retry_reruns_only_the_items_that_ended_error(
    client: Client, dispatcher: CompletingDispatcher
):
    dispatcher.error_keys = {"2", "5", "9"}
    parent = client.submit_texts(texts(10), TASK, priority=3, min_word_length=4)
    assert client.status(parent).status == "partially_failed"
    dispatcher.clear()
    dispatcher.hold = True
    retry_id = client.retry(parent)
    [send] = dispatcher.sends
    assert keys_sent(client, send) == ["2", "5", "9"]
    retried, original = client.status(retry_id), client.status(parent)
    assert retried.parent_job_id == parent and retried.source == f"retry:{parent}"
    assert retried.counts.total == 3 and send.priority == retried.priority == 3
    assert (retried.task, retried.model_version) == (original.task, original.model_version)
    assert retried.params == original.params  # min_word_length=4 and all


def test_a_retry_is_refused_while_the_job_runs_and_when_nothing_failed(
    client: Client, dispatcher: CompletingDispatcher
):
    dispatcher.hold = True
    running = client.submit_texts(texts(3), TASK)
    with pytest.raises(RetryRefusedError, match="still queued; retry it once it ends"):
        client.retry(running)
    dispatcher.hold = False
    clean = client.submit_texts(texts(3), TASK)
    with pytest.raises(RetryRefusedError, match="no item that ended `error`"):
        client.retry(clean)
    with pytest.raises(JobNotFoundError):
        client.retry("0" * 32)
    before = len(dispatcher.sends)
    dispatcher.error_keys = {"1"}
    failed = client.submit_texts(texts(2), TASK)  # the default tenant's
    with pytest.raises(JobNotFoundError):  # another tenant's job is no job at all
        client.retry(failed, tenant="globex")
    assert len(dispatcher.sends) == before + 1  # only the last submit sent anything


def test_a_retry_with_a_seen_idempotency_key_is_that_retry(
    client: Client, dispatcher: CompletingDispatcher
):
    dispatcher.error_keys = {"1"}
    parent = client.submit_texts(texts(2), TASK)
    dispatcher.hold = True
    first = client.retry(parent, idempotency_key="retry-once")
    assert client.retry(parent, idempotency_key="retry-once") == first
    assert len(dispatcher.sends) == 2  # the parent and one retry


def test_a_retry_the_broker_does_not_take_is_recorded(
    client: Client, dispatcher: CompletingDispatcher
):
    dispatcher.error_keys = {"1"}
    parent = client.submit_texts(texts(2), TASK)
    dispatcher.fail()
    with pytest.raises(NotQueuedError, match=NOT_QUEUED) as refused:
        client.retry(parent)
    assert client.status(refused.value.record_id).parent_job_id == parent


def test_sluice_retry(
    client: Client, dispatcher: CompletingDispatcher, monkeypatch: pytest.MonkeyPatch
):
    from ops.cli import main

    monkeypatch.setattr(producers, "Client", lambda: client)
    cli = CliRunner()
    dispatcher.error_keys = {"2"}
    parent = client.submit_texts(texts(4), TASK)
    dispatcher.error_keys = set()  # the retry's items succeed
    done = cli.invoke(main, ["retry", parent, "--wait", "--json"])
    assert done.exit_code == 0, done.output
    shown = json.loads(done.stdout.splitlines()[-1])
    assert shown["status"] == "succeeded" and shown["total"] == 1
    assert client.status(shown["job_id"]).parent_job_id == parent

    printed = cli.invoke(main, ["retry", parent])  # the parent still has its error row
    assert printed.exit_code == 0 and client.status(printed.stdout.strip()).counts.total == 1

    dispatcher.hold = True
    running = client.submit_texts(texts(1), TASK)
    for job_id, message in [
        ("nope", "no job with id 'nope'"),
        (running, f"job {running} is still queued"),
        (shown["job_id"], "has no item that ended `error`"),
    ]:
        refused = cli.invoke(main, ["retry", job_id])
        assert refused.exit_code == 2 and message in refused.stderr, refused.output
