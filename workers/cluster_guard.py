"""A worker joined to another Ray cluster than the one its Sluice cluster's models run on is
refused: at start (`sluice worker`, ops/worker.py), and in every worker process that joins Ray
(before it claims a chunk, and in each sweep, which keeps an idle cluster's binding fresh).
The ledger's side (the binding, compared and refreshed in SQL) is storage/cluster_identity.py.

The trap it closes: with SLUICE_BROKER_URL set and SLUICE_RAY_ADDRESS unset, every worker
process starts a private Ray (RAY_ADDRESS is not read) and loads its models there, silently.
A private Ray is never bound (it dies with its process, and no other host could join it): it
is refused while another Ray is bound and live, and runs with a warning otherwise.
"""

import logging
import os
import sys
import time

from sqlalchemy import Engine

from schemas.errors import ClusterMismatchError
from schemas.settings import Settings
from schemas.stack import Endpoints
from storage.cluster_identity import (
    RAY_REFRESH_SECONDS,
    RayCheck,
    check_ray,
    live_binding,
    ray_mismatch_message,
    stale_after,
)
from workers.runtime import ray_identity
from workers.runtime.ray_identity import RayIdentity

log = logging.getLogger("sluice.cluster")
PROBE_TIMEOUT_S = 15.0  # joining a Ray at start; one that does not answer is checked later
# The Ray `sluice worker` found at start, for its processes (set before Celery forks them):
# a process that has not joined Ray yet (the sweep's) keeps that Ray's binding live.
STARTED_ON = "_SLUICE_RAY_AT_START"
PRIVATE_RAY = (
    "SLUICE_RAY_ADDRESS is unset (RAY_ADDRESS is not read): each worker process would start "
    "a private Ray and load its own models there. Set SLUICE_RAY_ADDRESS to the Ray cluster "
    "every host uses (ray start --head --port=6380 on one host), or to `local` to run this "
    "worker's processes on private Rays on purpose"
)
PRIVATE = "local"  # SLUICE_RAY_ADDRESS=local: private Rays, chosen
NOT_HOST_ADDRESSES = ("127.", "localhost", "[::1]", "::1", "auto", "local")


def bound_address(configured: str, joined: RayIdentity) -> str:
    """The address recorded for the Ray a worker joined, for other hosts' messages ("Set
    SLUICE_RAY_ADDRESS=..."): the configured one when any host could use it (a DNS name, a
    ray:// URL), else the GCS address Ray reports (its head's node IP and port)."""
    return joined.gcs_address if configured.startswith(NOT_HOST_ADDRESSES) else configured


def settle(found: RayCheck, joined: RayIdentity | None, address: str | None, stale: float) -> None:
    """Raise ClusterMismatchError on a conflict; log a binding that was taken over.
    `joined`: None for a private Ray not started yet; `address`: None for a private one."""
    if found.conflict is not None:
        mine = joined.ray_id if joined else None
        raise ClusterMismatchError(ray_mismatch_message(found.conflict, stale, mine, address))
    if found.replaced is not None and joined is not None:
        log.warning(
            "Ray cluster %s at %s now runs this Sluice cluster's models (it replaces %s at %s, "
            "last seen %.0fs ago)",
            joined.ray_id,
            address,
            found.replaced.ray_id,
            found.replaced.address,
            found.replaced.seen_seconds_ago,
        )


def check_at_start(
    settings: Settings,
    endpoints: Endpoints,
    engine: Engine,
    started: ray_identity.Probe | None = None,
) -> None:
    """`sluice worker`, before it consumes anything: the Ray its processes will join is the
    one bound in the ledger (or is bound now). A private Ray need not be started to know it is
    another: any live binding refuses it. `started`: the probe of that Ray, if one was
    started earlier."""
    stale = stale_after(settings.sweep_interval)
    if endpoints.ray_address in (None, PRIVATE):
        if (bound := live_binding(engine, stale)) is not None:
            raise ClusterMismatchError(ray_mismatch_message(bound, stale, None, None))
        if endpoints.ray_address is None and settings.broker_url is not None:
            raise ClusterMismatchError(PRIVATE_RAY)  # a shared broker: other hosts exist
        log.warning(PRIVATE_RAY)
        return
    pending = started or ray_identity.Probe(endpoints.ray_address, endpoints.ray_auth_token_path)
    try:
        joined = pending.identity(PROBE_TIMEOUT_S)
    except Exception as exc:  # a Ray that is down now: the worker starts, as it always did
        log.warning(
            "Ray at %s not reached at start (%s); its processes check it when they join it",
            endpoints.ray_address,
            exc,
        )
        return
    address = bound_address(endpoints.ray_address, joined)
    settle(check_ray(engine, joined.ray_id, address, stale), joined, address, stale)
    os.environ[STARTED_ON] = f"{joined.ray_id} {address}"


def ray_joined() -> bool:
    """Whether this process has joined Ray (without importing it when it has not)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


class RayGuard:
    """One worker process's check of the Ray it joined, at most every RAY_REFRESH_SECONDS
    (one UPDATE of the binding's `ray_seen_at` each time: cheap enough for every chunk)."""

    def __init__(self, settings: Settings, endpoints: Endpoints) -> None:
        self.configured = endpoints.ray_address
        self.stale = stale_after(settings.sweep_interval)
        self._checked_at: float | None = None
        self._warned = False

    def check(self, engine: Engine) -> None:
        """Raises ClusterMismatchError when this process's Ray is not its cluster's. A process
        that has not joined Ray is checked only if its Ray would be a private one."""
        now = time.monotonic()
        if self._checked_at is not None and now - self._checked_at < RAY_REFRESH_SECONDS:
            return
        try:
            joined = ray_identity.joined() if ray_joined() else None
        except Exception as exc:  # a Ray that does not say (Ray Client, ray://): not compared
            log.warning("this process's Ray cluster is not compared with the cluster's: %s", exc)
            self._checked_at = now
            return
        if joined is None and self.configured not in (None, PRIVATE):
            started_on = os.environ.get(STARTED_ON, "").split(" ", 1)
            if len(started_on) == 2:  # not joined yet: the Ray this worker started on
                at_start = RayIdentity(*started_on)
                address = at_start.gcs_address
                found = check_ray(engine, at_start.ray_id, address, self.stale)
                settle(found, at_start, address, self.stale)
                self._checked_at = now
            return
        if self.configured in (None, PRIVATE):
            bound = live_binding(engine, self.stale)
            settle(RayCheck(conflict=bound), joined, None, self.stale)
            if not self._warned:
                log.warning(PRIVATE_RAY)
                self._warned = True
        elif joined is not None:
            address = bound_address(self.configured, joined)
            settle(
                check_ray(engine, joined.ray_id, address, self.stale), joined, address, self.stale
            )
        self._checked_at = now
