"""The Source or Sink a pipeline's declaration names (schemas/pipelines.py)."""

from producers.buses.base import Sink, Source
from producers.buses.jetstream import NatsSink, NatsSource
from producers.buses.mqtt import MqttSink, MqttSource
from producers.buses.rabbitmq import RabbitSink, RabbitSource
from producers.buses.sql_table import SqlSink
from schemas import pipelines as p
from schemas.errors import SluiceError


def source_for(conf: p.Source, batching: p.Batching) -> Source:
    window = min(batching.max_in_flight, max(batching.max_events * 2, 64))
    if isinstance(conf, p.RabbitSource):
        return RabbitSource(conf, prefetch=window)
    if isinstance(conf, p.NatsSource):
        return NatsSource(conf, batch=batching.max_events)
    return MqttSource(conf)


def sink_for(conf: p.Sink) -> Sink:
    """A bus or table sink; a webhook is sent by the workers' egress guard, so `sluice listen`
    (ops/, the composition root) makes those (PipelineRunner's `make_sink`)."""
    if isinstance(conf, p.RabbitSink):
        return RabbitSink(conf)
    if isinstance(conf, p.NatsSink):
        return NatsSink(conf)
    if isinstance(conf, p.MqttSink):
        return MqttSink(conf)
    if isinstance(conf, p.SqlSink):
        return SqlSink(conf)
    raise SluiceError(f"a {conf.kind} sink is made by `sluice listen`, not here")
