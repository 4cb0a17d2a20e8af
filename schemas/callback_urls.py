"""Which callback URLs and addresses Sluice will call: http(s) only, and only public addresses,
unless SLUICE_CALLBACK_ALLOW_PRIVATE=true (tests, on-premise receivers).

A callback is a request the server makes on a tenant's behalf, so an unchecked URL would let a
tenant reach the cloud metadata service or the private network (SSRF). The API refuses what it
can see at submit time (a literal address, `localhost`); the worker checks every address a
host name resolves to, and then connects to exactly the address it checked
(workers/callback_http.py), so a DNS answer that changes in between cannot redirect it.
"""

import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from schemas.errors import SluiceError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
CGNAT = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not global, not "private"
NAT64 = ipaddress.ip_network("64:ff9b::/96")
LOCAL_NAMES = ("localhost", "localhost.localdomain")
ALLOW_HINT = "SLUICE_CALLBACK_ALLOW_PRIVATE=true allows private receivers"


@dataclass(frozen=True)
class CallbackTarget:
    """A callback URL taken apart: the host as sent in Host/SNI (IDNA-encoded) and its port."""

    scheme: str
    host: str
    port: int
    target: str  # path and query
    username: str | None = None  # user:password@ in the URL, sent as HTTP basic auth
    password: str | None = None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_callback_url(url: str) -> CallbackTarget:
    """Split an http(s) URL, or raise SluiceError saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").rstrip(".")
        ascii_host = host.encode("idna").decode("ascii") if host else ""
    except (ValueError, UnicodeError) as exc:
        raise SluiceError(f"callback_url {url!r} is not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https") or not ascii_host:
        raise SluiceError(f"callback_url {url!r} must be an http(s) URL with a host")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = 443 if parts.scheme == "https" else 80
    host = ascii_host.lower()
    credentials = [
        None if part is None else unquote(part) for part in (parts.username, parts.password)
    ]
    return CallbackTarget(parts.scheme, host, port or default, target, *credentials)


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def blocked_reason(address: str | Address) -> str | None:
    """Why a receiver at this address is refused (e.g. "loopback"), or None if it is public."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    inner = embedded_ipv4(ip)
    if inner is not None:  # judged by the IPv4 address it reaches
        reason = blocked_reason(inner)
        return f"{reason} (IPv6 form)" if reason else None
    checks = (
        (ip in METADATA, "cloud metadata"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip in CGNAT, "carrier-grade NAT"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "non-public"),
    )
    return next((reason for hit, reason in checks if hit), None)


def literal_address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_callback_url(url: str, allow_private: bool) -> CallbackTarget:
    """What can be refused before any DNS lookup: not http(s), or a host that is a forbidden
    literal address or `localhost`. Host names are checked again, resolved, at send time."""
    target = parse_callback_url(url)
    if allow_private:
        return target
    if target.host in LOCAL_NAMES or target.host.endswith(".localhost"):
        raise SluiceError(
            f"callback_url host {target.host!r} is this machine; callbacks go to public "
            f"addresses only ({ALLOW_HINT})"
        )
    literal = literal_address(target.host)
    reason = blocked_reason(literal) if literal is not None else None
    if reason:
        raise SluiceError(
            f"callback_url host {target.host} is a {reason} address; callbacks go to public "
            f"addresses only ({ALLOW_HINT})"
        )
    return target
