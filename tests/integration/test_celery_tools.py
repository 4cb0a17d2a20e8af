"""Stock Celery tools against a Sluice broker: `celery inspect` with only the broker URL, and
with Sluice's app (`-A ops.celery_entry`, what Flower uses too), get the worker's reply."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.stack import KOMBU_SEP

pytestmark = pytest.mark.integration
CELERY = str(Path(sys.executable).parent / "celery")


def test_sluice_keeps_kombus_separator():
    from kombu.transport.redis import Channel

    assert Channel.sep == KOMBU_SEP


def test_stock_celery_inspect_gets_the_workers_reply(
    env: dict[str, str], start_worker: Callable[..., Any], tmp_path: Path
):
    start_worker()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    for args in (
        ["--broker", env["SLUICE_BROKER_URL"]],  # a stock client: the broker URL only
        ["-A", "ops.celery_entry"],  # Sluice's app, as Flower loads it
    ):
        deadline = time.monotonic() + 120
        while True:  # a ping sent before the worker listens is lost: ask until it answers
            run = subprocess.run(
                [CELERY, *args, "inspect", "ping", "--timeout", "5"],
                env={**clean, **env},
                capture_output=True,
                text=True,
                timeout=120,
                cwd=tmp_path,
            )
            if run.returncode == 0 or time.monotonic() > deadline:
                break
        assert run.returncode == 0 and "pong" in run.stdout, (args, run.stdout, run.stderr)
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("worker-*.log"))
    assert "not enough values to unpack" not in logs
