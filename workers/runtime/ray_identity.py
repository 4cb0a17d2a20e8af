"""Which Ray cluster a process has joined, by Ray's own public identity of it: the session name
(`ray.get_runtime_context().get_session_name()`, which Ray documents as uniquely identifying a
Ray cluster instance: every start of a head makes a new one) and the GCS address (the head's
node IP and port, the same seen from every host).

    joined()                       # this process's Ray (it has joined one)
    probe("10.0.0.5:6380", token)  # another process joins, reads it and leaves

`probe` runs `python -m workers.runtime.ray_identity ADDRESS`: a worker's main process must not
join Ray itself, since Celery forks its children from it and a Ray connection must not cross a
fork."""

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class RayIdentity:
    ray_id: str  # Ray's session name: session_2026-01-01_10-00-00_000000_1234
    gcs_address: str  # host:port of the head's GCS


def joined() -> RayIdentity:
    """The Ray this process has joined (ray.init was called). Local: asks no server."""
    import ray

    context = ray.get_runtime_context()
    return RayIdentity(context.get_session_name(), str(context.gcs_address))


def probe(address: str, auth_token_path: Path | None, timeout: float) -> RayIdentity:
    """The identity of the Ray cluster at `address`, read by a short-lived process that joins
    it as a driver. Raises RuntimeError when it cannot, subprocess.TimeoutExpired after
    `timeout` seconds (ray.init waits for a head that does not answer)."""
    env = dict(os.environ)
    if auth_token_path is not None:  # as actor_directory.connect does, before Ray is imported
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(auth_token_path)}
    done = subprocess.run(
        [sys.executable, "-m", __name__, address],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"could not join Ray at {address}: {' | '.join(tail)}")
    return RayIdentity(**json.loads(lines[-1]))


def main(address: str) -> None:
    import ray

    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        print(json.dumps(asdict(joined())), flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
