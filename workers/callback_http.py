"""One callback POST, bounded and pinned.

- One deadline for the whole attempt (SLUICE_CALLBACK_TIMEOUT): resolving, connecting, TLS,
  sending and reading the whole answer. httpx's timeouts bound each read, so a receiver that
  trickles a byte every few seconds could hold a sender for ever; here every socket operation
  gets only what is left of the deadline.
- The host is resolved once (`resolve`, the seam tests stub) and every address it resolves to
  is checked (schemas/callback_urls.py); the connection then goes to exactly a checked address
  (`PinnedBackend`), while the Host header, TLS SNI and the certificate check keep the host
  name. A DNS answer that changes between the check and the connect cannot redirect it.
- No redirects are followed, no proxy from the environment is used.
- The outcome is a category (schemas/callback_failures.py) and the HTTP status; the exception
  text and addresses are only for the worker's log.
"""

import base64
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpcore
import httpx

from schemas.callback_failures import CallbackFailure
from schemas.callback_urls import (
    CallbackTarget,
    blocked_reason,
    literal_address,
    parse_callback_url,
)
from schemas.errors import SluiceError

MAX_ANSWER_BYTES = 64 * 1024  # the answer is read (the receiver may wait until it is sent)


@dataclass(frozen=True)
class Answer:
    """How an attempt went: a 2xx status, or a failure category; `detail` is for the log."""

    status_code: int | None = None
    failure: CallbackFailure | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None and self.status_code is not None


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order (tests replace this)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, timeout: float | None = None) -> float:
        """What an operation may take: its own timeout, cut to what is left of the attempt."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the callback's deadline passed")
        return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: Deadline) -> None:
        self.inner, self.deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, self.deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.deadline.left(timeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self.inner.start_tls(ssl_context, server_hostname, self.deadline.left(timeout))
        return DeadlineStream(tls, self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class PinnedBackend(httpcore.SyncBackend):
    """Dials the checked addresses, whatever host the URL names (httpcore passes the URL's
    host here; the TLS layer still gets the host name for SNI and the certificate)."""

    def __init__(self, addresses: list[str], deadline: Deadline) -> None:
        self.addresses, self.deadline = addresses, deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        failed: Exception | None = None
        for address in self.addresses:  # in the resolver's order, as a browser would
            try:
                stream = super().connect_tcp(
                    address, port, self.deadline.left(timeout), local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failed = exc
                continue
            return DeadlineStream(stream, self.deadline)
        raise failed or httpcore.ConnectError("no address to connect to")


@cache
def tls_context() -> ssl.SSLContext:
    """certifi's roots, as httpx; made once (loading them takes a while)."""
    return httpx.create_ssl_context(trust_env=False)


def resolve_within(host: str, port: int, deadline: Deadline) -> list[str]:
    """`resolve`, given no longer than the deadline: getaddrinfo has no timeout of its own,
    so it runs on a daemon thread that is abandoned if the deadline passes."""
    literal = literal_address(host)
    if literal is not None:
        return [str(literal)]
    found: dict[str, Any] = {}
    done = threading.Event()

    def lookup() -> None:
        try:
            found["addresses"] = resolve(host, port)
        except BaseException as exc:  # handed to the waiting thread
            found["error"] = exc
        finally:
            done.set()

    threading.Thread(target=lookup, name="callback-resolve", daemon=True).start()
    if not done.wait(deadline.left()):
        raise TimeoutError(f"resolving {host} took longer than the deadline")
    if "error" in found:
        raise found["error"]
    if not found["addresses"]:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
    return list(found["addresses"])


def failure_of(exc: BaseException) -> CallbackFailure:
    """The category of an exception raised while sending (its causes included)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpcore.TimeoutException | TimeoutError):
            return CallbackFailure.TIMEOUT
        if isinstance(seen, socket.gaierror):
            return CallbackFailure.DNS
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return CallbackFailure.TLS
        if isinstance(seen, ConnectionRefusedError):
            return CallbackFailure.REFUSED
        seen = seen.__cause__ or seen.__context__
    return CallbackFailure.CONNECTION_ERROR


def post(
    url: str, body: bytes, headers: dict[str, str], timeout: float, allow_private: bool
) -> Answer:
    """POST `body` to `url` once, all of it within `timeout` seconds."""
    deadline = Deadline(timeout)
    try:
        target = parse_callback_url(url)
    except SluiceError as exc:
        return Answer(failure=CallbackFailure.CONNECTION_ERROR, detail=str(exc))
    try:
        addresses = resolve_within(target.host, target.port, deadline)
        if not allow_private:
            blocked = [(a, r) for a in addresses if (r := blocked_reason(a))]
            if blocked:
                where = ", ".join(f"{a} ({r})" for a, r in blocked)
                return Answer(
                    failure=CallbackFailure.BLOCKED_ADDRESS, detail=f"resolves to {where}"
                )
        status = send_pinned(target, addresses, body, headers, deadline)
    except Exception as exc:  # every way a send can fail is an outcome to record
        return Answer(failure=failure_of(exc), detail=f"{type(exc).__name__}: {exc}"[:2000])
    if 200 <= status < 300:
        return Answer(status_code=status)
    return Answer(status, CallbackFailure.for_status(status), f"HTTP {status}")


def send_pinned(
    target: CallbackTarget,
    addresses: list[str],
    body: bytes,
    headers: dict[str, str],
    deadline: Deadline,
) -> int:
    """The request itself, on a connection pinned to `addresses`; returns the status once the
    whole answer (up to MAX_ANSWER_BYTES) is read."""
    request_headers = {**headers, "Host": target.host_header}
    if target.username is not None:  # user:password@ in the URL, as httpx would send it
        pair = f"{target.username}:{target.password or ''}".encode()
        request_headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    left = deadline.left()
    pool = httpcore.ConnectionPool(
        ssl_context=tls_context(),
        network_backend=PinnedBackend(addresses, deadline),
        max_connections=1,
        retries=0,
    )
    with pool:
        url = httpcore.URL(
            scheme=target.scheme, host=target.host, port=target.port, target=target.target
        )
        with pool.stream(
            "POST",
            url,
            headers=list(request_headers.items()),
            content=body,
            extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), left)},
        ) as response:
            read = 0
            for piece in response.iter_stream():
                read += len(piece)
                if read >= MAX_ANSWER_BYTES:
                    break
            return response.status
