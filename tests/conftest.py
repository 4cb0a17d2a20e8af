"""Shared fixtures: databases (SQLite always, PostgreSQL when SLUICE_TEST_DATABASE_URL is set),
the embedded Redis + Ray services, and Celery workers that tests may kill."""

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from schemas.catalog import load_catalog
from storage.engine import make_engine, migrate, normalise_url
from storage.ledger import Ledger

PG_URL = os.environ.get("SLUICE_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL")
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            not PG_URL, reason="set SLUICE_TEST_DATABASE_URL to run on PostgreSQL"
        ),
    ),
]
SAMPLES = Path(__file__).parent.parent / "ops" / "samples" / "messages.jsonl"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A throw-away PostgreSQL database for this run, dropped at the end."""
    if not PG_URL:
        yield None
        return
    admin = make_url(normalise_url(PG_URL))
    name = f"sluice_test_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield admin.set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database: str | None
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    assert pg_database
    yield pg_database
    engine = make_engine(pg_database)  # leave the shared test database empty for the next test
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE jobs, api_keys, enrich_watermarks, enrich_runs, enrich_retries, "
                "training_runs, model_versions, model_shares, tenant_usage, job_keys, "
                "result_cache, tenant_secrets, cluster_identity, erasure_audit, exports, "
                "console_sessions, pipeline_jobs, pipeline_inbox, openai_files, "
                "openai_batches CASCADE"
            )
        )
    engine.dispose()


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    engine = make_engine(database_url)
    migrate(engine)
    yield Ledger(engine)
    engine.dispose()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.path.insert(0, str(Path(__file__).parent.parent))


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BERT sequence classifier (billing vs praise) trained here for a few seconds on
    the project's sample messages and saved with save_pretrained (safetensors)."""
    import json

    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from producers.model_refs import resolve

    out = tmp_path_factory.mktemp("tiny-classifier")
    base = resolve("all-MiniLM-L6-v2", load_catalog().get("embed"), out / "cache").path
    tokenizer = AutoTokenizer.from_pretrained(base)
    labels = ["billing", "praise"]
    rows = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()]
    data = [
        (r["text"], labels.index(r["topic"]))
        for r in rows
        if r["topic"] in labels and r["lang"] == "en"
    ]
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
        id2label=dict(enumerate(labels)),
        label2id={k: i for i, k in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    batch = tokenizer(
        [t for t, _ in data], padding=True, truncation=True, max_length=64, return_tensors="pt"
    )
    target = torch.tensor([y for _, y in data])
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(25):
        loss = model(**batch, labels=target).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    model.eval()
    model.save_pretrained(out / "model", safe_serialization=True)
    tokenizer.save_pretrained(out / "model")
    return out / "model"


DEMO_MODELS = Path(__file__).resolve().parents[1] / ".sluice" / "models"


@pytest.fixture(scope="session")
def demo_models() -> Path:
    """The models `sluice models build` makes (digits, sounds, breast cancer, diabetes, tiny
    speech recognisers, digit spellers, an entity tagger and a reader), cached in the
    repository's data dir like the demo's."""
    from ops.demo_model_cache import build_all

    build_all(DEMO_MODELS)
    return DEMO_MODELS


@dataclass(frozen=True)
class Bucket:
    """A bucket of its own on the session's S3 server (moto's standalone server on 127.0.0.1,
    spoken to over HTTP like any S3): `uri` is s3://NAME, `options` the SLUICE_STORAGE_OPTIONS
    that reach it."""

    name: str
    endpoint: str

    @property
    def uri(self) -> str:
        return f"s3://{self.name}"

    @property
    def options(self) -> dict[str, dict[str, object]]:
        return {"s3": {"endpoint_url": self.endpoint, "key": "test", "secret": "test"}}

    @property
    def options_json(self) -> str:
        import json

        return json.dumps(self.options)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on a free port of 127.0.0.1, for the whole session."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("s3") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:  # the server answers once it listens: nothing to await but the port
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"moto's S3 server did not start (see {log.name})")
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    kill_group(proc, signal.SIGTERM)


@pytest.fixture
def bucket(s3_endpoint: str) -> Bucket:
    found = Bucket(f"sluice-{uuid.uuid4().hex[:12]}", s3_endpoint)
    found.client().create_bucket(Bucket=found.name)
    return found
