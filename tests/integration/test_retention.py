"""Retention and erasure on the running stack (issue 22): the worker's beat removes a job
once its retention has passed, and `sluice purge`, `sluice forget` and `sluice lineage` work
as a user runs them, against a real worker's rows."""

import json
from typing import Any

import pytest
from sqlalchemy import select

from producers import Client
from schemas.errors import JobNotFoundError
from storage import tables as t
from tests.integration.conftest import sluice, wait_until
from tests.lineage_checks import assert_full_lineage

pytestmark = pytest.mark.integration


def gone(client: Client, job_id: str) -> bool:
    try:
        client.status(job_id)
    except JobNotFoundError:
        return True
    return False


def test_the_beat_removes_a_job_once_its_retention_has_passed(
    client: Client, start_worker: Any, env: dict[str, str]
):
    kept = client.submit_texts({"a": "kept until purged"}, "embed")
    brief = client.submit_texts({"a": "kept three seconds"}, "embed", retention="3s")
    start_worker(SLUICE_RETENTION_INTERVAL="0.5")
    assert client.wait(kept, timeout=300).status == "succeeded"
    wait_until(lambda: gone(client, brief), 120, "the beat to remove the expired job")
    with client.ledger.engine.connect() as conn:
        kinds = conn.execute(select(t.ErasureAudit.job_id, t.ErasureAudit.kind)).all()
        left = conn.scalar(select(t.Result.item_key).where(t.Result.job_id == brief))
    assert (brief, "retention") in kinds and left is None
    assert client.status(kept).status == "succeeded"  # no retention: kept

    out = sluice(env, "lineage", kept, "a")
    assert out.returncode == 0, out.stderr
    assert_full_lineage(json.loads(out.stdout), explained=False)
    out = sluice(env, "forget", "--key", "a")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["jobs"] == [kept]
    assert list(client.results(kept)) == []
    out = sluice(env, "purge", kept)
    assert out.returncode == 0, out.stderr
    assert gone(client, kept)
