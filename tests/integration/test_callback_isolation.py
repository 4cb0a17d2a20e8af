"""Callbacks off the inference path (issue 12), on the real stack (Redis, Celery, Ray, the
ledger) with `sluice worker --beat` as a user runs it: receivers that trickle their answer one
byte a second do not slow other jobs down, and their callbacks end as `timeout` failures."""

import time

import pytest

from producers import Client
from storage.callback_ledger import Callbacks
from tests.callback_receivers import Receiver, Tarpit
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

TARPIT_JOBS = 4
DEADLINE = 4.0  # SLUICE_CALLBACK_TIMEOUT: each tarpit attempt is cut after this long
ATTEMPTS = 2
# Under the old inline sending, each tarpit callback held a prefork slot for the ~60 s its
# answer takes (every byte arrives within httpx's 4 s read timeout), and the worker has 2.
CALLBACK_ENV = {
    "SLUICE_CALLBACK_TIMEOUT": str(DEADLINE),
    "SLUICE_CALLBACK_MAX_ATTEMPTS": str(ATTEMPTS),
    "SLUICE_CALLBACK_BACKOFF": "0.5",
    "SLUICE_WORKER_CONCURRENCY": "2",
}


def finish_time(client: Client, job_id: str, started: float) -> float:
    wait_until(lambda: client.status(job_id).status.finished, 180, f"job {job_id} to finish")
    return time.monotonic() - started


def test_tarpit_receivers_do_not_slow_other_jobs(client: Client, start_worker):
    callbacks = Callbacks(client.ledger.engine)
    start_worker(**CALLBACK_ENV)
    with Tarpit(interval=1.0) as tarpit, Receiver() as receiver:
        warm = client.submit_texts(["warm the model up"], "embed")
        finish_time(client, warm, time.monotonic())

        started = time.monotonic()
        alone = client.submit_texts(["a normal job, alone"], "embed")
        baseline = finish_time(client, alone, started)

        slow = [
            client.submit_texts([f"tarpit job {n}"], "embed", callback_url=tarpit.url())
            for n in range(TARPIT_JOBS)
        ]
        # Every tarpit callback under way: inline sending held both inference slots here.
        wait_until(lambda: tarpit.started >= TARPIT_JOBS, 60, "the tarpit to hold callbacks")
        started = time.monotonic()
        beside = client.submit_texts(["a normal job, beside"], "embed")
        took = finish_time(client, beside, started)
        tarpit_states = [(callbacks.get(job) or {}).get("state") for job in slow]
        with_callback = client.submit_texts(
            ["a normal job with a callback"], "embed", callback_url=receiver.url()
        )
        receiver.call_for(with_callback, timeout=60)  # the callback pool is not jammed
        print(
            f"\nnormal job: alone {baseline:.2f}s, beside {TARPIT_JOBS} tarpit callbacks "
            f"{took:.2f}s; tarpit callbacks then: {tarpit_states}"
        )
        # Finished while the tarpits still hold their callbacks, and in about its usual time.
        assert tarpit.finished == 0 and "failed" not in tarpit_states
        assert took < 2 * baseline + 2.0, f"alone {baseline:.2f}s, beside tarpits {took:.2f}s"

        def all_given_up() -> bool:
            return all((callbacks.get(job) or {}).get("state") == "failed" for job in slow)

        wait_until(all_given_up, ATTEMPTS * (DEADLINE + 5) + 30, "the tarpit callbacks to fail")
        for job in slow:
            record = callbacks.get(job)
            assert record is not None
            assert (record["last_error"], record["attempts"]) == ("timeout", ATTEMPTS)
            assert record["last_status_code"] is None
        assert tarpit.started == TARPIT_JOBS * ATTEMPTS and tarpit.finished == 0
        delivered = callbacks.get(with_callback)
        assert delivered is not None and delivered["state"] == "delivered"
