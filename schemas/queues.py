"""The Celery side's names: queues and task names shared by senders and workers. (The AI
tasks are in the catalog, schemas/catalog.py; each modality's queue is `sluice.<modality>`.)"""

CONTROL_QUEUE = "sluice.control"
TRAIN_QUEUE = "sluice.train"
PROCESS_CHUNK = "sluice.process_chunk"
SWEEP = "sluice.sweep"
TRAIN_TASK = "sluice.train_model"
