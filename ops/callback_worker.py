"""The callback pool: a Celery worker of threads that consumes only sluice.callbacks.

Callbacks wait on other people's servers, so they must never take a slot of the inference
pool (prefork, a few processes holding models). `sluice worker` runs this pool beside its
inference worker, as a child process that lives exactly as long as it does: stopped when the
worker exits (or is told to stop), and killed by the kernel if the worker dies without a word
(PR_SET_PDEATHSIG). `sluice worker -Q sluice.callbacks` runs this pool alone, in-process.

    python -m ops.callback_worker --parent PID     # what `sluice worker` starts
"""

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

from celery import Celery

from schemas.queues import CALLBACK_QUEUE
from schemas.settings import Settings
from schemas.stack import endpoints

PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_GRACE_SECONDS = 5.0  # beyond an attempt's own deadline, for its record to be written


def run_callback_pool(app: Celery, settings: Settings, extra_argv: list[str] | None = None) -> None:
    """Consume sluice.callbacks in this process with SLUICE_CALLBACK_CONCURRENCY threads."""
    app.worker_main(
        [
            "worker",
            "--loglevel=INFO",
            "--pool=threads",
            f"--concurrency={settings.callback_concurrency}",
            f"--queues={CALLBACK_QUEUE}",
            f"--hostname=sluice-callbacks-{os.getpid()}@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
            *(extra_argv or []),
        ]
    )


@contextlib.contextmanager
def callback_pool_beside(settings: Settings, wanted: bool = True) -> Iterator[None]:
    """Run the callback pool as a child process while the block runs (the inference worker
    runs in the block); nothing when not `wanted` (the worker's -Q leaves callbacks out)."""
    if not wanted:
        yield
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "ops.callback_worker", "--parent", str(os.getpid())],
        stdin=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        stop(child, settings.callback_timeout + STOP_GRACE_SECONDS)


def stop(child: subprocess.Popen[bytes], grace: float) -> None:
    """A warm shutdown (SIGTERM: the attempts under way finish, each within its deadline),
    then SIGKILL if it takes longer than `grace`."""
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def die_with(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies (even by SIGKILL); if it is already
    gone (it died before this ran), leave at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit(0)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--parent"] and len(argv) == 2:
        die_with(int(argv[1]))
    from workers.celery_app import create_app

    settings = Settings()
    run_callback_pool(create_app(settings, endpoints(settings)), settings)


if __name__ == "__main__":
    main(sys.argv[1:])
