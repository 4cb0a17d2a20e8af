"""`sluice listen PIPELINES_FILE`: event pipelines on message buses, in the foreground, until
SIGTERM or Ctrl-C (in-flight events are finished first); `--status`: each pipeline's figures
from the ledger (producers/listener.py, storage/standing_jobs.py)."""

import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from collections.abc import Callable

    from producers.buses.base import Sink as BusSink
    from schemas.pipelines import Pipeline, PipelinesFile, Sink
    from schemas.settings import Settings


SOURCE_HELP = (
    "amqp://...?queue=Q | nats://...?stream=S&subject=X&durable=D | mqtt://...?topic=T&client_id=C"
)
SINK_HELP = (
    "a bus URL as --source takes (routing_key=, subject=, topic=), an https:// webhook, or a "
    "database URL with ?table=NAME; repeat for more sinks"
)


def register_listen_command(main: click.Group) -> None:
    @main.command()
    @click.argument(
        "pipelines_file",
        required=False,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
    )
    @click.option("--status", is_flag=True, help="print each pipeline's figures and exit")
    @click.option(
        "--drain-s",
        type=float,
        default=30.0,
        show_default=True,
        help="on stop, seconds to go on publishing results of events already taken",
    )
    @click.option("--name", help="one pipeline by flags (no file): its name")
    @click.option("--task", help="the task (e.g. zero-shot-text)")
    @click.option("--source", help=SOURCE_HELP)
    @click.option("--sink", "sinks", multiple=True, help=SINK_HELP)
    @click.option("--dead-letter", help="where unreadable messages go: a sink URL")
    @click.option("--key", default=None, help="JSON path of the event's key (default: message id)")
    @click.option("--text", default=None, help="JSON path of the text")
    @click.option("--media", default=None, help="JSON path of the media reference")
    @click.option("--record", default=None, help="JSON path of the record (an object)")
    @click.option("--tenant", default=None)
    @click.option("--model", default=None)
    @click.option("--explain", default=None, help="none | all | sample:RATE | low-confidence:T")
    @click.option(
        "--params", default=None, help='the task\'s parameters as JSON: {"labels": [...]}'
    )
    @click.option("--max-events", type=int, default=None, help="events in one chunk at most")
    @click.option("--max-wait-ms", type=float, default=None, help="a chunk waits this at most")
    @click.option("--max-in-flight", type=int, default=None, help="pause above this many")
    def listen(pipelines_file: Path | None, status: bool, drain_s: float, **flags: Any) -> None:
        """Consume events from RabbitMQ, NATS JetStream or MQTT, run each through its task,
        and publish its result: the pipelines a file declares (TOML or YAML), or one by flags
        (--name, --task, --source, --sink, --dead-letter, --text or --media or --record)."""
        declared = _declared(pipelines_file, flags)  # every mistake named before anything runs
        if status:
            click.echo(json.dumps(pipeline_status(declared.pipelines), indent=2))
            return
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("alembic").setLevel(logging.WARNING)
        failed = asyncio.run(_listen(declared.pipelines, drain_s))
        if failed:  # a pipeline stopped by an error (logged above): a supervisor restarts it
            raise SystemExit(1)


def _declared(pipelines_file: Path | None, flags: dict[str, Any]) -> "PipelinesFile":
    from producers.pipeline_file import load_pipelines
    from producers.pipeline_flags import pipeline_from_flags

    given = sorted(k for k, v in flags.items() if v not in (None, ()))
    if pipelines_file is not None:
        if given:
            raise click.UsageError(
                f"a pipelines file, or flags for one pipeline, not both (--{given[0]})"
            )
        return load_pipelines(pipelines_file)
    needed = [f for f in ("name", "task", "source", "sinks", "dead_letter") if not flags[f]]
    if needed:
        shown = ", ".join("--" + ("sink" if f == "sinks" else f.replace("_", "-")) for f in needed)
        raise click.UsageError(f"give a pipelines file, or one pipeline by flags: {shown} missing")
    return pipeline_from_flags(
        name=flags["name"],
        task=flags["task"],
        source=flags["source"],
        sinks=list(flags["sinks"]),
        dead_letter=flags["dead_letter"],
        mapping={k: flags[k] for k in ("key", "text", "media", "record")},
        tenant=flags["tenant"],
        model=flags["model"],
        explain=flags["explain"],
        params=flags["params"],
        batching={k: flags[k] for k in ("max_events", "max_wait_ms", "max_in_flight")},
    )


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
