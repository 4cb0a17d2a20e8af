"""Redis restarted without persistence mid-job: every queued message, and the messages the
worker had taken but not acked, are gone. The worker reconnects by itself, and the sweeper
sees the wipe and sends again what the ledger says is unfinished."""

import pytest
import redis

from tests.fault.accounting import assert_every_item_once, processed
from tests.fault.conftest import Rig, sample_texts
from tests.fault.throwaway_servers import ThrowawayRedis
from tests.integration.conftest import wait_until
from workers.sweeper import EPOCH_KEY

pytestmark = pytest.mark.fault


def test_redis_restarted_empty_mid_job(rig: Rig, redis_server: ThrowawayRedis):
    client = rig.client
    client.settings.chunk_size = 50
    items = sample_texts(600)
    job_id = client.submit_texts(items, "embed")
    worker = rig.worker("--beat")
    broker = redis.Redis.from_url(redis_server.url)
    wait_until(lambda: processed(client, job_id) >= 100, 240, "two chunks")
    wait_until(lambda: broker.exists(EPOCH_KEY), 60, "a sweep to mark the broker")
    redis_server.restart()  # a crash and a cold start: nothing survives
    assert not broker.exists(EPOCH_KEY)
    assert processed(client, job_id) < len(items), "the job must still be mid-way"
    rig.wait(job_id, timeout=180)
    assert_every_item_once(client, job_id, set(items))
    assert worker.poll() is None, "the worker must reconnect, not exit"
    assert broker.exists(EPOCH_KEY), "only a sweep that saw the wipe marks the broker again"


def test_redis_restarted_while_a_chunk_waits_to_retry(make_rig, redis_server: ThrowawayRedis):
    """A chunk whose attempt failed waits out its backoff as a message with an ETA, which
    the worker holds unacked: Redis restarting then must not take the worker down."""
    rig = make_rig(SLUICE_RETRY_BACKOFF="30")  # a retry 30 s away: it waits in the worker
    from sluice_fault_probe import FAIL_MARKER  # the rig put tests/plugins on sys.path

    client = rig.client
    client.settings.chunk_size = 2
    items = {f"k{i:02d}": f"text number {i}" for i in range(8)}
    items.update(k00=FAIL_MARKER, k01=FAIL_MARKER)  # the first chunk's first attempt fails
    job_id = client.submit_texts(items, "fault-probe")
    worker = rig.worker("--beat")
    wait_until(lambda: "retry: Retry in 30" in rig.log_text(), 120, "a retry to be scheduled")
    redis_server.restart()
    rig.wait(job_id, timeout=60)  # not 30 s more: the sweeper re-sends it after the wipe
    assert_every_item_once(client, job_id, set(items))
    assert worker.poll() is None, "the worker must reconnect, not exit"
