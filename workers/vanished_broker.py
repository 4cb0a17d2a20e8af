"""A worker survives Redis going away while it holds messages.

When Redis restarts, Celery closes the consumer's kombu channel and reconnects. Callbacks
already scheduled on the old channel (an ack when a chunk finishes, the restore of unacked
messages on close) then reach Redis through a channel whose connection is released, and kombu
raises AttributeError (`None.client`, `None.hostname`; kombu#582). Celery takes that for an
unrecoverable error and the worker exits instead of reconnecting.

Nothing can be sent through a released channel: such a use is a lost connection, so it is
raised as one (a redis ConnectionError, which kombu and Celery already treat as recoverable:
an ack is logged and dropped, a consumer reconnects). A message left unacked stays in
Redis's unacked hash, restored after the visibility timeout, and the sweeper re-sends every
unsettled chunk from the ledger; the ledger keeps a re-run from writing a row twice.
"""

import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger("sluice.worker")


def released(channel: Any) -> bool:
    transport = getattr(channel, "connection", None)
    return transport is None or getattr(transport, "client", None) is None


def tolerate_a_vanished_broker() -> None:
    """Patch kombu's Redis transport once per process (idempotent)."""
    from kombu.transport import redis as kombu_redis

    channel_class = kombu_redis.Channel
    if getattr(channel_class._connparams, "tolerant", False):
        return
    connparams = channel_class._connparams
    restore_unacked = kombu_redis.QoS.restore_unacked

    def guarded_connparams(self: Any, asynchronous: bool = False) -> Any:
        if released(self):
            raise RedisConnectionError("the broker connection behind this kombu channel is gone")
        return connparams(self, asynchronous)

    def tolerant_restore_unacked(self: Any, client: Any = None) -> Any:
        try:
            return restore_unacked(self, client)
        except RedisConnectionError:
            if not released(self.channel):
                raise
            # Nothing can be restored to a broker that is gone: see the module's docstring.
            log.warning("broker gone while closing: unacked messages are left to the sweeper")
            return None

    guarded_connparams.tolerant = True  # type: ignore[attr-defined]
    channel_class._connparams = guarded_connparams  # type: ignore[method-assign]
    kombu_redis.QoS.restore_unacked = tolerant_restore_unacked  # type: ignore[method-assign]
