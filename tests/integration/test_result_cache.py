"""The result cache over real Redis, Celery, Ray and SQL, as a user meets it: a re-run of the
same file is answered from the cache (same outputs, rows marked, the job counting them),
`--no-cache` runs the model, `sluice cache clear` forgets."""

import csv
import io
import json
from pathlib import Path

import pytest

from producers import Client
from tests.integration.conftest import rows_of, sluice
from tests.integration.test_pipeline import sample_rows, write_jsonl

pytestmark = pytest.mark.integration


def submitted(env: dict[str, str], path: Path, *extra: str) -> dict[str, object]:
    done = sluice(env, "submit", str(path), "--task", "embed", "--key-column", "id",
                  "--wait", "--json", *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_a_rerun_comes_from_the_cache_until_it_is_cleared(
    client: Client, env: dict[str, str], start_worker, tmp_path: Path
):
    path = write_jsonl(tmp_path / "in.jsonl", sample_rows(30))
    start_worker()
    first = client.wait(client.submit_file(path, "embed", key_column="id"), timeout=300)
    assert (first.status, first.counts.ok, first.counts.cached) == ("succeeded", 30, 0)

    again = submitted(env, path)
    assert (again["status"], again["ok"], again["cached"]) == ("succeeded", 30, 30)
    before, after = rows_of(client, first.id), rows_of(client, str(again["job_id"]))
    assert {k: r["output"] for k, r in after.items()} == {k: r["output"] for k, r in before.items()}
    assert all(r["cached"] for r in after.values())
    exported = sluice(env, "results", str(again["job_id"]), "--format", "csv")
    assert {r["cached"] for r in csv.DictReader(io.StringIO(exported.stdout))} == {"True"}

    assert submitted(env, path, "--no-cache")["cached"] == 0
    cleared = sluice(env, "cache", "clear", "--tenant", "default")
    assert json.loads(cleared.stdout)["removed"] == 30, cleared.stderr
    assert submitted(env, path)["cached"] == 0
