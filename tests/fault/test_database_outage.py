"""The ledger's PostgreSQL unreachable for 30 s mid-job (stopped at once, connections cut),
then back on the same port. Nothing is recorded while it is away; nothing is lost or
recorded twice once it is back, and the job finishes without waiting out a long timer."""

import time

import pytest

from tests.fault.accounting import assert_every_item_once, processed
from tests.fault.conftest import Rig, sample_texts
from tests.fault.throwaway_servers import ThrowawayPostgres
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.fault
OUTAGE_SECONDS = 30
RECOVERY_SECONDS = 90  # from the database's return to the job's end (600 texts to embed)


def test_postgres_unreachable_for_30_seconds_mid_job(
    pg_rig: Rig, postgres_server: ThrowawayPostgres
):
    client = pg_rig.client
    client.settings.chunk_size = 50
    items = sample_texts(700)
    job_id = client.submit_texts(items, "embed")
    worker = pg_rig.worker("--beat")
    wait_until(lambda: processed(client, job_id) >= 100, 240, "two chunks")
    postgres_server.stop()
    before = time.monotonic()
    time.sleep(OUTAGE_SECONDS)  # the outage itself: deliberately a fixed time
    assert not postgres_server.running()
    postgres_server.start()
    back = time.monotonic()
    assert back - before >= OUTAGE_SECONDS
    assert processed(client, job_id) < len(items), "the job must still be mid-way"
    # back at work at once: not after SLUICE_REQUEUE_AFTER (120 s) re-sends what was lost
    pg_rig.wait(job_id, timeout=RECOVERY_SECONDS)
    assert_every_item_once(client, job_id, set(items))
    assert worker.poll() is None, "the worker must ride out the outage, not exit"
