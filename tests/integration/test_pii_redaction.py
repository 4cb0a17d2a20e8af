"""Planted PII, English and Chinese, through every front door with `--redact mask`: the CLI
with a file (its key column itself an e-mail), the SDK, REST, an event, `sluice enrich` and
an audio file whose transcript is a phone number. Then every table of the ledger, every key
of the test's Redis database, the exports, the callback bodies received, the worker logs and
every file under the test's directory (the SQLite ledger and its write-ahead log included)
are searched: no planted value may be found anywhere, in UTF-8 or JSON-escaped."""

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import soundfile as sf
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select, text

from producers import Client
from schemas.tenants import TenantGrant
from storage import tables as t
from storage.apikeys import ApiKeys
from storage.engine import make_engine
from tests.integration.conftest import sluice, wait_until
from tests.integration.test_api import Receiver
from workers.training.synth_tones import tone_digits

pytestmark = pytest.mark.integration

EN = (
    "Contact Grace Hopper at grace.hopper@example.com or +44 20 7946 0958 in Berlin at "
    "Initech. Card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32."
)
ZH = (
    "请联系王伟，电话13812345678，邮箱wangwei@qq.com，地址杭州，公司华为。"
    "身份证11010519491231002X。"
)
CUSTOMER = "alice.key@example.org"  # a key column that is itself an e-mail
SPOKEN = "13912345670"  # the transcript of the audio: a Chinese mobile number
PLANTED = (
    "grace.hopper@example.com", "+44 20 7946 0958", "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32", "13812345678", "wangwei@qq.com", "11010519491231002X",
    CUSTOMER, SPOKEN, "Grace Hopper", "Initech", "王伟", "华为", "杭州",
)  # fmt: skip
FORMS = [(v, f) for v in PLANTED for f in {v.encode(), json.dumps(v)[1:-1].encode()}]


def leaks(blob: bytes | str) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return sorted({value for value, form in FORMS if form in data})


@pytest.fixture
def env(env: dict[str, str], demo_models: Path) -> dict[str, str]:
    return {**env, "SLUICE_PII_MODEL": str(demo_models / "tiny-entities")}


WAREHOUSE_TABLES = ("pii_tickets_enriched", "pii_tickets")


@pytest.fixture
def warehouse(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The user's database for `sluice enrich`: the ledger's PostgreSQL (its tables dropped
    afterwards, where the schema checks of other tests would see them) or a SQLite file."""
    url = env["SLUICE_DATABASE_URL"]
    if not url.startswith("postgresql"):
        (tmp_path / "inputs").mkdir(exist_ok=True)  # the user's own data, like the files
        url = f"sqlite:///{tmp_path / 'inputs' / 'warehouse.db'}"
    engine = make_engine(url)

    def drop_tables() -> None:
        with engine.begin() as conn:
            for table in WAREHOUSE_TABLES:
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))

    drop_tables()
    yield url
    drop_tables()
    engine.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def test_planted_pii_is_found_nowhere_after_mask_through_every_door(
    env: dict[str, str],
    client: Client,
    start_worker: Any,
    receiver: Receiver,
    warehouse: str,
    api_url: str,
    demo_models: Path,
    tmp_path: Path,
):
    inputs = tmp_path / "inputs"  # the user's own data: the only place the values may be
    inputs.mkdir(exist_ok=True)
    masked = {"redact": "mask"}
    jobs: dict[str, str] = {}

    rows = inputs / "messages.jsonl"
    rows.write_text(
        json.dumps({"customer": CUSTOMER, "body": EN}) + "\n"
        + json.dumps({"customer": "c2", "body": ZH}, ensure_ascii=False) + "\n"
    )  # fmt: skip
    cli = sluice(env, "submit", str(rows), "--task", "embed", "--text-column", "body",
                 "--key-column", "customer", "--redact", "mask")  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    jobs["cli"] = cli.stdout.strip()

    jobs["sdk"] = client.submit_texts(
        {"en": EN, "zh": ZH}, "zero-shot-text", labels=["billing", "contact"], explain="all",
        **masked,
    )  # fmt: skip

    key = ApiKeys(client.ledger.engine).create("acme")
    client.settings.tenant_grants = {"acme": TenantGrant(model_dirs=[str(demo_models)])}
    http = httpx.Client(base_url=api_url, timeout=60, headers={"X-API-Key": key.key})
    body = {"task": "extract-entities", "model": str(demo_models / "tiny-entities"),
            "items": [{"key": "en", "text": EN}, {"key": "zh", "text": ZH}],
            "callback_url": receiver.url, **masked}  # fmt: skip
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    jobs["rest"] = r.json()["job_id"]
    r = http.post("/v1/events", json={"task": "embed", "text": ZH, "callback_url": receiver.url,
                                      **masked})  # fmt: skip
    assert r.status_code == 202, r.text
    jobs["event"] = r.json()["job_id"]

    audio = inputs / "audio"
    audio.mkdir()
    sf.write(audio / "call.wav", tone_digits(SPOKEN, 16_000, np.random.default_rng(5)), 16_000)
    client.settings.input_roots = str(audio)
    jobs["audio"] = client.submit_media(
        [audio / "call.wav"], "transcribe", model=str(demo_models / "tone-digits-ctc"), **masked
    )

    with make_engine(warehouse).begin() as conn:
        conn.execute(text("CREATE TABLE pii_tickets (id INTEGER PRIMARY KEY, body TEXT)"))
        conn.execute(
            text("INSERT INTO pii_tickets VALUES (1, :en), (2, :zh)"), {"en": EN, "zh": ZH}
        )

    start_worker(SLUICE_INPUT_ROOTS=str(audio))
    enriched = sluice(env, "enrich", "--source", warehouse, "--table", "pii_tickets",
                      "--key-column", "id", "--text-column", "body", "--task", "zero-shot-text",
                      "--labels", "billing,contact", "--explain", "all",
                      "--dest-table", "pii_tickets_enriched", "--redact", "mask",
                      "--json")  # fmt: skip
    assert enriched.returncode == 0, enriched.stderr
    jobs["enrich"] = json.loads(enriched.stdout.splitlines()[-1])["job_id"]

    for door, job_id in jobs.items():
        view = client.wait(job_id, timeout=300)
        assert view.status == "succeeded", (door, view.as_dict())
    receiver.wait_for(jobs["rest"], timeout=120)
    receiver.wait_for(jobs["event"], timeout=120)

    # what each door's rows show: the values' types in their place, and what was found
    cli_rows = {r["key"]: r for r in client.results(jobs["cli"])}
    (hashed,) = [k for k in cli_rows if k != "c2"]
    assert hashed == client.stored_key(CUSTOMER) and hashed.startswith("<EMAIL:")
    assert {f["field"] for f in cli_rows[hashed]["redactions"]} >= {"key", "text"}
    sdk_rows = {r["key"]: r for r in client.results(jobs["sdk"])}
    tokens = "".join(sdk_rows["en"]["explanation"]["tokens"])
    assert "PERSON" in tokens and "EMAIL" in tokens  # the model saw the masked text
    found = {f["type"] for f in sdk_rows["en"]["redactions"]}
    assert {"EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "PERSON", "PLACE", "ORG"} <= found
    (transcript,) = client.results(jobs["audio"])
    assert transcript["output"]["text"] == "<CN_MOBILE>"
    assert transcript["redactions"][0]["field"] == "output.text"

    exports = tmp_path / "exports"
    exports.mkdir()
    for door, job_id in jobs.items():
        for fmt in ("jsonl", "csv"):
            out = exports / f"{door}.{fmt}"
            done = sluice(env, "results", job_id, "--format", fmt, "-o", str(out))
            assert done.returncode == 0, done.stderr

    found_in: dict[str, list[str]] = {}
    ledger = make_engine(env["SLUICE_DATABASE_URL"])
    with ledger.connect() as conn:
        for table in sa_inspect(conn).get_table_names():
            if table == "pii_tickets":  # the user's own source table
                continue
            for row in conn.execute(text(f"SELECT * FROM {table}")):  # noqa: S608
                if hit := leaks(repr(tuple(row))):
                    found_in[f"table {table}"] = hit
        sent = conn.execute(select(t.Chunk.items)).scalars().all()
    assert sent, "no chunk rows were searched"
    broker = redis.Redis.from_url(env["SLUICE_BROKER_URL"])
    for name in broker.scan_iter():
        if hit := leaks(redis_value(broker, name)):
            found_in[f"redis {name!r}"] = hit
    for _headers, raw in receiver.calls:
        if hit := leaks(raw):
            found_in["a callback body"] = hit

    def files_with_values() -> dict[str, list[str]]:
        return {
            str(path): hit
            for path in tmp_path.rglob("*")
            if path.is_file() and inputs not in path.parents and (hit := leaks(path.read_bytes()))
        }

    # SQLite's write-ahead log is truncated by the worker just after a completion commits
    wait_until(lambda: not files_with_values(), 30, "the ledger files to hold no value")
    found_in.update(files_with_values())
    assert not found_in, f"planted values found: {found_in}"
    assert list(tmp_path.glob("worker-*.log")) and list(exports.iterdir())


def redis_value(r: redis.Redis, name: bytes) -> bytes:
    """Every value under a key, with Celery's base64 message bodies decoded."""
    kind = r.type(name).decode()
    values: list[bytes] = []
    if kind == "string":
        values = [r.get(name) or b""]
    elif kind == "list":
        values = r.lrange(name, 0, -1)
    elif kind == "hash":
        values = [v for kv in r.hgetall(name).items() for v in kv]
    elif kind == "set":
        values = list(r.smembers(name))
    elif kind == "zset":
        values = [m for m, _ in r.zrange(name, 0, -1, withscores=True)]
    decoded = list(values)
    for value in values:
        try:
            message = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(message, list):  # unacked: [message, exchange, routing key]
            message = message[0] if message and isinstance(message[0], dict) else {}
        if isinstance(message, dict) and isinstance(message.get("body"), str):
            with contextlib.suppress(ValueError):
                decoded.append(base64.b64decode(message["body"]))
    return b"\n".join(decoded)
