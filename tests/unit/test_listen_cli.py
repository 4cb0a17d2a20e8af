"""`sluice listen` and `sluice stack up --listen` as a user meets them before any bus is
reached: a pipelines file with mistakes is refused with every mistake by line (exit 2, nothing
started), `--status` of a pipeline that never ran, and the stack's listener role, started
beside the worker and stopped before it."""

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ops import stack
from ops.cli import main

GOOD = """
[[pipelines]]
name = "tickets"
task = "classify-text"
map = { key = "id", text = "body" }
source = { kind = "rabbitmq", url = "amqp://guest:${BUS_PASSWORD}@127.0.0.1:1/", queue = "t" }
sinks = [{ kind = "rabbitmq", routing_key = "t.out" }]
dead_letter = { kind = "rabbitmq", routing_key = "t.dead" }
"""


def write(tmp_path: Path, text: str, name: str = "pipelines.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_file_with_mistakes_is_refused_with_each_by_line(tmp_path: Path) -> None:
    bad = GOOD.replace('queue = "t"', 'queue = "t", prefetch = 5').replace(
        '{ kind = "rabbitmq", routing_key = "t.out" }', '{ kind = "kafka", topic = "t.out" }'
    )
    path = write(tmp_path, bad)
    result = CliRunner().invoke(main, ["listen", str(path)], env={"BUS_PASSWORD": "x"})
    assert result.exit_code == 2, result.output
    assert "error: " in result.stderr
    assert f"{path}:6:" in result.stderr and "prefetch" in result.stderr
    assert f"{path}:7: pipelines[0].sinks[0].kind: 'kafka' is not one of" in result.stderr


def test_an_unset_variable_in_a_url_is_named(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("BUS_PASSWORD", raising=False)
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(main, ["listen", str(path)])
    assert result.exit_code == 2
    assert "the environment variable BUS_PASSWORD is not set" in result.stderr
    assert f"{path}:6:" in result.stderr


def test_status_of_a_pipeline_that_never_ran(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("SLUICE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BUS_PASSWORD", "guest")
    path = write(tmp_path, GOOD)  # port 1: nothing answers there
    result = CliRunner().invoke(main, ["listen", str(path), "--status"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown[0]["pipeline"] == "tickets" and shown[0]["note"] == "never run"
    assert shown[0]["waiting_on_bus"].startswith("unknown: RabbitMQ at amqp://***@127.0.0.1:1/: ")


def test_the_stack_refuses_a_bad_pipelines_file_before_starting_anything(
    tmp_path: Path, monkeypatch: Any
) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(stack, "_spawn", lambda cmd, *a, **k: started.append(cmd))
    monkeypatch.setenv("SLUICE_DATA_DIR", str(tmp_path / "data"))
    path = write(tmp_path, GOOD.replace('task = "classify-text"\n', ""))
    result = CliRunner().invoke(main, ["stack", "up", "--listen", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2: pipelines[0].task: Field required" in result.stderr
    assert started == []


def test_the_listener_runs_beside_the_worker_and_stops_first(
    tmp_path: Path, monkeypatch: Any
) -> None:
    started: list[list[str]] = []

    class Spawned:
        def __init__(self, pid: int) -> None:
            self.pid = pid

    def spawn(cmd: list[str], *args: Any, **kwargs: Any) -> Spawned:
        started.append(cmd)
        return Spawned(1000 + len(started))

    monkeypatch.setattr(stack, "_spawn", spawn)
    monkeypatch.setenv("BUS_PASSWORD", "guest")
    path = write(tmp_path, GOOD)
    settings = stack.Settings(
        data_dir=tmp_path / "data",
        broker_url="redis://127.0.0.1:1/0",
        ray_address="127.0.0.1:2",
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
    )
    info = stack.up(settings, listen=path)
    assert [cmd[1:] for cmd in started] == [["worker", "--beat"], ["listen", str(path)]]
    assert info.pids == {"worker": 1001, "listener": 1002}
    stopped: list[int] = []
    monkeypatch.setattr(stack.os, "killpg", lambda pid, sig: stopped.append(pid))
    monkeypatch.setattr(stack, "_alive", lambda pid: False)
    assert stack.down(settings)
    assert stopped[0] == 1002  # the listener before the worker: it drains into it


@pytest.mark.parametrize("suffix", [".json", ".ini"])
def test_other_file_kinds_are_refused_with_the_ones_that_work(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path, "{}", f"pipelines{suffix}")
    result = CliRunner().invoke(main, ["listen", str(path)])
    assert result.exit_code == 2
    assert ".toml" in result.stderr and ".yaml" in result.stderr


def test_urls_in_messages_show_no_credentials_and_variables_are_read_at_connect(
    monkeypatch: Any,
) -> None:
    from schemas.pipelines import expand_env, masked_url

    assert masked_url("amqp://sluice:s3cret@mq:5672/vhost") == "amqp://***@mq:5672/vhost"
    assert masked_url("nats://TOKEN@nats:4222") == "nats://***@nats:4222"
    assert masked_url("https://h.example/hook?sig=abc") == "https://h.example/hook"
    monkeypatch.setenv("PW", "p@ss/word")
    assert expand_env("amqp://u:${PW}@h/") == "amqp://u:p@ss/word@h/"


def test_one_pipeline_by_flags_is_the_same_as_by_file(tmp_path: Path, monkeypatch: Any) -> None:
    from producers.pipeline_file import load_pipelines
    from producers.pipeline_flags import pipeline_from_flags

    monkeypatch.setenv("BUS_PASSWORD", "guest")
    by_file = load_pipelines(write(tmp_path, GOOD)).pipelines[0]
    by_flags = pipeline_from_flags(
        name="tickets",
        task="classify-text",
        source="amqp://guest:${BUS_PASSWORD}@127.0.0.1:1/?queue=t",
        sinks=["amqp://guest:guest@127.0.0.1:5672/?routing_key=t.out"],
        dead_letter="amqp://guest:guest@127.0.0.1:5672/?routing_key=t.dead",
        mapping={"key": "id", "text": "body", "media": None, "record": None},
    ).pipelines[0]
    assert by_flags == by_file
    more = pipeline_from_flags(
        name="scans",
        task="classify-image",
        source="nats://127.0.0.1:4222?stream=SCANS&subject=scans.new&durable=sluice",
        sinks=["https://hooks.example.com/scans", "postgresql://wh/analytics?table=scan_labels"],
        dead_letter="mqtt://127.0.0.1:1883?topic=scans/dead",
        mapping={"key": None, "text": None, "media": "file.path", "record": None},
        params='{"threshold": 0.5}',
        batching={"max_events": 16, "max_wait_ms": None},
    ).pipelines[0]
    assert [s.kind for s in more.sinks] == ["webhook", "sql"]
    assert more.sinks[1].table == "scan_labels"  # type: ignore[union-attr]
    assert more.source.durable == "sluice" and more.batching.max_events == 16  # type: ignore[union-attr]
    assert more.params == {"threshold": 0.5} and more.map.key == "message_id"


def test_flags_name_each_mistake_by_flag(tmp_path: Path) -> None:
    base = [
        "listen", "--name", "t", "--task", "classify-text", "--text", "body",
        "--sink", "amqp://h/?routing_key=o", "--dead-letter", "amqp://h/?routing_key=d",
    ]  # fmt: skip
    runner = CliRunner()
    missing_queue = runner.invoke(main, [*base, "--source", "amqp://h/"])
    assert missing_queue.exit_code == 2
    assert "--source queue: Field required" in missing_queue.stderr
    unknown = runner.invoke(main, [*base, "--source", "kafka://h/?topic=x"])
    assert "--source kafka://...: not a bus URL" in unknown.stderr
    bad_params = runner.invoke(main, [*base, "--source", "amqp://h/?queue=q", "--params", "{x"])
    assert "--params is not JSON" in bad_params.stderr
    both = runner.invoke(main, [*base[:1], str(write(tmp_path, GOOD)), "--task", "embed"])
    assert both.exit_code == 2 and "not both (--task)" in both.stderr
    none = runner.invoke(main, ["listen", "--task", "embed"])
    assert none.exit_code == 2
    assert "--name, --source, --sink, --dead-letter missing" in none.stderr
