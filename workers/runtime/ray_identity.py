"""Which Ray cluster a process has joined, by Ray's own public identity of it: the session name
(`ray.get_runtime_context().get_session_name()`, which Ray documents as uniquely identifying a
Ray cluster instance: every start of a head makes a new one) and the GCS address (the head's
node IP and port, the same seen from every host).

    joined()                              # this process's Ray (it has joined one)
    pending = Probe("10.0.0.5:6380", token)   # another process reads it, started at once
    pending.identity(timeout=15)              # ... and waited for when it is needed

A probe runs `python -m workers.runtime.ray_identity ADDRESS`: a worker's main process must
not connect to Ray itself, since Celery forks its children from it and a gRPC connection must
not cross a fork. The probe reads the session name from the GCS's key-value store, where every
driver's ray.init reads it (no driver is registered: 0.8 s instead of 2 s), and falls back to
joining as a driver if Ray's internals have moved. `sluice worker` starts it first thing, so it
runs while the worker loads its catalog and checks its schema."""

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


class Probe:
    """The identity of the Ray cluster at `address`, read by a short-lived process started
    now; `identity` waits for it."""

    def __init__(self, address: str, auth_token_path: Path | None) -> None:
        self.address = address
        env = dict(os.environ)
        if auth_token_path is not None:  # as actor_directory.connect does, before Ray's import
            env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(auth_token_path)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, address],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def identity(self, timeout: float) -> RayIdentity:
        """Raises RuntimeError when the probe could not read it, subprocess.TimeoutExpired
        after `timeout` seconds (a head that does not answer is waited for)."""
        try:
            out, err = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise
        lines = out.strip().splitlines()
        if self._process.returncode != 0 or not lines:
            tail = err.strip().splitlines()[-3:]
            raise RuntimeError(f"could not reach Ray at {self.address}: {' | '.join(tail)}")
        return RayIdentity(**json.loads(lines[-1]))

    def cancel(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.communicate()


def read_from_gcs(address: str) -> RayIdentity:
    """Ray's internals, as ray.init uses them to join a cluster (ray/_private/worker.py):
    the bootstrap address canonicalised to the head's node IP, the session name from the
    GCS's key-value store. Raises on a Ray whose internals have moved."""
    from ray._private.services import canonicalize_bootstrap_address_or_die
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    gcs_address = canonicalize_bootstrap_address_or_die(address)
    name = GcsClient(address=gcs_address).internal_kv_get(b"session_name", b"session")
    if not name:
        raise RuntimeError(f"no session name in the GCS at {gcs_address}")
    return RayIdentity(name.decode(), gcs_address)


def read_as_driver(address: str) -> RayIdentity:
    import ray

    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        return joined()
    finally:
        ray.shutdown()


def main(address: str) -> None:
    try:
        found = read_from_gcs(address)
    except (ImportError, AttributeError, TypeError) as exc:  # Ray's internals moved
        print(f"reading the GCS directly failed ({exc!r}); joining as a driver", file=sys.stderr)
        found = read_as_driver(address)
    print(json.dumps(asdict(found)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
