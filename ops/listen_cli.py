"""`sluice listen PIPELINES_FILE`: event pipelines on message buses, in the foreground, until
SIGTERM or Ctrl-C (in-flight events are finished first); `--status`: each pipeline's figures
from the ledger (producers/listener.py, storage/standing_jobs.py)."""

import asyncio
import json
import logging
import signal
from pathlib import Path

import click


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
            click.echo(json.dumps(pipeline_status([p.name for p in declared.pipelines]), indent=2))
            return
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        asyncio.run(_listen(declared.pipelines, drain_s))


def pipeline_status(names: list[str]) -> list[dict[str, object]]:
    from schemas.settings import Settings
    from storage.engine import make_engine, prepare_schema
    from storage.standing_jobs import pipeline_counts

    engine = make_engine(Settings().resolved_database_url())
    prepare_schema(engine)
    known = {c.pipeline: c.as_dict() for c in pipeline_counts(engine)}
    return [
        known.get(name, {"pipeline": name, "recorded": 0, "note": "never run"}) for name in names
    ]


async def _listen(pipelines: list, drain_s: float) -> None:  # type: ignore[type-arg]
    from producers.client import Client
    from producers.listener import PipelineRunner

    client = Client()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners = [PipelineRunner(p, client, drain_s=drain_s) for p in pipelines]
    click.echo(f"listening: {', '.join(p.name for p in pipelines)} (Ctrl-C stops)", err=True)
    await asyncio.gather(*(runner.run(stop) for runner in runners))
    for runner in runners:
        click.echo(json.dumps({"pipeline": runner.pipeline.name, **runner.stats.__dict__,
                               "latencies": len(runner.stats.latencies)}), err=True)  # fmt: skip
