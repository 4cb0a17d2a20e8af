"""An item that kills the model's process (tests/plugins/sluice_fault_probe: its handler
exits on the marker text, as a segfault in a native library would end it). That item alone
ends `error`, saying the model's process died on it; every other item, including those
that shared its chunk or its batch, is ok; nothing else is dead-lettered."""

import pytest

from schemas.states import JobStatus
from tests.fault.accounting import assert_every_item_once, chunk_rows
from tests.fault.conftest import Rig

pytestmark = pytest.mark.fault


def test_an_item_that_kills_the_actor_fails_alone(rig: Rig):
    from sluice_fault_probe import CRASH_MARKER  # the rig put tests/plugins on sys.path

    client = rig.client
    client.settings.chunk_size = 20
    items = {f"k{i:03d}": f"text number {i}" for i in range(200)}
    culprit = "k137"
    items[culprit] = CRASH_MARKER
    job_id = client.submit_texts(items, "fault-probe")
    rig.worker("--beat")
    view = rig.wait(job_id, timeout=120)
    rows = assert_every_item_once(client, job_id, set(items), JobStatus.PARTIALLY_FAILED)
    assert (view.counts.ok, view.counts.invalid, view.counts.error) == (199, 0, 1)
    assert rows[culprit]["status"] == "error"
    assert "process died" in rows[culprit]["error"], rows[culprit]["error"]
    others = {k: r["status"] for k, r in rows.items() if k != culprit and r["status"] != "ok"}
    assert not others, others
    assert {c.state for c in chunk_rows(client, job_id)} == {"done"}, "nothing dead-lettered"
