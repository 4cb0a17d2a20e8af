"""SIGKILLs during a job: a dozen of pool processes and of the model actor, then the whole
worker. Nothing gets a chance to ack, release or clean up; every item still ends once."""

import os
import signal
import subprocess
from collections.abc import Callable

import psutil
import pytest

from schemas.catalog import load_catalog
from schemas.settings import Settings
from tests.fault.accounting import assert_every_item_once, chunk_rows, processed
from tests.fault.conftest import PROBE_TASKS, Rig, sample_texts
from tests.integration.conftest import wait_until
from workers.runtime import actor_directory

pytestmark = pytest.mark.fault
# 12 SIGKILLs: 9 of pool processes (each holding a chunk), 3 of the model actor (each
# restart loads the model again: the slow part of this test)
KILL_PLAN = ["pool", "pool", "pool", "actor"] * 3
CHUNK = 50


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def busy_pool_process(rig: Rig, worker: subprocess.Popen[bytes], job_id: str) -> int | None:
    """A live pool process of `worker` that holds a chunk of the job on its first attempt
    (one not hit before, so no chunk uses up its attempts here)."""
    pool = rig.pool_pids(worker)
    for chunk in chunk_rows(rig.client, job_id):
        pid = chunk.owner_pid
        if chunk.state == "running" and chunk.attempts == 1 and pid in pool and alive(pid):
            return pid
    return None


def test_a_dozen_sigkills_of_pool_processes_and_the_model_actor(
    rig: Rig, actor_pid: Callable[[str], int]
):
    client = rig.client
    client.settings.chunk_size = CHUNK
    items = sample_texts(3000)
    job_id = client.submit_texts(items, "embed")
    worker = rig.worker("--beat")
    wait_until(lambda: processed(client, job_id) >= CHUNK, 240, "a first chunk")
    killed: list[tuple[str, int]] = []
    for kind in KILL_PLAN:
        view = client.status(job_id)
        assert not view.status.finished, f"the job ended after {len(killed)} kills: {killed}"
        if kind == "pool":
            pid = wait_until(
                lambda: busy_pool_process(rig, worker, job_id), 60, "a busy pool process"
            )
        else:
            pid = actor_pid(
                actor_directory.shared_actor_name(
                    load_catalog(PROBE_TASKS).get(view.task),
                    view.model,
                    view.model_version,
                    0,
                    Settings(),  # the rig's worker sets no option that changes outputs
                )
            )
        os.kill(pid, signal.SIGKILL)
        killed.append((kind, pid))
        wait_until(lambda p=pid: not alive(p), 10, f"{kind} process {pid} to die")
        # the next kill waits for the job to move on by a chunk
        before = view.counts.processed
        wait_until(
            lambda b=before: processed(client, job_id) >= b + CHUNK, 120, f"progress after {kind}"
        )
    assert len({pid for _, pid in killed}) == len(KILL_PLAN), killed
    rig.wait(job_id, timeout=240)  # fails at once if the worker itself died
    assert_every_item_once(client, job_id, set(items))


def test_sigkilled_worker_group_and_a_new_worker(rig: Rig):
    client = rig.client
    client.settings.chunk_size = CHUNK
    items = sample_texts(600)
    job_id = client.submit_texts(items, "embed")
    first = rig.worker("--beat")
    wait_until(lambda: processed(client, job_id) >= CHUNK, 240, "a first chunk")
    pool = rig.pool_pids(first)
    rig.kill(first)  # the worker, its pool and its beat at once
    wait_until(lambda: not any(alive(pid) for pid in pool), 10, "the pool to die")
    assert processed(client, job_id) < len(items), "the job must still be mid-way"
    held = [c.id for c in chunk_rows(client, job_id) if c.state == "running"]
    rig.worker("--beat")
    rig.wait(job_id, timeout=180)
    assert_every_item_once(client, job_id, set(items))
    attempts = {c.id: c.attempts for c in chunk_rows(client, job_id)}
    assert all(attempts[c] >= 2 for c in held), ("taken over once its lease ran out", attempts)
