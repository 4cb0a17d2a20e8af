"""Fair share over real Redis, Celery, Ray and SQL: a small job of one tenant is not stuck
behind another tenant's huge one, priorities still order work across tenants' lanes, and
usage is counted per tenant."""

import pytest
from sqlalchemy import func, select

from producers import Client
from storage import tables as t
from storage.usage import Usage

pytestmark = pytest.mark.integration


def chunk_times(client: Client, job_id: str) -> tuple[list, list]:
    """(claimed_at, finished_at) of the job's chunks that ran."""
    with client.ledger.engine.connect() as conn:
        rows = conn.execute(
            select(t.Chunk.claimed_at, t.Chunk.finished_at).where(
                t.Chunk.job_id == job_id, t.Chunk.claimed_at.is_not(None)
            )
        ).all()
    return [r[0] for r in rows], [r[1] for r in rows if r[1] is not None]


def test_a_small_job_is_not_stuck_behind_another_tenants_huge_one(client: Client, start_worker):
    client.settings.chunk_size = 1  # one chunk per text: the huge job is 400 chunks
    huge = client.submit_texts([f"bulk record {i}" for i in range(400)], "embed", tenant="acme")
    small = client.submit_texts(["is the payment page down?"] * 3, "embed", tenant="globex")
    assert client.status(huge).lane != client.status(small).lane
    start_worker(SLUICE_WORKER_CONCURRENCY="1")
    done = client.wait(small, timeout=240)
    huge_then = client.status(huge)
    client.cancel(huge)  # the rest of it is beside the point
    assert done.status == "succeeded"
    # Chunks alternate between the two lanes: 3 of the huge job's, give or take the prefetch.
    assert huge_then.chunks_done < 40, f"{huge_then.chunks_done} of 400 chunks ran first"
    print(f"\nhuge job's chunks done when the small job ended: {huge_then.chunks_done} of 400")
    (usage,) = Usage(client.ledger.engine).rows("globex")
    assert (usage.task, usage.ok, usage.invalid, usage.error) == ("embed", 3, 0, 0)
    assert 0 < usage.model_seconds < 60


def test_priority_still_wins_over_lanes(client: Client, start_worker):
    client.settings.chunk_size = 1
    urgent = client.submit_texts([f"incident {i}" for i in range(12)], "embed", priority=9,
                                 tenant="acme")  # fmt: skip
    routine = client.submit_texts(["weekly digest"] * 3, "embed", priority=1, tenant="globex")
    assert client.status(urgent).lane != client.status(routine).lane
    start_worker(SLUICE_WORKER_CONCURRENCY="1")  # one chunk at a time
    client.wait(routine, timeout=240)
    urgent_done = client.wait(urgent, timeout=60)
    assert urgent_done.status == "succeeded"
    _, urgent_finished = chunk_times(client, urgent)
    routine_claimed, _ = chunk_times(client, routine)
    assert len(urgent_finished) == 12
    assert min(routine_claimed) >= max(urgent_finished)
    with client.ledger.engine.connect() as conn:  # every lane message was consumed
        left = conn.scalar(
            select(func.count()).where(t.Chunk.state != "done", t.Chunk.job_id == routine)
        )
    assert left == 0


def test_the_sweeper_looks_for_a_lost_message_in_its_own_lane(client: Client, settings):
    """A tenant's lost message is re-sent to its lane, even while another tenant's backlog
    waits in another lane; the backlog is not sent twice."""
    import redis

    from workers.sweeper import BrokerProbe, sweep_once

    client.settings.chunk_size = 10
    backlog = client.submit_texts([f"waiting {i}" for i in range(30)], "embed", tenant="acme")
    lost_job = client.submit_texts(["lost"], "embed", tenant="globex")  # no worker runs
    lane = client.dispatcher.queue_for("sluice.text", client.status(lost_job).lane)
    assert lane != "sluice.text"
    broker = settings.broker_url or ""
    server = redis.Redis.from_url(broker)
    BrokerProbe(broker).mark()
    server.delete(*server.keys(f"{lane}*"))  # its message vanishes
    settings.requeue_after = 0.001
    sent: list[tuple[str, str]] = []
    report = sweep_once(
        client.ledger, settings, broker, lambda c, q, p: sent.append((c, q)), client.catalog
    )
    assert sent == [(client.ledger.chunk_ids(lost_job)[0], lane)] and report.resent == 1
    assert not BrokerProbe(broker).is_empty("sluice.text")  # acme's backlog still waits
    assert client.status(backlog).chunks_done == 0
