"""`sluice listen PIPELINES_FILE`: event pipelines on message buses, in the foreground, until
SIGTERM or Ctrl-C (in-flight events are finished first); `--status`: each pipeline's figures
from the ledger (producers/listener.py, storage/standing_jobs.py)."""

import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from collections.abc import Callable

    from producers.buses.base import Sink as BusSink
    from schemas.pipelines import Pipeline, Sink
    from schemas.settings import Settings


def register_listen_command(main: click.Group) -> None:
    @main.command()
    @click.argument("pipelines_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--status", is_flag=True, help="print each pipeline's figures and exit")
    @click.option(
        "--drain-s",
        type=float,
        default=30.0,
        show_default=True,
        help="on stop, seconds to go on publishing results of events already taken",
    )
    def listen(pipelines_file: Path, status: bool, drain_s: float) -> None:
        """Consume events from RabbitMQ, NATS JetStream or MQTT, run each through its task,
        and publish its result (the file declares the pipelines: TOML or YAML)."""
        from producers.pipeline_file import load_pipelines

        declared = load_pipelines(pipelines_file)  # every mistake named, by line, before anything
        if status:
            click.echo(json.dumps(pipeline_status(declared.pipelines), indent=2))
            return
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("alembic").setLevel(logging.WARNING)
        failed = asyncio.run(_listen(declared.pipelines, drain_s))
        if failed:  # a pipeline stopped by an error (logged above): a supervisor restarts it
            raise SystemExit(1)


def pipeline_status(pipelines: "list[Pipeline]") -> list[dict[str, object]]:
    """Each pipeline's figures from the ledger, and the backlog its bus holds for it."""
    from schemas.settings import Settings
    from storage.engine import make_engine, prepare_schema
    from storage.standing_jobs import pipeline_counts

    engine = make_engine(Settings().resolved_database_url())
    prepare_schema(engine)
    known = {c.pipeline: c.as_dict() for c in pipeline_counts(engine)}
    out: list[dict[str, object]] = []
    for pipeline in pipelines:
        figures = known.get(pipeline.name, {"pipeline": pipeline.name, "note": "never run"})
        out.append({**figures, "waiting_on_bus": asyncio.run(backlog(pipeline))})
    return out


async def backlog(pipeline: "Pipeline") -> int | str | None:
    """Messages waiting on the source (RabbitMQ's queue, the NATS consumer's pending and
    unacknowledged); None for MQTT, which does not say; the error when the bus is away."""
    from producers.buses.factory import source_for
    from schemas.pipelines import MqttSource

    if isinstance(pipeline.source, MqttSource):  # connecting would take the listener's session
        return None
    source = source_for(pipeline.source, pipeline.batching)
    try:
        await source.connect()
        return await source.pending()
    except Exception as exc:
        return f"unknown: {exc}"
    finally:
        await source.close()


def sinks_for(settings: "Settings") -> "Callable[[Sink], BusSink]":
    """Every sink kind: webhooks by the workers' egress guard, the rest by the listener."""
    from ops.webhook_sink import WebhookSink
    from producers.buses.factory import sink_for
    from schemas.pipelines import WebhookSink as WebhookConf

    def make(conf: "Sink") -> "BusSink":
        return WebhookSink(conf, settings) if isinstance(conf, WebhookConf) else sink_for(conf)

    return make


async def _listen(pipelines: "list[Pipeline]", drain_s: float) -> bool:
    """Run every pipeline until stopped; True when one was stopped by an error."""
    from producers.client import Client
    from producers.listener import PipelineRunner

    client = Client()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners = [
        PipelineRunner(p, client, drain_s=drain_s, make_sink=sinks_for(client.settings))
        for p in pipelines
    ]
    click.echo(f"listening: {', '.join(p.name for p in pipelines)} (Ctrl-C stops)", err=True)
    await asyncio.gather(*(runner.run(stop) for runner in runners))
    for runner in runners:
        click.echo(
            json.dumps({"pipeline": runner.pipeline.name, **runner.stats.summary()}), err=True
        )
    return any(runner.failed is not None for runner in runners)
