"""The Celery side's names: queues and task names shared by senders and workers. (The AI
tasks are in the catalog, schemas/catalog.py; each modality's queue is `sluice.<modality>`.)

Fair share: each modality queue is split into SLUICE_FAIR_LANES lanes, `sluice.text` (lane 0,
the name queues always had) and `sluice.text.1` ... A job's chunks go to its tenant's lane;
workers consume every lane and kombu serves them round-robin (schemas/stack.py), so one
tenant's backlog never stands in front of another tenant's work.
"""

CONTROL_QUEUE = "sluice.control"
TRAIN_QUEUE = "sluice.train"
PROCESS_CHUNK = "sluice.process_chunk"
SWEEP = "sluice.sweep"
RETENTION = "sluice.retention"  # removes jobs whose retention has passed (erasure.py)
TRAIN_TASK = "sluice.train_model"
# The model actors alive, listed into Redis by the workers (workers/actor_census.py) for the
# console's system view: the key, how often, and how long a census stays true unrefreshed.
ACTOR_CENSUS_KEY = "sluice:actor-census"
ACTOR_CENSUS_EVERY_S = 15.0
ACTOR_CENSUS_TTL_S = 3 * ACTOR_CENSUS_EVERY_S


def lane_queue(queue: str, lane: int, lanes: int) -> str:
    """The queue a job on `lane` sends to. Taken modulo `lanes`: a job recorded when more
    lanes were configured still lands on a lane the workers consume."""
    n = lane % max(1, lanes)
    return queue if n == 0 else f"{queue}.{n}"


def lane_queues(queue: str, lanes: int) -> list[str]:
    """Every lane of a queue, lane 0 first."""
    return [lane_queue(queue, n, lanes) for n in range(max(1, lanes))]


# Callbacks have their own queue and their own thread pool (ops/callback_worker.py): a slow
# receiver must never hold a slot of the inference pool. Args: [job_id, attempts_seen].
CALLBACK_QUEUE = "sluice.callbacks"
DELIVER_CALLBACK = "sluice.deliver_callback"
