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


def test_a_worker_closing_on_a_vanished_broker_does_not_crash():
    """kombu restores unacked messages through a released connection when Redis goes away:
    the worker must reconnect, not exit (tests/fault/test_broker_restart.py)."""
    from types import SimpleNamespace

    from kombu.transport import redis as kombu_redis

    from workers.celery_app import tolerate_a_vanished_broker_on_close

    tolerate_a_vanished_broker_on_close()
    tolerate_a_vanished_broker_on_close()  # once only, however many apps are made

    class Released:
        connection = SimpleNamespace(client=None)  # what a released kombu channel holds
        do_restore = False  # kombu's own restore at exit: not this test's

        def conn_or_acquire(self, client: object = None) -> object:
            raise AttributeError("'NoneType' object has no attribute 'hostname'")

    qos = kombu_redis.QoS(Released())
    qos._delivered["tag"] = object()
    assert qos.restore_unacked() is None  # swallowed: nothing to restore to
    live = kombu_redis.QoS(Released())
    live.channel.connection = SimpleNamespace(client=object())  # a bug elsewhere: raised
    with pytest.raises(AttributeError):
        live.restore_unacked()
