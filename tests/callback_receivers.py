"""Callback receivers on 127.0.0.1 for tests: one that records every request and answers at
once, and a tarpit that answers one byte every few seconds (the receiver issue 12 is about)."""

import json
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Call:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def job_id(self) -> str | None:
        try:
            return json.loads(self.body).get("job_id")  # type: ignore[no-any-return]
        except ValueError:
            return None


class Receiver:
    """Records each POST and answers `status` (204 unless told otherwise)."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.calls: list[Call] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.arrived:
                    receiver.calls.append(Call(self.path, headers, body))
                    receiver.arrived.notify_all()
                self.send_response(receiver.status)
                if 300 <= receiver.status < 400:
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"http://{host}:{self.port}{path}"

    def wait_for(self, found: Callable[[list[Call]], Any], timeout: float) -> Any:
        """Block until `found(calls)` is truthy (each arrival wakes it); returns its value."""
        with self.arrived:
            value = self.arrived.wait_for(lambda: found(self.calls), timeout)
        assert value, f"the receiver did not get what was awaited within {timeout}s"
        return value

    def call_for(self, job_id: str, timeout: float) -> Call:
        return self.wait_for(  # type: ignore[no-any-return]
            lambda calls: next((c for c in calls if c.job_id == job_id), None), timeout
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tarpit:
    """Reads the whole request, then sends `200 OK` one byte every `interval` seconds: every
    read of the sender gets data in time, so only a deadline on the whole attempt ends it."""

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self.closing = threading.Event()
        self.lock = threading.Condition()
        self.started = 0  # requests read
        self.finished = 0  # responses sent to the end
        self.dropped = 0  # connections the sender closed before the end
        tarpit = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                tarpit.read_request(conn)
                with tarpit.lock:
                    tarpit.started += 1
                    tarpit.lock.notify_all()
                for n in range(len(Tarpit.RESPONSE)):
                    if tarpit.closing.wait(tarpit.interval if n else 0):
                        return
                    try:
                        conn.sendall(Tarpit.RESPONSE[n : n + 1])
                    except OSError:
                        with tarpit.lock:
                            tarpit.dropped += 1
                            tarpit.lock.notify_all()
                        return
                with tarpit.lock:
                    tarpit.finished += 1
                    tarpit.lock.notify_all()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def read_request(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                return
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length:
            more = conn.recv(65536)
            if not more:
                return
            body += more

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
