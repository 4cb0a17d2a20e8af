"""The Ray runtime: named actors, batching across concurrent callers, restart after a crash."""

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import ray
from ray.exceptions import RayActorError

from producers.model_refs import resolve
from schemas.catalog import load_catalog
from schemas.settings import Settings
from workers.runtime import actor_directory as actors
from workers.runtime.options import actor_options, output_tag

pytestmark = pytest.mark.integration
EMBED = load_catalog().get("embed")


@pytest.fixture
def ray_connected(services: dict[str, str]) -> None:
    actors.connect(services["ray"], Path(services["ray_token"]))


def _items(prefix: str, n: int) -> list[dict[str, str]]:
    return [{"key": f"{prefix}{i}", "text": f"message number {i} from {prefix}"} for i in range(n)]


def test_concurrent_requests_are_merged_into_one_batch(ray_connected: None, tmp_path: Path):
    model = resolve("all-MiniLM-L6-v2", EMBED, tmp_path)
    version = f"test-{uuid.uuid4().hex[:8]}"  # a fresh actor with a long batching window
    settings = Settings(max_batch_size=64, max_batch_wait_ms=500)
    actor = actors.get_actor(EMBED, model.name, str(model.path), version, 0, settings)
    assert ray.get(actor.stats.remote())["items"] == 0  # loaded, idle
    same = actors.get_actor(EMBED, model.name, str(model.path), version, 0, settings)
    tag = output_tag(actor_options(settings, EMBED))
    assert (
        actors.shared_actor_name(EMBED, model.name, version, 0, settings)
        == f"sluice:v3:embed:all-MiniLM-L6-v2:{version}:{tag}:0"
    )
    assert ray.get(same.stats.remote())["pid"] == ray.get(actor.stats.remote())["pid"]

    # Two callers, as two Celery workers would be, each with a small request.
    refs = [
        actor.process.remote("job-a", _items("a", 3), {}, "none"),
        actor.process.remote("job-b", _items("b", 4), {}, "none"),
    ]
    a, b = ray.get(refs)
    assert [o["key"] for o in a] == ["a0", "a1", "a2"] and len(b) == 4
    assert ray.get(actor.stats.remote())["batch_sizes"] == {7: 1}
    ray.kill(actor, no_restart=True)


def test_actor_is_restarted_after_its_process_dies(ray_connected: None, tmp_path: Path):
    model = resolve("all-MiniLM-L6-v2", EMBED, tmp_path)
    version = f"test-{uuid.uuid4().hex[:8]}"
    actor = actors.get_actor(EMBED, model.name, str(model.path), version, 0, Settings())
    pid = ray.get(actor.stats.remote())["pid"]
    os.kill(pid, signal.SIGKILL)
    # A call that reaches the dead process fails (Ray does not run it twice: the worker
    # isolates the cause instead); the restarted actor takes the next ones.
    from tests.integration.conftest import wait_until

    def restarted() -> bool:
        try:
            return ray.get(actor.stats.remote(), timeout=60)["pid"] != pid
        except RayActorError:
            return False

    wait_until(restarted, 120, "the actor's restart")
    out = ray.get(actor.process.remote("job", _items("x", 2), {}, "none"), timeout=120)
    assert [o["status"] for o in out] == ["ok", "ok"]
    ray.kill(actor, no_restart=True)


def test_cancelled_work_stops_in_the_actor(ray_connected: None, tmp_path: Path):
    """A lost lease or a cancelled job cancels the Ray call: the items of it that were still
    waiting to be batched are never run."""
    from schemas.errors import WorkCancelled
    from tests.integration.conftest import wait_until
    from workers.ray_calls import ActorCalls

    model = resolve("all-MiniLM-L6-v2", EMBED, tmp_path)
    version = f"test-{uuid.uuid4().hex[:8]}"
    settings = Settings(max_batch_size=8, max_batch_wait_ms=1)
    actor = actors.get_actor(EMBED, model.name, str(model.path), version, 0, settings)

    def items_run() -> int:
        sizes = ray.get(actor.stats.remote())["batch_sizes"]
        return sum(int(size) * count for size, count in sizes.items())

    calls = ActorCalls(deadline=time.monotonic() + 300)
    ref = actor.process.remote("job", _items("long", 4000), {}, "none")
    failure: list[BaseException] = []

    def wait_for_it() -> None:
        try:
            calls.get(ref)
        except BaseException as exc:
            failure.append(exc)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()  # the worker waits for the chunk...
    wait_until(items_run, 120, "the first batch")
    calls.cancel()  # ...when its lease is lost (what the lease keeper does)
    waiter.join(60)
    assert len(failure) == 1 and isinstance(failure[0], WorkCancelled)
    # The actor stops too: a later call runs once the batcher has moved past the cancelled
    # items (it serves in order); of 4,000, only those batched before the cancel ran.
    assert len(ray.get(actor.process.remote("job", _items("after", 1), {}, "none"))) == 1
    assert items_run() < 1000
    ray.kill(actor, no_restart=True)


def test_actor_runs_on_cpu_without_gpus(ray_connected: None, tmp_path: Path):
    if ray.cluster_resources().get("GPU", 0):
        pytest.skip("this cluster has GPUs")
    model = resolve("all-MiniLM-L6-v2", EMBED, tmp_path)
    actor = actors.get_actor(
        EMBED, model.name, str(model.path), f"test-{uuid.uuid4().hex[:8]}", 0, Settings()
    )
    assert ray.get(actor.stats.remote())["device"] == "cpu"
    ray.kill(actor, no_restart=True)


def test_an_idle_actor_leaves_and_is_recreated_on_demand(ray_connected: None, tmp_path: Path):
    from tests.integration.conftest import wait_until

    model = resolve("all-MiniLM-L6-v2", EMBED, tmp_path)
    version = f"test-{uuid.uuid4().hex[:8]}"
    settings = Settings(actor_idle_seconds=1)
    actor = actors.get_actor(EMBED, model.name, str(model.path), version, 0, settings)
    assert len(ray.get(actor.process.remote("job", _items("x", 2), {}, "none"))) == 2
    name = actors.shared_actor_name(EMBED, model.name, version, 0, settings)

    def gone() -> bool:
        try:
            ray.get_actor(name, namespace=actors.NAMESPACE)
        except ValueError:
            return True
        return False

    wait_until(gone, 60, "the idle actor to leave")  # its GPU share / memory is free again
    again = actors.get_actor(EMBED, model.name, str(model.path), version, 0, Settings())
    assert len(ray.get(again.process.remote("job", _items("y", 1), {}, "none"))) == 1
    ray.kill(again, no_restart=True)
