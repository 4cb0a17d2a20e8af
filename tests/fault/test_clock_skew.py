"""A sweeper whose clock runs 60 s ahead of the workers' (a host with a drifting clock): the
sweeping worker runs under libfaketime (`faketime -f +60s`), the ledger is on PostgreSQL,
and the chunk-processing worker keeps the true time. A lease the workers keep renewing is
live whatever the sweeper's clock says: no chunk is taken from its worker, nothing is
dead-lettered, every item is ok once."""

import re
from datetime import datetime

import pytest

from schemas.queues import CONTROL_QUEUE
from tests.fault.accounting import assert_every_item_once, chunk_rows
from tests.fault.conftest import Rig

pytestmark = pytest.mark.fault
AHEAD = 60
# a sweep's line, logged (with its time) by the pool process that ran it
SWEPT = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+: INFO/ForkPoolWorker-\d+\] "
    r"Task sluice\.sweep\[[^\]]+\] succeeded",
    re.M,
)


def test_a_sweeper_60_seconds_ahead_takes_no_live_chunk(pg_rig: Rig, faketime: str):
    client = pg_rig.client
    client.settings.chunk_size = 4
    items = {f"k{i:02d}": f"text number {i}" for i in range(32)}  # 8 chunks of ~3 s each
    job_id = client.submit_texts(items, "fault-probe", seconds_per_item=0.75)
    text_queue = client.catalog.get("fault-probe").queue
    pg_rig.worker("--queues", text_queue)  # true time, no sweeper
    # -m: the thread-safe libfaketimeMT (Celery and SQLAlchemy use threads); a fixed offset
    # needs no FAKETIME_NO_CACHE (that is for a spec that changes while the process runs).
    # LD_PRELOAD is inherited by the forked pool and beat, so every part of it runs ahead.
    sweeper = pg_rig.worker(
        "--beat", "--queues", CONTROL_QUEUE, "--concurrency", "1",
        faketime=[faketime, "-m", "-f", f"+{AHEAD}s"],
    )  # fmt: skip
    view = pg_rig.wait(job_id, timeout=150)
    assert sweeper.poll() is None
    log = (pg_rig.logs / "worker-1.log").read_text()
    sweeps = SWEPT.findall(log)
    assert len(sweeps) >= 5, f"the sweeper must have swept during the job: {log[-2000:]}"
    skew = (datetime.strptime(sweeps[-1], "%Y-%m-%d %H:%M:%S") - datetime.now()).total_seconds()
    assert skew > AHEAD - 10, f"the sweeper's clock is {skew:.0f}s ahead, not {AHEAD}s"
    chunks = chunk_rows(client, job_id)
    taken = {c.id: c.attempts for c in chunks if c.attempts != 1}
    assert not taken, f"live chunks taken from their worker (attempts): {taken}"
    assert {c.state for c in chunks} == {"done"}, chunks
    assert_every_item_once(client, job_id, set(items))
    assert view.counts.ok == len(items)
