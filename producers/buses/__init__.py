"""Message buses an event pipeline reads from and publishes to (issue 24): one module per bus,
each a Source and a Sink of producers/buses/base.py. Kafka is not here (it cannot run on the
development machines): a Kafka source would implement the same two interfaces."""
