"""The console over a running system (issue 23): a real zero-shot job run by a Celery worker
and its Ray model actor, then what the console shows of it: the result beside its real
Integrated Gradients explanation, and for an operator the worker that answers a ping, the
model actor the workers' census found alive, and the rows finished in the last minute.
Run once, on SQLite: the console's reads are checked on both databases in tests/unit."""

import re

import pytest

from producers import Client
from schemas.tenants import Role
from storage.apikeys import ApiKeys
from tests.integration.conftest import wait_until
from tests.unit.test_console_http import signed_in

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_console_shows_a_live_systems_job_worker_and_model_actor(client: Client, start_worker):
    texts = {f"msg-{i}": f"I was charged twice for my order number {i}" for i in range(6)}
    job_id = client.submit_texts(
        texts, "zero-shot-text", labels=["billing", "shipping"], explain="all"
    )
    start_worker()
    view = client.wait(job_id, timeout=300)
    assert view.status == "succeeded"
    key = ApiKeys(client.ledger.engine).create("default", role=Role.OPERATOR).key
    web = signed_in(client, key)

    page = web.get(f"/console/jobs/{job_id}").text
    assert page.count("class=chip") >= len(texts) * 5  # every word of every row, coloured
    assert re.search(r"<b>(billing|shipping)</b> 0\.\d{3}", page)

    def system_with_the_actor() -> str | None:
        shown = web.get("/console/system").text
        return shown if "zero-shot-text" in shown and "<td>alive</td>" in shown else None

    # the worker that ran the job takes a census every 15 s: the page shows it once it has
    system = wait_until(system_with_the_actor, 60, "the actor census to list the model")
    assert "Broker: <b>up</b>" in system
    workers = re.search(r"<h2>Workers</h2>\s*<ul>(.*?)</ul>", system, re.S)
    assert workers and "@" in workers.group(1)  # a Celery worker's name answered the ping
    assert re.search(r"<td>zero-shot-text</td><td>6</td>", system)  # rows in the last minute
