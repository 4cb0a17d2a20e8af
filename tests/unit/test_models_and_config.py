"""Model references fail at submit with a reason; the Celery config guards delivery."""

import json
from pathlib import Path

import pytest

from producers.model_refs import resolve
from schemas.catalog import load_catalog
from schemas.errors import ConfigError, ModelError
from schemas.settings import Settings
from schemas.stack import Endpoints
from workers.celery_app import create_app


def test_packaged_default_model_resolves_offline(tmp_path: Path):
    ref = resolve("all-MiniLM-L6-v2", load_catalog().get("embed"), tmp_path)
    assert (ref.path / "model.safetensors").is_file() and len(ref.version) == 16
    assert resolve("all-MiniLM-L6-v2", load_catalog().get("embed"), tmp_path).version == ref.version


def test_unsafe_or_unsuitable_models_are_refused(tmp_path: Path):
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ModelError, match="trust_remote_code=False"):
        resolve(str(custom), load_catalog().get("embed"), tmp_path)
    with pytest.raises(ModelError, match="does not fit classify-text"):
        resolve("all-MiniLM-L6-v2", load_catalog().get("classify-text"), tmp_path)
    with pytest.raises(ModelError, match="not in the Hugging Face cache"):
        # HF_HUB_OFFLINE=1 in tests
        resolve("someone/no-such-model-here", load_catalog().get("embed"), tmp_path)


def test_celery_is_configured_for_at_least_once_json_delivery():
    app = create_app(
        Settings(),
        Endpoints(broker_url="redis://127.0.0.1:1/0", database_url="sqlite://", ray_address=None),
    )
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert "sluice.process_chunk" in app.tasks and "sluice.sweep" in app.tasks


def test_worker_refuses_a_visibility_timeout_shorter_than_a_chunk():
    settings = Settings(visibility_timeout=60, chunk_time_limit=600)
    with pytest.raises(ConfigError, match="must be longer than SLUICE_CHUNK_TIME_LIMIT"):
        create_app(
            settings,
            Endpoints(
                broker_url="redis://127.0.0.1:1/0", database_url="sqlite://", ray_address=None
            ),
        )


def released_channel() -> object:
    """A kombu Redis channel as Celery leaves it once Redis went away: its connection gone."""
    from kombu.transport import redis as kombu_redis

    channel = kombu_redis.Channel.__new__(kombu_redis.Channel)  # no broker to connect to
    channel.connection = None
    channel._pool = None
    channel.do_restore = False  # kombu's own restore at exit: not these tests'
    return channel


def test_a_released_channel_is_a_lost_connection_not_a_crash():
    """Redis restarting under a worker: an ack or the restore of unacked messages reaching a
    released channel must read as a lost connection (the worker reconnects), not an
    AttributeError that makes Celery stop the worker (tests/fault/test_broker_restart.py)."""
    import logging

    from kombu.message import Message
    from kombu.transport import redis as kombu_redis

    from workers.vanished_broker import tolerate_a_vanished_broker

    tolerate_a_vanished_broker()
    tolerate_a_vanished_broker()  # once only, however many apps are made
    errors = kombu_redis.Transport.connection_errors + kombu_redis.Transport.channel_errors

    qos = kombu_redis.QoS(released_channel())
    with pytest.raises(errors):  # what Celery's ack path catches and logs
        qos.ack("tag")

    class Delivered(Message):
        def ack(self, multiple: bool = False) -> None:
            qos.ack("tag")

    Delivered(body=b"{}", channel=qos.channel).ack_log_error(logging.getLogger("t"), errors)

    qos._delivered["tag"] = object()
    assert qos.restore_unacked() is None  # swallowed on close: nothing to restore to


def test_a_live_channel_still_reaches_its_broker():
    from types import SimpleNamespace

    from kombu import Connection

    from workers.vanished_broker import tolerate_a_vanished_broker

    tolerate_a_vanished_broker()
    channel = released_channel()
    channel.connection = SimpleNamespace(  # type: ignore[attr-defined]
        client=Connection("redis://127.0.0.1:6399/3"), default_port=6379
    )
    params = channel._connparams()  # type: ignore[attr-defined]
    assert (params["host"], params["port"], params["db"]) == ("127.0.0.1", 6399, 3)
